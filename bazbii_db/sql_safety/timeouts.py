"""Timeouts a migration file sets for its own statements.

The runner runs every DDL statement with ``lock_timeout`` (default :data:`RUNNER_LOCK_TIMEOUT_MS`)
and ``statement_timeout`` set, and retries on lock timeouts. A file may lower ``lock_timeout``,
never disable it, reset it to the server default (often 0, i.e. wait forever) or raise it above
the runner's default: a DDL statement queued behind a long transaction makes every reader queue
behind it for as long as ``lock_timeout`` allows. ``statement_timeout`` may be raised (a long
``CREATE INDEX CONCURRENTLY``) but not disabled or reset. The same rules apply to
``set_config('lock_timeout', ...)``.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import VariableSetKind

from .facts import Context
from .findings import ERROR, WARNING
from .parsing import Statement, integer_constant, names, string_constant, walk

RUNNER_LOCK_TIMEOUT_MS = 500
TIMEOUT_SETTINGS = ("lock_timeout", "statement_timeout")
# PostgreSQL's time units for GUCs (guc.c); a bare number is milliseconds for these settings.
_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_LEAVE_IT = "leave timeouts to the runner (--lock-timeout-ms / --statement-timeout-ms)"


def duration_ms(value: str | int) -> float | None:
    """A timeout setting's value in milliseconds (``'500ms'``, ``'2s'``, ``0``), or None if unreadable."""
    if isinstance(value, int):
        return float(value)
    text = value.strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = text[len(number):].strip() or "ms"
    try:
        return float(number) * _UNIT_MS[unit]
    except (ValueError, KeyError):
        return None


def judge_timeout(ctx: Context, stmt: Statement, setting: str, value, how: str) -> None:
    """``value``: a str/int, ``None`` for a reset to the server default, or ``...`` when not a constant."""
    if value is ...:
        ctx.cannot_judge(stmt, f"{how} {setting} to a value computed at run time")
        return
    if value is None:
        ctx.add(stmt, "timeout-reset", ERROR,
                f"{how} {setting} resets it to the server default (often 0: no timeout) for the rest of the step",
                _LEAVE_IT)
        return
    ms = duration_ms(value)
    if ms is None:
        ctx.cannot_judge(stmt, f"{how} {setting} = {value!r} (not a duration)")
    elif ms <= 0:
        ctx.add(stmt, "timeout-disabled", ERROR,
                f"{how} {setting} = 0 disables the timeout that protects other sessions", _LEAVE_IT)
    elif setting == "lock_timeout" and ms > RUNNER_LOCK_TIMEOUT_MS:
        ctx.add(stmt, "lock-timeout-raised", ERROR,
                f"{how} lock_timeout = {value!r} raises it above the runner's {RUNNER_LOCK_TIMEOUT_MS}ms: every "
                "reader may queue behind a blocked DDL statement that long",
                f"keep lock_timeout <= {RUNNER_LOCK_TIMEOUT_MS}ms; the runner retries lock timeouts with backoff")
    elif setting == "lock_timeout":
        ctx.lock_timeout_set = True
    else:
        ctx.statement_timeout_set = True


def check_set(ctx: Context, stmt: Statement, node: ast.VariableSetStmt) -> None:
    name = (node.name or "").lower()
    if node.kind == VariableSetKind.VAR_RESET_ALL:
        for setting in TIMEOUT_SETTINGS:
            judge_timeout(ctx, stmt, setting, None, "RESET ALL")
        return
    if name not in TIMEOUT_SETTINGS:
        return
    if node.kind in (VariableSetKind.VAR_RESET, VariableSetKind.VAR_SET_DEFAULT):
        judge_timeout(ctx, stmt, name, None, "RESET" if node.kind == VariableSetKind.VAR_RESET else "SET ... DEFAULT")
    elif node.kind == VariableSetKind.VAR_SET_VALUE and node.args and len(node.args) == 1:
        arg = node.args[0]
        value = integer_constant(arg)
        judge_timeout(ctx, stmt, name, value if value is not None else (string_constant(arg) or ...), "SET")
    else:
        ctx.cannot_judge(stmt, f"SET {name} in this form")


def check_set_config_calls(ctx: Context, stmt: Statement, node) -> None:
    """``set_config('lock_timeout', ...)`` anywhere in a statement (a SELECT, a DO block's PERFORM)."""
    for call in walk(node):
        if not isinstance(call, ast.FuncCall) or [n.lower() for n in names(call.funcname)][-1:] != ["set_config"]:
            continue
        args = list(call.args or ())
        setting = string_constant(args[0]) if args else None
        if setting is None:
            ctx.cannot_judge(stmt, "set_config() of a setting named at run time")
        elif setting.lower() in TIMEOUT_SETTINGS:
            value = string_constant(args[1]) if len(args) > 1 else None
            judge_timeout(ctx, stmt, setting.lower(), value if value is not None else ..., "set_config()")


LOCK_TAKING = (
    ast.AlterTableStmt, ast.IndexStmt, ast.DropStmt, ast.RenameStmt, ast.CreateTrigStmt,
    ast.TruncateStmt, ast.LockStmt, ast.ReindexStmt, ast.ClusterStmt, ast.VacuumStmt,
    ast.UpdateStmt, ast.DeleteStmt, ast.InsertStmt, ast.AlterEnumStmt, ast.AlterDomainStmt,
    ast.AlterObjectSchemaStmt, ast.RefreshMatViewStmt,
)


def check_required_timeouts(ctx: Context, stmt: Statement) -> None:
    """Raw SQL (not run by the runner) must set lock_timeout before its first lock-taking statement."""
    if ctx.runner_sets_timeouts or not isinstance(stmt.node, LOCK_TAKING):
        return
    if not ctx.lock_timeout_set:
        ctx.add(stmt, "require-lock-timeout", ERROR,
                "lock-taking statement without a preceding SET lock_timeout: if it queues behind a "
                "long transaction, every reader queues behind it",
                "SET lock_timeout = '500ms' before it and retry on SQLSTATE 55P03, or run the file "
                "through the migration runner, which does both")
        ctx.lock_timeout_set = True  # report once per file
    if not ctx.statement_timeout_set and not ctx.warned_statement_timeout:
        ctx.add(stmt, "require-statement-timeout", WARNING,
                "no SET statement_timeout before a potentially slow statement",
                "SET statement_timeout, or run the file through the migration runner")
        ctx.warned_statement_timeout = True
