"""Safety analysis of migration SQL, shared by the migration runner and the policy pack.

Two analysers are combined:

* **pglast** parses the SQL with the real PostgreSQL grammar (libpg_query). The rules that
  decide whether a statement may run at all are written against its parse tree, so they know
  about the migration *stage* (expand / migrate / contract) and about what earlier statements
  in the same file, or earlier stages of the same migration, already did (a table created a
  few lines up, a CHECK constraint validated in the migrate stage, ...).
* **squawk** (``squawk --reporter json``, offline) adds its wider catalogue of lints. Findings
  that duplicate a pglast rule, or that do not apply to files run by our runner (for example
  "missing transaction": the runner deliberately runs every statement in autocommit), are
  excluded; the rest are reported as warnings. squawk's line numbers are 0-based and are
  converted to 1-based here.

Timeouts: files are normally executed by :mod:`bazbii_db.migrations`, whose runner sets
``lock_timeout`` and ``statement_timeout`` on every DDL connection. ``analyse_sql`` therefore
defaults to ``runner_sets_timeouts=True``. A caller analysing SQL that will be run some other
way (psql, another tool) passes ``runner_sets_timeouts=False`` and then a lock-taking statement
that is not preceded by ``SET lock_timeout`` is an error (and a missing ``statement_timeout`` a
warning). A file that sets ``lock_timeout``/``statement_timeout`` to 0 (disabled) is always an
error, because it would undo the runner's protection for the rest of the step.

No regular expressions are used on SQL: every decision comes from a parse tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from pglast import ast, parse_sql
from pglast.enums.parsenodes import AlterTableType, ConstrType, ObjectType
from pglast.enums.primnodes import NullTestType
from pglast.parser import ParseError, scan

STAGES = ("expand", "migrate", "contract")
ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    file: str
    line: int  # 1-based
    severity: str  # "error" | "warning"
    fix: str

    def format(self) -> str:
        text = f"{self.file}:{self.line}: {self.severity}[{self.rule}]: {self.message}"
        if self.fix:
            text += f"\n    fix: {self.fix}"
        return text


class SqlSafetyError(Exception):
    """Raised by callers (the runner) when analysis found errors; nothing has run."""

    def __init__(self, findings: list[Finding]):
        self.findings = [f for f in findings if f.severity == ERROR]
        lines = [f.format() for f in self.findings]
        super().__init__("unsafe migration SQL, nothing was run:\n" + "\n".join(lines))


def format_findings(findings: Iterable[Finding]) -> str:
    return "\n".join(f.format() for f in findings)


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)


# --------------------------------------------------------------------------------------
# Statement splitting (also used by the runner to execute one statement at a time)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Statement:
    index: int  # 0-based position in the file
    text: str  # the statement's own text, without the trailing semicolon
    line: int  # 1-based line of its first token
    node: ast.Node = field(compare=False, repr=False)

    @property
    def kind(self) -> str:
        return type(self.node).__name__


def _line_of(sql: str, offset: int) -> int:
    return sql.count("\n", 0, max(0, offset)) + 1


def split_statements(sql: str) -> list[Statement]:
    """Parse ``sql`` and return its statements with 1-based line numbers.

    Raises :class:`pglast.parser.ParseError` on a syntax error.
    """
    raw = parse_sql(sql)
    # Token starts let us place each statement on its first real token, skipping any
    # comments or blank lines that a parser version may include in stmt_location.
    token_starts = [tok.start for tok in scan(sql) if tok.name not in ("SQL_COMMENT", "C_COMMENT")]
    out: list[Statement] = []
    ti = 0
    for i, rs in enumerate(raw):
        start = rs.stmt_location or 0
        length = rs.stmt_len or (len(sql) - start)
        while ti < len(token_starts) and token_starts[ti] < start:
            ti += 1
        first = token_starts[ti] if ti < len(token_starts) else start
        text = sql[first:start + length].strip().rstrip(";").strip()
        out.append(Statement(index=i, text=text, line=_line_of(sql, first), node=rs.stmt))
    return out


# --------------------------------------------------------------------------------------
# Helpers over the parse tree
# --------------------------------------------------------------------------------------
def _walk(node) -> Iterator[ast.Node]:
    if isinstance(node, ast.Node):
        yield node
        for name in type(node).__slots__:
            yield from _walk(getattr(node, name, None))
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item)


def _relkey(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return ""
    return rv.relname.lower()


def _relname(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else rv.relname


def _names(seq) -> list[str]:
    return [s.sval for s in (seq or ()) if isinstance(s, ast.String)]


# Functions that are STABLE or IMMUTABLE in PostgreSQL 15: a DEFAULT built only from these
# (and constants, casts, operators) is evaluated once by ADD COLUMN, with no table rewrite.
# Anything else is treated as volatile (fail closed): random(), gen_random_uuid(),
# clock_timestamp(), nextval(), timeofday(), user-defined functions, ...
NON_VOLATILE_FUNCTIONS = frozenset({
    "now", "transaction_timestamp", "statement_timestamp", "current_setting",
    "lower", "upper", "btrim", "ltrim", "rtrim", "trim", "concat", "concat_ws", "length", "substr",
    "substring", "replace", "md5", "coalesce", "nullif", "greatest", "least", "abs", "round",
    "to_jsonb", "to_json", "jsonb_build_object", "json_build_object", "jsonb_build_array",
    "json_build_array", "array_length", "make_interval", "make_date", "make_timestamp",
    "make_timestamptz", "to_timestamp", "to_date", "to_char", "date_trunc", "timezone",
})
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
LOCK_TAKING = (
    ast.AlterTableStmt, ast.IndexStmt, ast.DropStmt, ast.RenameStmt, ast.CreateTrigStmt,
    ast.TruncateStmt, ast.LockStmt, ast.ReindexStmt, ast.ClusterStmt, ast.VacuumStmt,
    ast.UpdateStmt, ast.DeleteStmt, ast.InsertStmt, ast.CreateStmt, ast.AlterEnumStmt,
)


def _volatile_calls(expr) -> list[str]:
    found = []
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall):
            name = _names(node.funcname)[-1].lower() if node.funcname else "?"
            if name not in NON_VOLATILE_FUNCTIONS:
                found.append(name)
    return found


def _not_null_check_column(con: ast.Constraint) -> str | None:
    """The column of a ``CHECK (col IS NOT NULL)`` constraint, else None."""
    expr = con.raw_expr
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == NullTestType.IS_NOT_NULL \
            and isinstance(expr.arg, ast.ColumnRef):
        names = _names(expr.arg.fields)
        if len(names) == 1:
            return names[0].lower()
    return None


def _set_value_disables_timeout(stmt: ast.VariableSetStmt) -> bool:
    for arg in stmt.args or ():
        if isinstance(arg, ast.A_Const):
            val = arg.val
            if isinstance(val, ast.Integer) and val.ival == 0:
                return True
            if isinstance(val, ast.String) and val.sval.strip() in ("0", "0ms", "0s", "0min"):
                return True
    return False


# --------------------------------------------------------------------------------------
# The pglast rule engine
# --------------------------------------------------------------------------------------
@dataclass
class _State:
    stage: str
    filename: str
    runner_sets_timeouts: bool
    findings: list[Finding] = field(default_factory=list)
    new_tables: set[str] = field(default_factory=set)
    new_columns: set[tuple[str, str]] = field(default_factory=set)
    # constraint name -> (table, column) for CHECK (col IS NOT NULL) constraints
    nn_checks: dict[str, tuple[str, str]] = field(default_factory=dict)
    validated: set[tuple[str, str]] = field(default_factory=set)
    lock_timeout_set: bool = False
    statement_timeout_set: bool = False
    warned_statement_timeout: bool = False

    def add(self, stmt: Statement, rule: str, severity: str, message: str, fix: str) -> None:
        self.findings.append(Finding(rule=rule, message=message, file=self.filename, line=stmt.line,
                                     severity=severity, fix=fix))


def _destructive(st: _State, stmt: Statement, what: str, fix: str) -> None:
    if st.stage != "contract":
        st.add(stmt, "destructive-ddl-outside-contract", ERROR,
               f"{what} in the {st.stage} stage: old application versions still use it while "
               f"{st.stage} runs; destructive changes belong in contract.sql",
               fix)


def _check_alter_table(st: _State, stmt: Statement, node: ast.AlterTableStmt) -> None:
    table = _relkey(node.relation)
    shown = _relname(node.relation)
    is_new = table in st.new_tables
    for cmd in node.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd):
            continue
        sub = cmd.subtype
        if sub == AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            _check_add_column(st, stmt, table, shown, cmd.def_, is_new)
        elif sub == AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            _check_add_constraint(st, stmt, table, shown, cmd.def_, is_new)
        elif sub == AlterTableType.AT_ValidateConstraint:
            key = (cmd.name or "").lower()
            if key in st.nn_checks:
                st.validated.add(st.nn_checks[key])
        elif sub == AlterTableType.AT_AlterColumnType and not is_new:
            st.add(stmt, "changing-column-type", ERROR,
                   f"ALTER COLUMN {cmd.name} TYPE on {shown} takes an ACCESS EXCLUSIVE lock and may "
                   "rewrite the whole table and its indexes",
                   "add a new column of the new type in expand, backfill it with [[backfill]] in "
                   "migrate (optionally a [dual_write] trigger), and drop the old column in contract")
        elif sub == AlterTableType.AT_SetNotNull and not is_new:
            col = (cmd.name or "").lower()
            if (table, col) not in st.validated and (table, col) not in st.new_columns:
                st.add(stmt, "set-not-null-without-validated-check", ERROR,
                       f"SET NOT NULL on {shown}.{cmd.name} scans the whole table under an ACCESS "
                       "EXCLUSIVE lock unless a validated CHECK ({col} IS NOT NULL) exists",
                       f"first ADD CONSTRAINT ... CHECK ({cmd.name} IS NOT NULL) NOT VALID, then "
                       "VALIDATE CONSTRAINT in a separate statement, then SET NOT NULL, then drop the CHECK")
        elif sub == AlterTableType.AT_DropColumn:
            _destructive(st, stmt, f"DROP COLUMN {cmd.name} on {shown}",
                         "stop using the column in the application (ignore it), deploy, then drop it "
                         "in the contract stage")
        elif sub in (AlterTableType.AT_SetTableSpace, AlterTableType.AT_SetLogged,
                     AlterTableType.AT_SetUnLogged) and not is_new:
            st.add(stmt, "table-rewrite", ERROR,
                   f"this ALTER TABLE on {shown} rewrites the table under an ACCESS EXCLUSIVE lock",
                   "create a new table and copy in batches instead")


def _check_add_column(st: _State, stmt: Statement, table: str, shown: str, col: ast.ColumnDef,
                      is_new: bool) -> None:
    colname = (col.colname or "").lower()
    st.new_columns.add((table, colname))
    if is_new:
        return
    type_names = [n.lower() for n in _names(col.typeName.names if col.typeName else ())]
    if type_names and type_names[-1] in SERIAL_TYPES:
        st.add(stmt, "adding-column-rewrite", ERROR,
               f"ADD COLUMN {col.colname} {type_names[-1]} on {shown} fills every row from a sequence "
               "and rewrites the table under an ACCESS EXCLUSIVE lock",
               "add a nullable column, backfill it in batches, then attach the default")
    has_default = False
    not_null = False
    for con in col.constraints or ():
        if not isinstance(con, ast.Constraint):
            continue
        if con.contype == ConstrType.CONSTR_DEFAULT:
            has_default = True
            volatile = _volatile_calls(con.raw_expr)
            if volatile:
                st.add(stmt, "adding-field-with-volatile-default", ERROR,
                       f"ADD COLUMN {col.colname} on {shown} with a volatile DEFAULT "
                       f"({', '.join(sorted(set(volatile)))}()) rewrites the whole table under an "
                       "ACCESS EXCLUSIVE lock",
                       "add the column without a default (or with a constant one), backfill it with "
                       "[[backfill]] in the migrate stage, then SET DEFAULT")
        elif con.contype in (ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED):
            st.add(stmt, "adding-column-rewrite", ERROR,
                   f"ADD COLUMN {col.colname} on {shown} as an identity/generated column rewrites the "
                   "table under an ACCESS EXCLUSIVE lock",
                   "add a plain nullable column and backfill it in batches")
        elif con.contype == ConstrType.CONSTR_NOTNULL:
            not_null = True
        elif con.contype == ConstrType.CONSTR_FOREIGN:
            st.add(stmt, "constraint-missing-not-valid", ERROR,
                   f"inline REFERENCES on new column {col.colname} of {shown} is validated immediately",
                   "add the column first, then ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then "
                   "VALIDATE CONSTRAINT in a separate statement")
        elif con.contype == ConstrType.CONSTR_CHECK:
            st.add(stmt, "constraint-missing-not-valid", ERROR,
                   f"inline CHECK on new column {col.colname} of {shown} scans the table under an "
                   "ACCESS EXCLUSIVE lock",
                   "add the column, then ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE")
        elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
            st.add(stmt, "disallowed-unique-constraint", ERROR,
                   f"inline UNIQUE/PRIMARY KEY on new column {col.colname} of {shown} builds an index "
                   "while holding an ACCESS EXCLUSIVE lock",
                   "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX")
    if not_null and not has_default:
        st.add(stmt, "adding-required-field", ERROR,
               f"ADD COLUMN {col.colname} NOT NULL without a default on {shown} fails on a non-empty "
               "table and breaks inserts from the running application",
               "add it nullable, backfill, then make it NOT NULL through a validated CHECK in contract")


def _check_add_constraint(st: _State, stmt: Statement, table: str, shown: str, con: ast.Constraint,
                          is_new: bool) -> None:
    name = (con.conname or "").lower()
    if con.contype == ConstrType.CONSTR_CHECK:
        column = _not_null_check_column(con)
        if column and name:
            st.nn_checks[name] = (table, column)
            if not con.skip_validation:
                st.validated.add((table, column))
    if is_new:
        return
    if con.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and not con.skip_validation:
        kind = "FOREIGN KEY" if con.contype == ConstrType.CONSTR_FOREIGN else "CHECK"
        st.add(stmt, "constraint-missing-not-valid", ERROR,
               f"ADD CONSTRAINT {con.conname or ''} {kind} on {shown} without NOT VALID scans the whole "
               "table while blocking writes",
               f"add it with NOT VALID, then ALTER TABLE {shown} VALIDATE CONSTRAINT ... in a separate "
               "statement (VALIDATE only takes SHARE UPDATE EXCLUSIVE)")
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_EXCLUSION) \
            and not con.indexname:
        st.add(stmt, "disallowed-unique-constraint", ERROR,
               f"ADD CONSTRAINT {con.conname or ''} on {shown} builds its index under an ACCESS EXCLUSIVE lock",
               "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX")


def _check_statement(st: _State, stmt: Statement) -> None:
    node = stmt.node
    if isinstance(node, ast.VariableSetStmt):
        name = (node.name or "").lower()
        if name in ("lock_timeout", "statement_timeout"):
            if _set_value_disables_timeout(node):
                st.add(stmt, "timeout-disabled", ERROR,
                       f"SET {name} = 0 disables the timeout that protects other sessions",
                       "leave timeouts to the runner (--lock-timeout-ms / --statement-timeout-ms)")
            elif name == "lock_timeout":
                st.lock_timeout_set = True
            else:
                st.statement_timeout_set = True
        return

    if isinstance(node, LOCK_TAKING) and not st.runner_sets_timeouts and not isinstance(node, ast.CreateStmt):
        if not st.lock_timeout_set:
            st.add(stmt, "require-lock-timeout", ERROR,
                   "lock-taking statement without a preceding SET lock_timeout: if it queues behind a "
                   "long transaction, every reader queues behind it",
                   "SET lock_timeout = '500ms' before it and retry on SQLSTATE 55P03, or run the file "
                   "through the migration runner, which does both")
            st.lock_timeout_set = True  # report once per file
        if not st.statement_timeout_set and not st.warned_statement_timeout:
            st.add(stmt, "require-statement-timeout", WARNING,
                   "no SET statement_timeout before a potentially slow statement",
                   "SET statement_timeout, or run the file through the migration runner")
            st.warned_statement_timeout = True

    if isinstance(node, ast.TransactionStmt):
        st.add(stmt, "transaction-control-in-migration", ERROR,
               "BEGIN/COMMIT/ROLLBACK in a migration file: the runner runs every statement on its own "
               "in autocommit (CREATE INDEX CONCURRENTLY cannot run in a transaction, and a long "
               "transaction holds its locks until the end)",
               "remove the transaction control statements")
    elif isinstance(node, ast.CreateStmt):
        st.new_tables.add(_relkey(node.relation))
        for elt in node.tableElts or ():
            if isinstance(elt, ast.Constraint) and elt.contype == ConstrType.CONSTR_CHECK:
                column = _not_null_check_column(elt)
                if column:
                    st.validated.add((_relkey(node.relation), column))
    elif isinstance(node, ast.CreateTableAsStmt):
        if node.into and node.into.rel:
            st.new_tables.add(_relkey(node.into.rel))
    elif isinstance(node, ast.IndexStmt):
        table = _relkey(node.relation)
        if not node.concurrent and table not in st.new_tables:
            st.add(stmt, "require-concurrent-index-creation", ERROR,
                   f"CREATE INDEX on existing table {_relname(node.relation)} without CONCURRENTLY "
                   "blocks every write to the table until the build finishes",
                   "use CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ... (the runner runs it outside "
                   "a transaction and repairs an INVALID index left by a failed build)")
        if node.concurrent and not node.idxname:
            st.add(stmt, "concurrent-index-needs-name", ERROR,
                   "CREATE INDEX CONCURRENTLY without an index name: a failed build leaves an INVALID "
                   "index the runner cannot identify to drop and rebuild",
                   "name the index explicitly")
    elif isinstance(node, ast.AlterTableStmt):
        if node.objtype == ObjectType.OBJECT_TABLE:
            _check_alter_table(st, stmt, node)
    elif isinstance(node, ast.RenameStmt):
        if node.renameType == ObjectType.OBJECT_COLUMN:
            _destructive(st, stmt, f"RENAME COLUMN {node.subname} on {_relname(node.relation)}",
                         "rename in five steps: add the new column (expand), write both (dual_write), "
                         "backfill (migrate), switch the application, drop the old column (contract)")
        elif node.renameType == ObjectType.OBJECT_TABLE:
            _destructive(st, stmt, f"RENAME TABLE {_relname(node.relation)}",
                         "create the new table, copy and dual-write, switch the application, then drop "
                         "the old table in contract")
    elif isinstance(node, ast.DropStmt):
        if node.removeType == ObjectType.OBJECT_TABLE:
            names = ", ".join(".".join(_names(obj)) for obj in node.objects or ())
            _destructive(st, stmt, f"DROP TABLE {names}",
                         "stop using the table in the application, deploy, then drop it in contract")
        elif node.removeType == ObjectType.OBJECT_INDEX and not node.concurrent:
            st.add(stmt, "require-concurrent-index-deletion", ERROR,
                   "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table",
                   "use DROP INDEX CONCURRENTLY IF EXISTS")
    elif isinstance(node, ast.TruncateStmt):
        _destructive(st, stmt, "TRUNCATE", "truncate only in contract, after no version uses the data")
    elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
        verb = "UPDATE" if isinstance(node, ast.UpdateStmt) else "DELETE"
        st.add(stmt, "unbatched-data-change", ERROR,
               f"a single {verb} in a migration file locks every row it touches until it finishes",
               "describe the change as a [[backfill]] in migration.toml: the runner applies it in "
               "primary-key range batches with a checkpoint and throttling")
    elif isinstance(node, ast.LockStmt):
        st.add(stmt, "explicit-lock-table", ERROR,
               "LOCK TABLE in a migration holds a lock for the whole statement sequence",
               "remove it; the runner takes no locks beyond what each statement needs")
    elif isinstance(node, ast.VacuumStmt):
        for opt in node.options or ():
            if isinstance(opt, ast.DefElem) and (opt.defname or "").lower() == "full":
                st.add(stmt, "table-rewrite", ERROR, "VACUUM FULL rewrites the table under an ACCESS "
                       "EXCLUSIVE lock", "use plain VACUUM, or pg_repack outside the migration")
    elif isinstance(node, ast.ClusterStmt):
        st.add(stmt, "table-rewrite", ERROR, "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock",
               "remove it")
    elif isinstance(node, ast.ReindexStmt):
        concurrent = any(isinstance(o, ast.DefElem) and (o.defname or "").lower() == "concurrently"
                         for o in node.params or ())
        if not concurrent:
            st.add(stmt, "require-concurrent-reindex", ERROR, "REINDEX without CONCURRENTLY blocks writes",
                   "use REINDEX ... CONCURRENTLY")


# --------------------------------------------------------------------------------------
# squawk
# --------------------------------------------------------------------------------------
# Rules that duplicate a pglast rule above (which knows about new tables and earlier
# stages) or that contradict how the runner executes files.
SQUAWK_EXCLUDED = (
    "require-concurrent-index-creation", "require-concurrent-index-deletion", "constraint-missing-not-valid",
    "adding-foreign-key-constraint", "changing-column-type", "ban-drop-column", "ban-drop-table",
    "renaming-column", "renaming-table", "adding-not-nullable-field", "adding-required-field",
    "adding-field-with-default", "require-lock-timeout", "require-statement-timeout", "prefer-robust-stmts",
    "ban-concurrent-index-creation-in-transaction", "transaction-nesting", "ban-drop-constraint",
    "disallowed-unique-constraint", "ban-uncommitted-transaction",
)
# squawk rules whose findings block the migration (the rest are advice).
SQUAWK_ERRORS = frozenset({"ban-drop-database", "ban-truncate-cascade", "adding-serial-primary-key-field",
                           "require-concurrent-partition-detach"})


def squawk_binary() -> str | None:
    override = os.environ.get("BAZBII_SQUAWK")
    if override and Path(override).exists():
        return override
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return str(beside)
    return shutil.which("squawk")


def run_squawk(sql: str, filename: str, stage: str) -> list[Finding]:
    binary = squawk_binary()
    if binary is None:
        return [Finding("squawk-unavailable", "squawk was not found; only the pglast rules ran", filename, 1,
                        WARNING, "install squawk-cli (requirements.txt) or set BAZBII_SQUAWK")]
    argv = [binary, "--reporter", "json", "--stdin-filepath", filename, "--pg-version", "15.0",
            "--exclude", ",".join(SQUAWK_EXCLUDED)]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=60)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        if proc.returncode == 0:
            return []
        return [Finding("squawk-failed", f"squawk exited {proc.returncode}: {proc.stderr.strip()[:300]}",
                        filename, 1, ERROR, "fix the SQL so squawk can parse it")]
    out = []
    for item in json.loads(proc.stdout):
        rule = item.get("rule_name") or "squawk"
        severity = ERROR if rule in SQUAWK_ERRORS else WARNING
        out.append(Finding(rule=rule, message=f"{item.get('message', '')} (squawk)", file=filename,
                           line=int(item.get("line", 0)) + 1,  # squawk's json lines are 0-based
                           severity=severity, fix=item.get("help") or ""))
    return out


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def analyse_sql(sql: str, stage: str, filename: str = "<sql>", *, runner_sets_timeouts: bool = True,
                known_validated_checks: Iterable[tuple[str, str]] = (), use_squawk: bool = True) -> list[Finding]:
    """Analyse one SQL text for the given stage; return findings sorted by line.

    ``known_validated_checks``: (table, column) pairs that already have a validated
    ``CHECK (column IS NOT NULL)`` (from an earlier stage), which make SET NOT NULL safe.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
    try:
        statements = split_statements(sql)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(sql)
        return [Finding("syntax-error", str(exc.args[0] if exc.args else exc), filename,
                        _line_of(sql, offset), ERROR, "fix the SQL syntax (PostgreSQL grammar)")]
    st = _State(stage=stage, filename=filename, runner_sets_timeouts=runner_sets_timeouts)
    st.validated.update((t.split(".")[-1].lower(), c.lower()) for t, c in known_validated_checks)
    for stmt in statements:
        _check_statement(st, stmt)
    findings = list(st.findings)
    if use_squawk and statements:
        findings.extend(run_squawk(sql, filename, stage))
    findings.sort(key=lambda f: (f.line, f.severity != ERROR, f.rule))
    return findings


