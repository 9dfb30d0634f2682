"""DO blocks: the statements inside a PL/pgSQL body are judged like statements of the file, and
the block as the one transaction it is.

The body is parsed with PostgreSQL's own PL/pgSQL parser (``pglast.parse_plpgsql``). Static SQL
statements and ``PERFORM`` are analysed; ``EXECUTE '<literal>'`` is analysed as the literal's
SQL; dynamic SQL built at run time (``EXECUTE format(...)``, ``FOR ... IN EXECUTE``, cursors over
dynamic queries), ``CALL`` and other languages cannot be judged and are refused (fail closed).

Being one transaction: a lock-taking statement followed by more statements, or in a loop, holds
its lock until the block ends (``lock-held-in-do-block``); ``CREATE INDEX CONCURRENTLY`` and the
other statements that refuse a transaction block fail (``not-in-transaction-block``); a value
added to an enum cannot be used before the block commits (``enum-value-unusable-in-transaction``).
The same parse serves trigger bodies (:func:`rejection`) and the shadow run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, TypeGuard

from pglast import ast, parse_plpgsql
from pglast.parser import ParseError

from .facts import Context
from .findings import ERROR
from .parsing import Statement, def_option, selected_expression, split_statements, string_constant, walk
from .timeouts import LOCK_TAKING

# PL/pgSQL statements that run SQL the analysis cannot see.
_UNJUDGEABLE = {
    "PLpgSQL_stmt_dynfors": "FOR ... IN EXECUTE (dynamic SQL)",
    "PLpgSQL_stmt_call": "CALL of a procedure",
}
_LOOPS = frozenset({"PLpgSQL_stmt_loop", "PLpgSQL_stmt_while", "PLpgSQL_stmt_fori", "PLpgSQL_stmt_fors",
                    "PLpgSQL_stmt_forc", "PLpgSQL_stmt_foreach_a", "PLpgSQL_stmt_dynfors"})
_NOT_A_STEP = frozenset({"PLpgSQL_stmt_block", "PLpgSQL_stmt_return"})  # structure, not work
_ERROR_LEVEL = 21  # elog.h ERROR: RAISE without a level, or RAISE EXCEPTION


def _dollar_quote(body: str) -> str:
    tag = "do_body"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}${body}${tag}$"


def _query(fields: dict, key: str) -> str | None:
    expr = fields.get(key)
    return expr.get("PLpgSQL_expr", {}).get("query") if isinstance(expr, dict) else None


def _literal_sql(expression: str) -> str | None:
    """The text of ``'...'`` when an EXECUTE's expression is one string literal."""
    return string_constant(selected_expression(expression))


def do_body(node: ast.DoStmt) -> tuple[str, str | None]:
    """The language and the body text of a DO statement (body None when it is not a string)."""
    language = def_option(node.args, "language")
    lang = getattr(language.arg, "sval", "?").lower() if language is not None else "plpgsql"
    body_opt = def_option(node.args, "as")
    return lang, getattr(body_opt.arg, "sval", None) if body_opt is not None else None


def parse_body(body: str, returns: str = "void") -> list:
    """PostgreSQL's PL/pgSQL parse tree of a function or DO body; raises ParseError."""
    return parse_plpgsql(f"CREATE FUNCTION pg_temp.bazbii_body() RETURNS {returns} LANGUAGE plpgsql AS "
                         f"{_dollar_quote(body)}")


@dataclass(frozen=True)
class Step:
    """One statement of a PL/pgSQL body, in the order it runs."""

    kind: str
    fields: dict = field(compare=False)
    line: int  # 1-based, within the body
    in_loop: bool
    sql: str | None  # the SQL it runs: static SQL, PERFORM, EXECUTE of a literal
    dynamic: bool  # runs SQL built at run time


def steps(tree) -> list[Step]:
    out: list[Step] = []

    def visit(node, in_loop: bool) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item, in_loop)
            return
        if not isinstance(node, dict):
            return
        for kind, fields in node.items():
            if kind.startswith("PLpgSQL_stmt_") and isinstance(fields, dict):
                if kind not in _NOT_A_STEP:
                    out.append(Step(kind, fields, int(fields.get("lineno", 1)), in_loop, *_sql_of(kind, fields)))
                for value in fields.values():
                    visit(value, in_loop or kind in _LOOPS)
            elif isinstance(fields, (dict, list)):
                visit(fields, in_loop)

    visit(tree, False)
    return out


