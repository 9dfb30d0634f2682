"""The statement analysis: one dispatch over statement kinds and ALTER TABLE subcommands.

Fail closed: a statement kind or ALTER TABLE subcommand that no rule below knows is an error
(``cannot-judge``) in every stage, and so is SQL that does not parse.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from pglast import ast
from pglast.enums.parsenodes import AlterTableType, ConstrType, ObjectType, VariableSetKind
from pglast.parser import ParseError

from . import constraints, datachanges, dependents, locks, renames, timeouts, triggers, types
from .doblocks import check_do
from .facts import Catalog, Context, OfflineCatalog, SchemaFacts
from .findings import ERROR, Finding, check_stage
from .parsing import Statement, parse_error_position, present, shown, split_statements
from .squawk import run_squawk

AT = AlterTableType


def _alter_table(ctx: Context, stmt: Statement, node: ast.AlterTableStmt) -> None:
    table, name = ctx.key(node.relation), shown(node.relation)
    index = node.objtype == ObjectType.OBJECT_INDEX
    for cmd in node.cmds or ():
        if index and cmd.subtype == AT.AT_AttachPartition:
            continue  # ALTER INDEX ... ATTACH PARTITION: catalog only (an index built on the partition beforehand)
        handler = ALTER_TABLE_RULES.get(cmd.subtype, _unknown_subcommand)
        handler(ctx, stmt, table, name, cmd)


def _words(identifier: str) -> str:
    """``AlterSystemStmt`` -> ``ALTER SYSTEM``, ``AT_AddIdentity`` -> ``ADD IDENTITY`` (for messages)."""
    bare = identifier.removeprefix("AT_").removesuffix("Stmt")
    return "".join(f" {c}" if c.isupper() and i else c for i, c in enumerate(bare)).upper()


def _unknown_subcommand(ctx, stmt, table, name, cmd) -> None:
    if table not in ctx.new_tables:
        ctx.cannot_judge(stmt, f"ALTER TABLE {name} {_words(cmd.subtype.name)}")


def _safe(ctx, stmt, table, name, cmd) -> None:
    """Metadata-only subcommands: a brief lock, no scan, nothing an old application version relies on."""


def _add_column(ctx, stmt, table, name, cmd) -> None:
    if isinstance(cmd.def_, ast.ColumnDef):
        types.check_add_column(ctx, stmt, table, name, cmd.def_)


def _add_constraint(ctx, stmt, table, name, cmd) -> None:
    if isinstance(cmd.def_, ast.Constraint):
        constraints.check_add_constraint(ctx, stmt, table, name, cmd.def_)


def _column_default(ctx, stmt, table, name, cmd) -> None:
    if cmd.def_ is None and table not in ctx.new_tables:  # DROP DEFAULT: old inserts may rely on it
        ctx.destructive(stmt, f"ALTER COLUMN {cmd.name} DROP DEFAULT on {name}",
                        "drop the default in contract, once no running version omits the column on insert")


def _contract_only(describe: Callable[[str, ast.AlterTableCmd], str], fix: str) -> Callable:
    """A handler for a subcommand that breaks old versions: contract only (a new table is exempt)."""

    def handler(ctx, stmt, table, name, cmd) -> None:
        if table not in ctx.new_tables:
            ctx.destructive(stmt, describe(name, cmd), fix)

    return handler


_drop_column_destructive = _contract_only(lambda name, cmd: f"DROP COLUMN {cmd.name} on {name}",
                                          "stop using the column in the application (ignore it), deploy, then drop it "
                                          "in the contract stage")


def _drop_column(ctx, stmt, table, name, cmd) -> None:
    dependents.check_drop_column(ctx, stmt, table, name, cmd)
    _drop_column_destructive(ctx, stmt, table, name, cmd)


def _drop_constraint(ctx, stmt, table, name, cmd) -> None:
    dependents.check_drop_constraint_cascade(ctx, stmt, name, cmd)
    constraints.check_drop_constraint(ctx, stmt, table, name, cmd)


def _attach_partition(ctx, stmt, table, name, cmd) -> None:
    if table not in ctx.new_tables:
        ctx.needs_shadow_run(stmt, f"ALTER TABLE {name} ATTACH PARTITION (it scans the partition under an ACCESS "
                                   "EXCLUSIVE lock unless a validated CHECK implies the partition bound)")
_disable_trigger = _contract_only(lambda name, cmd: f"DISABLE TRIGGER on {name}",
                                  "a disabled trigger stops dual writes old versions rely on: drop triggers in contract")
_row_security = _contract_only(lambda name, cmd: f"{_words(present(cmd.subtype, 'subcommand').name)} on {name}",
                               "row security hides rows from old versions' roles until policies exist: enable it in "
                               "contract, after the policies")


def _rewrite(ctx, stmt, table, name, cmd) -> None:
    if table not in ctx.new_tables:
        locks.table_rewrite(ctx, stmt, f"ALTER TABLE {name} {_words(cmd.subtype.name)}")


ALTER_TABLE_RULES: dict[AlterTableType, Callable] = {
    AT.AT_AddColumn: _add_column,
    AT.AT_AddConstraint: _add_constraint,
    AT.AT_ValidateConstraint: lambda ctx, stmt, table, name, cmd: constraints.check_validate(ctx, table, cmd),
    AT.AT_SetNotNull: lambda ctx, stmt, table, name, cmd: constraints.check_set_not_null(ctx, stmt, table, name, cmd),
    AT.AT_DropConstraint: _drop_constraint,
    AT.AT_AlterColumnType: lambda ctx, stmt, table, name, cmd: types.check_alter_type(ctx, stmt, table, name, cmd),
    AT.AT_ColumnDefault: _column_default,
    AT.AT_DropColumn: _drop_column,
    AT.AT_DropNotNull: _safe,
    AT.AT_SetStatistics: _safe,
    AT.AT_SetOptions: _safe,
    AT.AT_ResetOptions: _safe,
    AT.AT_SetStorage: _safe,
    AT.AT_SetCompression: _safe,
    AT.AT_SetRelOptions: _safe,
    AT.AT_ResetRelOptions: _safe,
    AT.AT_ClusterOn: _safe,
    AT.AT_DropCluster: _safe,
    AT.AT_ChangeOwner: _safe,
    AT.AT_ReplicaIdentity: _safe,
    AT.AT_EnableTrig: _safe,
    AT.AT_EnableAlwaysTrig: _safe,
    AT.AT_EnableReplicaTrig: _safe,
    AT.AT_EnableTrigAll: _safe,
    AT.AT_EnableTrigUser: _safe,
    AT.AT_DisableRowSecurity: _safe,
    AT.AT_NoForceRowSecurity: _safe,
    AT.AT_DisableTrig: _disable_trigger,
    AT.AT_DisableTrigAll: triggers.check_disable_trigger_all,
    AT.AT_DisableTrigUser: _disable_trigger,
    AT.AT_EnableRowSecurity: _row_security,
    AT.AT_ForceRowSecurity: _row_security,
    AT.AT_SetTableSpace: lambda ctx, stmt, table, name, cmd: locks.check_set_tablespace(ctx, stmt, table, name),
    AT.AT_SetLogged: _rewrite,
    AT.AT_SetUnLogged: _rewrite,
    AT.AT_SetAccessMethod: _rewrite,
    AT.AT_DetachPartition: lambda ctx, stmt, table, name, cmd: locks.check_detach_partition(ctx, stmt, name, cmd),
    AT.AT_AttachPartition: _attach_partition,
}


def _create_table(ctx: Context, stmt: Statement, node: ast.CreateStmt) -> None:
    table = ctx.key(node.relation)
    if node.partbound is not None:
        ctx.needs_shadow_run(stmt, f"CREATE TABLE {shown(node.relation)} PARTITION OF (locks the parent; scans a "
                                   "default partition)")
    elif node.inhRelations:
        ctx.cannot_judge(stmt, f"CREATE TABLE {shown(node.relation)} INHERITS (the parent's queries return its rows)")
    if not node.if_not_exists:  # IF NOT EXISTS may leave an existing, busy table in place: no exemption
        ctx.new_tables.add(table)
    types.record_create_table(ctx, table, node)
    for elt in node.tableElts or ():
        if isinstance(elt, ast.Constraint) and elt.contype == ConstrType.CONSTR_CHECK:
            constraints.record_check(ctx, table, elt)


def _create_table_as(ctx: Context, stmt: Statement, node: ast.CreateTableAsStmt) -> None:
    datachanges.check_hidden(ctx, stmt, node.query)
    dependents.record_table_as(ctx, node)


def _data_change(ctx: Context, stmt: Statement, node) -> None:
    datachanges.check_hidden(ctx, stmt, node)
    if ctx.key(node.relation) in ctx.new_tables:
        return
    datachanges.unbatched(ctx, stmt, "a single UPDATE" if isinstance(node, ast.UpdateStmt) else "a single DELETE",
                          f"on {shown(node.relation)}")


def _select(ctx: Context, stmt: Statement, node: ast.SelectStmt) -> None:
    timeouts.check_set_config_calls(ctx, stmt, node)
    datachanges.check_hidden(ctx, stmt, node)


def _set(ctx: Context, stmt: Statement, node: ast.VariableSetStmt) -> None:
    timeouts.check_set(ctx, stmt, node)
    datachanges.check_replication_role(ctx, stmt, node)
    if (node.name or "").lower() == "search_path" or node.kind == VariableSetKind.VAR_RESET_ALL:
        ctx.facts.search_path_changed()


def _create_policy(ctx: Context, stmt: Statement, node: ast.CreatePolicyStmt) -> None:
    # A permissive policy only widens what row security lets through (and does nothing before it is enabled);
    # a restrictive one narrows what the old version's roles see and may write.
    if not node.permissive:
        ctx.destructive(stmt, f"CREATE POLICY {node.policy_name} AS RESTRICTIVE on {shown(node.table)}",
                        "add restrictive policies in contract, once no running version is affected")


def _transaction(ctx: Context, stmt: Statement, node) -> None:
    ctx.add(stmt, "transaction-control-in-migration", ERROR,
            "BEGIN/COMMIT/ROLLBACK in a migration file: the runner runs every statement on its own "
            "in autocommit (CREATE INDEX CONCURRENTLY cannot run in a transaction, and a long "
            "transaction holds its locks until the end)",
            "remove the transaction control statements")


def _drop(ctx: Context, stmt: Statement, node: ast.DropStmt) -> None:
    if node.removeType == ObjectType.OBJECT_INDEX:
        locks.check_drop_index(ctx, stmt, node)
    # Even DROP INDEX CONCURRENTLY is contract only: an old version's ON CONFLICT (col) needs the unique
    # index it names, and its queries the index they were planned with.
    dependents.check_drop(ctx, stmt, node)
    renames.check_drop(ctx, stmt, node)


def _alter_table_stmt(ctx: Context, stmt: Statement, node: ast.AlterTableStmt) -> None:
    _alter_table(ctx, stmt, node)


def _nothing(ctx: Context, stmt: Statement, node) -> None:
    """Statements that create new objects or only read: nothing in use is locked for long or changed."""


# Each rule takes a node of its key's type: a dict's type cannot tie a value to its key, hence Any for the node.
STATEMENT_RULES: dict[type[ast.Node], Callable[[Context, Statement, Any], None]] = {
    ast.VariableSetStmt: _set,
    ast.SelectStmt: _select,
    ast.TransactionStmt: _transaction,
    ast.CreateStmt: _create_table,
    ast.CreateTableAsStmt: _create_table_as,
    ast.IndexStmt: locks.check_create_index,
    ast.AlterTableStmt: _alter_table_stmt,
    ast.RenameStmt: renames.check_rename,
    ast.AlterObjectSchemaStmt: renames.check_set_schema,
    ast.AlterEnumStmt: renames.check_enum,
    ast.DropStmt: _drop,
    ast.TruncateStmt: renames.check_truncate,
    ast.GrantStmt: renames.check_revoke,
    ast.UpdateStmt: _data_change,
    ast.DeleteStmt: _data_change,
    ast.LockStmt: locks.check_lock,
    ast.VacuumStmt: locks.check_vacuum,
    ast.ClusterStmt: locks.check_cluster,
    ast.ReindexStmt: locks.check_reindex,
    ast.RefreshMatViewStmt: locks.check_refresh,
    ast.AlterDomainStmt: constraints.check_alter_domain,
    ast.DoStmt: lambda ctx, stmt, node: check_do(ctx, stmt, node, check_statement),
    ast.InsertStmt: datachanges.check_insert,
    ast.CallStmt: datachanges.check_call,
    ast.VariableShowStmt: _nothing,
    ast.CreateFunctionStmt: triggers.check_create_function,
    ast.CreateTrigStmt: triggers.check_create_trigger,
    ast.ViewStmt: dependents.check_view,
    ast.CommentStmt: _nothing,
    ast.CreateSeqStmt: datachanges.record_sequence,
    ast.AlterSeqStmt: datachanges.check_alter_sequence,
    ast.CreateEnumStmt: types.record_user_type,
    ast.CompositeTypeStmt: types.record_user_type,
    ast.CreateRangeStmt: types.record_user_type,
    ast.CreateDomainStmt: types.record_create_domain,
    ast.CreatePolicyStmt: _create_policy,
    ast.CreateSchemaStmt: _nothing,
    ast.CreateExtensionStmt: _nothing,
    ast.CreateStatsStmt: _nothing,
    ast.AlterOwnerStmt: _nothing,
}


def check_statement(ctx: Context, stmt: Statement) -> None:
    timeouts.check_required_timeouts(ctx, stmt)
    rule = STATEMENT_RULES.get(type(stmt.node))
    if rule is None:
        ctx.cannot_judge(stmt, f"{_words(stmt.kind)} statement")
    else:
        rule(ctx, stmt, stmt.node)


def _context(stage: str, filename: str, runner_sets_timeouts: bool, catalog: Catalog | None,
             known: SchemaFacts | Iterable[tuple[str, str]] | None) -> Context:
    return Context(stage=stage, filename=filename, runner_sets_timeouts=runner_sets_timeouts,
                   catalog=catalog or OfflineCatalog(), facts=SchemaFacts.of(known))


def analyse_sql(sql: str, stage: str, filename: str = "<sql>", *, runner_sets_timeouts: bool = True,
                known_validated_checks: SchemaFacts | Iterable[tuple[str, str]] = (), use_squawk: bool = True,
                catalog: Catalog | None = None) -> list[Finding]:
    """Analyse one SQL text for the given stage; return findings sorted by line.

    ``known_validated_checks``: what earlier stages established, as :class:`SchemaFacts` (from
    :func:`validated_checks_after`) or plain ``(table, column)`` pairs that have a validated
    ``CHECK (column IS NOT NULL)``. ``catalog``: a live database to ask about function volatility
    and column types (:class:`~bazbii_db.sql_safety.catalog.PgCatalog`); without one the analysis
    assumes the worst.
    """
    check_stage(stage)
    try:
        statements = split_statements(sql)
    except ParseError as exc:
        return [Finding("syntax-error", str(exc.args[0] if exc.args else exc), filename,
                        parse_error_position(sql, exc), ERROR,
                        "fix the SQL syntax (PostgreSQL grammar); SQL the analysis cannot parse never runs")]
    ctx = _context(stage, filename, runner_sets_timeouts, catalog, known_validated_checks)
    for stmt in statements:
        check_statement(ctx, stmt)
    findings = list(ctx.findings)
    if use_squawk and statements:
        findings.extend(run_squawk(sql, filename))
    findings.sort(key=lambda f: (f.line, f.severity != ERROR, f.rule))
    return findings


def validated_checks_after(sql: str, known: SchemaFacts | Iterable[tuple[str, str]] = (),
                           catalog: Catalog | None = None) -> SchemaFacts:
    """The schema facts after ``sql`` runs, for the analysis of later stages and migrations.

    Iterating the result gives the validated ``(table, column)`` NOT NULL checks; passing it back
    as ``known_validated_checks`` also carries checks added NOT VALID and column types.
    """
    ctx = _context("contract", "<sql>", True, catalog, known)
    try:
        for stmt in split_statements(sql):
            check_statement(ctx, stmt)
    except ParseError:
        pass  # the file's own analysis reports the syntax error
    return ctx.facts
