"""Data changes a migration file makes on real data, which only the static rules can judge.

A shadow run (:mod:`.shadow`) runs the stage on an empty copy of the schema: it sees locks,
rewrites and errors, never how many rows a statement changes in production nor which ids the
running application gets. So these rules hold with or without it:

* ``UPDATE``/``DELETE``, ``INSERT ... SELECT`` from a table, and a data-modifying CTE hidden in
  any statement: one statement holds its row locks until it ends (``unbatched-data-change``;
  a ``[[backfill]]`` batches it);
* a function call that may change data (not known stable or immutable from ``pg_proc``; offline
  every function counts as volatile), and ``CALL`` (``data-change-in-function``);
* ``setval`` and ``ALTER SEQUENCE`` that moves or reshapes an existing sequence: the running
  versions get ids that collide or run out (``sequence-change``);
* ``session_replication_role`` other than ``origin``: it turns off triggers, foreign-key
  enforcement and the dual-write trigger for the rest of the step (``session-replication-role``).

Objects created earlier in the same file are exempt (nothing else uses them yet).
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import VariableSetKind

from .facts import Context
from .findings import ERROR
from .parsing import Statement, names, relname, string_constant, walk

_DATA_CHANGES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
# Volatile built-ins that change no table data (the session's settings are judged by other rules).
_NO_DATA_CHANGE = frozenset({"set_config", "pg_sleep", "nextval", "gen_random_uuid", "random", "clock_timestamp",
                             "timeofday"})
# ALTER SEQUENCE options that change which ids the running versions get.
_SEQUENCE_VALUE_OPTIONS = frozenset({"restart", "start", "as", "increment", "minvalue", "maxvalue", "cycle"})
_REPLICATION_ROLE = "session_replication_role"
_BATCH_IT = ("describe the change as a [[backfill]] in migration.toml: the runner applies it in primary-key range "
             "batches with a checkpoint and throttling")


def unbatched(ctx: Context, stmt: Statement, verb: str, what: str) -> None:
    ctx.add(stmt, "unbatched-data-change", ERROR,
            f"{verb} {what} in a migration file locks every row it touches until it finishes", _BATCH_IT)


def check_insert(ctx: Context, stmt: Statement, node: ast.InsertStmt) -> None:
    """INSERT ... VALUES (a few rows) is fine; INSERT ... SELECT from a table copies real data in one statement."""
    select = node.selectStmt
    reads = [rv for rv in walk(select) if isinstance(rv, ast.RangeVar)]
    if ctx.key(node.relation) not in ctx.new_tables and reads:
        unbatched(ctx, stmt, "INSERT ... SELECT", "from " + ", ".join(sorted({relname(rv) for rv in reads})))
    check_hidden(ctx, stmt, node)


def check_hidden(ctx: Context, stmt: Statement, node) -> None:
    """Data changes hidden in a statement: a data-modifying CTE, a function that may write, a sequence reset."""
    for inner in walk(node):
        if inner is not node and isinstance(inner, _DATA_CHANGES) and ctx.key(inner.relation) not in ctx.new_tables:
            unbatched(ctx, stmt, f"a {type(inner).__name__.removesuffix('Stmt').upper()} in a WITH clause",
                      f"on {relname(inner.relation)}")
        elif isinstance(inner, ast.FuncCall):
            _check_call(ctx, stmt, inner)


def _check_call(ctx: Context, stmt: Statement, call: ast.FuncCall) -> None:
    qualified = tuple(n.lower() for n in names(call.funcname))
    name = qualified[-1] if qualified else "?"
    builtin = qualified in ((name,), ("pg_catalog", name))
    args = list(call.args or ())
    if builtin and name == "setval":
        sequence = string_constant(args[0]) if args else None
        if sequence is None or sequence not in ctx.new_sequences:
            ctx.add(stmt, "sequence-change", ERROR,
                    f"setval({sequence or '...'}) moves a sequence the running application draws its ids from: "
                    "rows it inserts may collide with existing ids",
                    "leave existing sequences alone; a new sequence created in the same file may be set")
        return
    setting = (string_constant(args[0]) or "").lower() if builtin and name == "set_config" and args else ""
    if setting == _REPLICATION_ROLE:
        _judge_replication_role(ctx, stmt, string_constant(args[1]) if len(args) > 1 else None)
    elif setting == "search_path":
        ctx.facts.search_path_changed()
    if builtin and name in _NO_DATA_CHANGE:
        return
    if ctx.catalog.function_volatility(qualified) in ("i", "s"):
        return
    ctx.add(stmt, "data-change-in-function", ERROR,
            f"{'.'.join(qualified)}() may change data (PostgreSQL does not know it as stable or immutable: "
            "pg_proc.provolatile; unknown without a catalog connection): a data change on real data in one "
            "statement, which no shadow run on an empty copy can measure",
            "write the change as a [[backfill]]; call only stable or immutable functions from migration files")


def check_call(ctx: Context, stmt: Statement, node: ast.CallStmt) -> None:
    procedure = ".".join(names(node.funccall.funcname)) if node.funccall else "?"
    ctx.add(stmt, "data-change-in-function", ERROR,
            f"CALL {procedure}(): a procedure may change data and commit on its own, in one statement",
            "write the change as a [[backfill]], or its DDL as statements of the file")


def check_alter_sequence(ctx: Context, stmt: Statement, node: ast.AlterSeqStmt) -> None:
    changed = sorted({opt.defname for opt in node.options or () if isinstance(opt, ast.DefElem)
                      and opt.defname in _SEQUENCE_VALUE_OPTIONS})
    if changed and ctx.key(node.sequence) not in ctx.new_sequences:
        ctx.add(stmt, "sequence-change", ERROR,
                f"ALTER SEQUENCE {relname(node.sequence)} {', '.join(o.upper() for o in changed)}: changes the ids "
                "the running application gets (a restart collides with existing rows, a smaller type or maximum "
                "runs out)", "create a new sequence for new ids; leave the one in use alone")


def record_sequence(ctx: Context, stmt: Statement, node: ast.CreateSeqStmt) -> None:
    if not node.if_not_exists:
        ctx.new_sequences.add(ctx.key(node.sequence))
        ctx.new_sequences.add(relname(node.sequence))  # as setval('name') spells it


def check_replication_role(ctx: Context, stmt: Statement, node: ast.VariableSetStmt) -> None:
    if (node.name or "").lower() != _REPLICATION_ROLE or node.kind != VariableSetKind.VAR_SET_VALUE:
        return
    value = string_constant(node.args[0]) if node.args else None
    _judge_replication_role(ctx, stmt, value)


def _judge_replication_role(ctx: Context, stmt: Statement, value: str | None) -> None:
    if (value or "").lower() != "origin":
        ctx.add(stmt, "session-replication-role", ERROR,
                f"SET {_REPLICATION_ROLE} = {value or '...'} turns off triggers for the rest of the step: "
                "foreign-key enforcement and the dual-write triggers the running versions rely on",
                f"remove it (the default, {_REPLICATION_ROLE} = origin, fires every trigger)")