def _sql_of(kind: str, fields: dict) -> tuple[str | None, bool]:
    if kind == "PLpgSQL_stmt_execsql":
        return _query(fields, "sqlstmt"), False
    if kind == "PLpgSQL_stmt_perform":
        return _query(fields, "expr"), False
    if kind == "PLpgSQL_stmt_dynexecute":
        text = _literal_sql(_query(fields, "query") or "")
        return text, text is None
    if kind in _UNJUDGEABLE or (kind in ("PLpgSQL_stmt_open", "PLpgSQL_stmt_return_query") and "dynquery" in fields):
        return None, True
    return None, False


def lock_then_more(body_steps: list[Step], takes_lock: Callable[[Step], bool]) -> str | None:
    """Where a body holds a lock while it goes on: a lock-taking statement in a loop, or followed by others.

    A DO block or a function is one transaction: a lock one of its statements takes is held until it
    ends, through every statement, loop and sleep after it.
    """
    for i, step in enumerate(body_steps):
        if not takes_lock(step):
            continue
        if step.in_loop:
            return f"the statement at line {step.line} takes its lock in a loop"
        more = len(body_steps) - i - 1
        if more:
            return f"the statement at line {step.line} is followed by {more} more statement{'s' * (more > 1)}"
    return None


def do_holds_lock_while_running_on(node: ast.DoStmt) -> str | None:
    """For a shadow run, which sees the locks a DO block holds at its end but not which statement took them."""
    lang, body = do_body(node)
    try:
        body_steps = steps(parse_body(body)) if lang == "plpgsql" and body is not None else None
    except ParseError:
        body_steps = None
    if body_steps is None:
        return f"a DO block in {lang} is one transaction"
    return lock_then_more(body_steps, lambda step: step.dynamic or _parses_to(step.sql, LOCK_TAKING))


def _parses_to(sql: str | None, kinds) -> bool:
    try:
        return any(isinstance(stmt.node, kinds) for stmt in split_statements(sql)) if sql else False
    except ParseError:
        return True


def rejection(tree, before_row: bool) -> str | None:
    """How a trigger body may reject a write: RAISE at ERROR level, ASSERT, or (BEFORE ROW) RETURN NULL."""
    for step in steps(tree):
        fields = step.fields
        if step.kind == "PLpgSQL_stmt_raise" and int(fields.get("elog_level", _ERROR_LEVEL)) >= _ERROR_LEVEL:
            message = fields.get("message")
            return f"RAISE{f' {message!r}' if message else ''} at line {step.line}"
        if step.kind == "PLpgSQL_stmt_assert":
            return f"ASSERT at line {step.line}"
        if before_row and step.kind == "PLpgSQL_stmt_return" \
                and (_query(fields, "expr") or "").strip().upper() == "NULL":
            return f"RETURN NULL at line {step.line}, which skips the row without an error"
    return None


def check_do(ctx: Context, stmt: Statement, node: ast.DoStmt,
             check_statement: Callable[[Context, Statement], None]) -> None:
    lang, body = do_body(node)
    if lang != "plpgsql":
        ctx.cannot_judge(stmt, f"a DO block in language {lang}")
        return
    if body is None:
        ctx.cannot_judge(stmt, "a DO block without a readable body")
        return
    try:
        body_steps = steps(parse_body(body))
    except ParseError as exc:
        ctx.cannot_judge(stmt, f"a DO block whose body does not parse ({exc.args[0] if exc.args else exc})")
        return
    inner: dict[Step, list[Statement]] = {}
    for step in body_steps:
        at = Statement(stmt.index, stmt.text, stmt.line + max(step.line - 1, 0), node)
        if step.kind in _UNJUDGEABLE:
            ctx.cannot_judge(at, f"DO block: {_UNJUDGEABLE[step.kind]}")
        elif step.dynamic and step.kind == "PLpgSQL_stmt_dynexecute":
            ctx.cannot_judge(at, "DO block: EXECUTE of SQL built at run time")
        elif step.dynamic:
            ctx.cannot_judge(at, "DO block: a query built at run time")
        elif step.sql:
            inner[step] = _check_inner(ctx, at, step.sql, check_statement)
    _check_one_transaction(ctx, body_steps, inner)


