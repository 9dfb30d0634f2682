"""DO blocks: the statements inside a PL/pgSQL body are judged like statements of the file.

The body is parsed with PostgreSQL's own PL/pgSQL parser (``pglast.parse_plpgsql``). Static SQL
statements and ``PERFORM`` are analysed; ``EXECUTE '<literal>'`` is analysed as the literal's
SQL; dynamic SQL built at run time (``EXECUTE format(...)``, ``FOR ... IN EXECUTE``, cursors over
dynamic queries), ``CALL`` and other languages cannot be judged and are refused (fail closed).
"""

from __future__ import annotations

from typing import Callable, Iterator

from pglast import ast, parse_plpgsql, parse_sql
from pglast.parser import ParseError

from .facts import Context
from .parsing import Statement, def_option, split_statements, string_constant

# PL/pgSQL statements that run SQL the analysis cannot see.
_UNJUDGEABLE = {
    "PLpgSQL_stmt_dynfors": "FOR ... IN EXECUTE (dynamic SQL)",
    "PLpgSQL_stmt_call": "CALL of a procedure",
}


def _dollar_quote(body: str) -> str:
    tag = "do_body"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}${body}${tag}$"


def _items(node, key: str = "") -> Iterator[tuple[str, dict]]:
    """Every (PL/pgSQL node kind, fields) in the parse tree, depth first."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name.startswith("PLpgSQL_") and isinstance(value, dict):
                yield name, value
            yield from _items(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _items(item, key)


def _query(fields: dict, key: str) -> str | None:
    expr = fields.get(key)
    return expr.get("PLpgSQL_expr", {}).get("query") if isinstance(expr, dict) else None


def _literal_sql(expression: str) -> str | None:
    """The text of ``'...'`` when an EXECUTE's expression is one string literal."""
    try:
        stmts = parse_sql(f"SELECT {expression}")
    except ParseError:
        return None
    target = stmts[0].stmt.targetList[0].val if len(stmts) == 1 and stmts[0].stmt.targetList else None
    return string_constant(target)


def check_do(ctx: Context, stmt: Statement, node: ast.DoStmt,
             check_statement: Callable[[Context, Statement], None]) -> None:
    language = def_option(node.args, "language")
    lang = getattr(language.arg, "sval", "?").lower() if language is not None else "plpgsql"
    if lang != "plpgsql":
        ctx.cannot_judge(stmt, f"a DO block in language {lang}")
        return
    body_opt = def_option(node.args, "as")
    body = getattr(body_opt.arg, "sval", None) if body_opt is not None else None
    if body is None:
        ctx.cannot_judge(stmt, "a DO block without a readable body")
        return
    try:
        tree = parse_plpgsql(f"CREATE FUNCTION pg_temp.bazbii_do_block() RETURNS void LANGUAGE plpgsql AS "
                             f"{_dollar_quote(body)}")
    except ParseError as exc:
        ctx.cannot_judge(stmt, f"a DO block whose body does not parse ({exc.args[0] if exc.args else exc})")
        return
    for kind, fields in _items(tree):
        line = stmt.line + max(int(fields.get("lineno", 1)) - 1, 0)
        if kind in _UNJUDGEABLE:
            ctx.cannot_judge(Statement(stmt.index, stmt.text, line, node), f"DO block: {_UNJUDGEABLE[kind]}")
        elif kind in ("PLpgSQL_stmt_open", "PLpgSQL_stmt_return_query") and "dynquery" in fields:
            ctx.cannot_judge(Statement(stmt.index, stmt.text, line, node), "DO block: a query built at run time")
        elif kind in ("PLpgSQL_stmt_execsql", "PLpgSQL_stmt_perform"):
            _check_inner(ctx, stmt, line, _query(fields, "sqlstmt" if kind.endswith("execsql") else "expr"),
                         check_statement)
        elif kind == "PLpgSQL_stmt_dynexecute":
            text = _literal_sql(_query(fields, "query") or "")
            if text is None:
                ctx.cannot_judge(Statement(stmt.index, stmt.text, line, node),
                                 "DO block: EXECUTE of SQL built at run time")
            else:
                _check_inner(ctx, stmt, line, text, check_statement)


def _check_inner(ctx: Context, outer: Statement, line: int, sql: str | None,
                 check_statement: Callable[[Context, Statement], None]) -> None:
    if not sql:
        return
    try:
        inner = split_statements(sql, first_line=line)
    except ParseError as exc:
        ctx.cannot_judge(Statement(outer.index, outer.text, line, outer.node),
                         f"DO block: SQL that does not parse ({exc.args[0] if exc.args else exc})")
        return
    for stmt in inner:
        check_statement(ctx, stmt)