def validated_checks_after(sql: str, known: Iterable[tuple[str, str]] = ()) -> set[tuple[str, str]]:
    """(table, column) pairs with a validated NOT NULL check after ``sql`` runs (for later stages)."""
    st = _State(stage="contract", filename="<sql>", runner_sets_timeouts=True)
    st.validated.update((t.split(".")[-1].lower(), c.lower()) for t, c in known)
    try:
        for stmt in split_statements(sql):
            _check_statement(st, stmt)
    except ParseError:
        pass
    return set(st.validated)


def analyse_migration_dir(path: str | os.PathLike, *, runner_sets_timeouts: bool = True,
                          use_squawk: bool = True) -> dict[str, list[Finding]]:
    """Analyse every SQL file of one migration directory, stage by stage.

    Returns ``{"expand": [...], "migrate": [...], "contract": [...]}``; file names in findings
    are the real paths. Also checks the migration's metadata (migration.toml).
    """
    from bazbii_db.migrations.spec import MigrationSpecError, load_migration  # no cycle at import time

    path = Path(path)
    result: dict[str, list[Finding]] = {stage: [] for stage in STAGES}
    try:
        migration = load_migration(path)
    except MigrationSpecError as exc:
        result["expand"].append(Finding("invalid-migration-metadata", str(exc), exc.file or str(path),
                                        exc.line or 1, ERROR, "fix migration.toml"))
        return result
    known: set[tuple[str, str]] = set()
    for stage in STAGES:
        for sql_file in migration.sql_files(stage):
            text = sql_file.read_text()
            result[stage].extend(analyse_sql(text, stage, str(sql_file), runner_sets_timeouts=runner_sets_timeouts,
                                             known_validated_checks=known, use_squawk=use_squawk))
            known = validated_checks_after(text, known)
        result[stage].extend(migration.metadata_findings(stage))
    return result