def _check_one_transaction(ctx: Context, body_steps: list[Step], inner: dict[Step, list[Statement]]) -> None:
    """What a DO block changes by being one transaction: statements that refuse one, locks held to its end,
    enum values that cannot be used before it commits."""
    for stmts in inner.values():
        for stmt in stmts:
            refusal = outside_transaction_only(stmt.node)
            if refusal:
                ctx.add(stmt, "not-in-transaction-block", ERROR,
                        f"{refusal} inside a DO block: a DO block is one transaction, and PostgreSQL refuses it there",
                        "run it as a statement of its own in the migration file (the runner runs each in autocommit)")
    added = lock_then_more(body_steps, lambda step: any(_adds_enum_value(s.node) for s in inner.get(step, ())))
    if added:
        stmt, value = next((s, s.node.newVal) for ss in inner.values() for s in ss if _adds_enum_value(s.node))
        ctx.add(stmt, "enum-value-unusable-in-transaction", ERROR,
                f"ALTER TYPE ... ADD VALUE {value!r} inside a DO block, where {added}: the new value "
                "cannot be used until the block commits",
                "add the value in a statement of its own, before the statements that use it")
    held = lock_then_more(body_steps, lambda step: any(
        isinstance(s.node, LOCK_TAKING) and not _on_new_tables(ctx, s.node) for s in inner.get(step, ())))
    if held:
        stmt = next(s for ss in inner.values() for s in ss
                    if isinstance(s.node, LOCK_TAKING) and not _on_new_tables(ctx, s.node))
        ctx.add(stmt, "lock-held-in-do-block", ERROR,
                f"{type(stmt.node).__name__.removesuffix('Stmt')} inside a DO block, where {held}: its lock is held "
                "until the whole block ends, through every statement, loop and sleep after it",
                "run the lock-taking statement on its own in the migration file, or last in the block")


def _adds_enum_value(node) -> TypeGuard[ast.AlterEnumStmt]:
    return isinstance(node, ast.AlterEnumStmt) and bool(node.newVal) and not node.oldVal


def outside_transaction_only(node) -> str | None:
    """Statements PostgreSQL runs only outside a transaction block (PreventInTransactionBlock)."""
    if isinstance(node, ast.IndexStmt) and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(node, ast.DropStmt) and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(node, ast.ReindexStmt) and def_option(node.params, "concurrently") is not None:
        return "REINDEX CONCURRENTLY"
    if isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd:
        return "VACUUM"
    if isinstance(node, ast.AlterTableStmt) and any(
            isinstance(cmd.def_, ast.PartitionCmd) and cmd.def_.concurrent for cmd in node.cmds or ()):
        return "DETACH PARTITION CONCURRENTLY"
    if isinstance(node, (ast.CreatedbStmt, ast.DropdbStmt, ast.AlterSystemStmt, ast.CreateTableSpaceStmt,
                         ast.DropTableSpaceStmt)):
        return type(node).__name__.removesuffix("Stmt").upper()
    return None


def _on_new_tables(ctx: Context, node) -> bool:
    relations = [rv for rv in walk(node) if isinstance(rv, ast.RangeVar)]
    return bool(relations) and all(ctx.key(rv) in ctx.new_tables for rv in relations)


def _check_inner(ctx: Context, at: Statement, sql: str,
                 check_statement: Callable[[Context, Statement], None]) -> list[Statement]:
    try:
        inner = split_statements(sql, first_line=at.line)
    except ParseError as exc:
        ctx.cannot_judge(at, f"DO block: SQL that does not parse ({exc.args[0] if exc.args else exc})")
        return []
    for stmt in inner:
        check_statement(ctx, stmt)
    return inner
