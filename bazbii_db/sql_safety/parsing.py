"""Parsing with pglast (libpg_query, the real PostgreSQL grammar) and helpers over its parse trees.

No regular expressions are used on SQL: every decision of the analysis comes from a parse tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, TypeVar

from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

T = TypeVar("T")


@dataclass(frozen=True)
class Statement:
    index: int  # 0-based position in the file
    text: str  # the statement's own text, without the trailing semicolon
    line: int  # 1-based line of its first token
    node: ast.Node = field(compare=False, repr=False)

    @property
    def kind(self) -> str:
        return type(self.node).__name__


def line_of(sql: str, offset: int) -> int:
    return sql.count("\n", 0, max(0, offset)) + 1


def parse_error_position(sql: str, exc: ParseError) -> int:
    """1-based line of a pglast ParseError (its second argument is the character offset)."""
    offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(sql)
    return line_of(sql, offset)


def split_statements(sql: str, first_line: int = 1) -> list[Statement]:
    """Parse ``sql`` and return its statements with 1-based line numbers.

    ``first_line`` shifts the numbering (for SQL embedded in another file, e.g. a DO block).
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
        out.append(Statement(index=i, text=text, line=line_of(sql, first) + first_line - 1,
                             node=present(rs.stmt, "statement")))
    return out


def present(value: T | None, what: str) -> T:
    """A field of a parse tree that is always set where it is read (pglast declares every field optional:
    a node can be built empty), e.g. a RangeVar's relname; None there fails naming the field."""
    if value is None:
        raise RuntimeError(f"the parse tree has no {what}")
    return value


def relname(rv: ast.RangeVar | None) -> str:
    """The name of a relation as written, where the grammar always gives one (a statement's table, ...)."""
    return present(present(rv, "relation").relname, "relation name")


def text_of(string: ast.String) -> str:
    """The value of a String node (``''`` is an empty string, never None)."""
    return present(string.sval, "string value")


def selected_expression(expression: str) -> ast.Node | None:
    """The parse tree of ``expression`` as ``SELECT <expression>`` reads it; None when that is not one
    statement selecting one expression (a syntax error, a ``;`` in it, ...)."""
    try:
        stmts = parse_sql(f"SELECT {expression}")
    except ParseError:
        return None
    select = stmts[0].stmt if len(stmts) == 1 else None
    if not isinstance(select, ast.SelectStmt) or not select.targetList:
        return None
    target = select.targetList[0]
    return target.val if isinstance(target, ast.ResTarget) else None


def walk(node) -> Iterator[ast.Node]:
    """Every node of a parse tree, depth first."""
    if isinstance(node, ast.Node):
        yield node
        for name in node:  # its attributes' names
            yield from walk(getattr(node, name, None))
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from walk(item)


def names(seq) -> list[str]:
    return [text_of(s) for s in (seq or ()) if isinstance(s, ast.String)]


def table_key(rv: ast.RangeVar | None, path_epoch: int = 0) -> str:
    """A relation as written, schema included: ``posts`` and ``other.posts`` are different tables.

    Names are taken as the parser gives them: unquoted identifiers are already folded to lower
    case, quoted ones keep their case (``"Posts"`` is not ``posts``). An unqualified name is not
    assumed to be ``public`` (the search_path decides), so facts about one spelling never excuse a
    statement on the other: the conservative direction. After a ``SET search_path`` in the same
    session (``path_epoch`` > 0) an unqualified name is bound to that setting (:func:`name_key`).
    """
    if rv is None:
        return ""
    return name_key([rv.schemaname, relname(rv)] if rv.schemaname else [relname(rv)], path_epoch)


def name_key(parts: list[str], path_epoch: int = 0) -> str:
    """The key of a possibly qualified name; unqualified names under a changed search_path never
    match a name resolved under another setting (nor anything the catalog can look up)."""
    if len(parts) == 1 and path_epoch:
        return f"{parts[0]}{PATH_BOUND}{path_epoch})"
    return ".".join(parts)


PATH_BOUND = " (after SET search_path #"


def catalog_name(key: str) -> str | None:
    """A key as the catalog resolves it (``to_regclass``): quoted parts, or None for a path-bound key."""
    if PATH_BOUND in key:
        return None
    return ".".join('"' + part.replace('"', '""') + '"' for part in key.split(".", 1))


def shown(rv: ast.RangeVar | None) -> str:
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{relname(rv)}" if rv.schemaname else relname(rv)


def string_constant(node) -> str | None:
    """The value of a string literal (``'...'``, optionally cast), else None."""
    while isinstance(node, ast.TypeCast):
        node = node.arg
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    return None


def integer_constant(node) -> int | None:
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer):
        return node.val.ival
    return None


def def_option(options, name: str) -> ast.DefElem | None:
    for opt in options or ():
        if isinstance(opt, ast.DefElem) and (opt.defname or "").lower() == name:
            return opt
    return None


def boolean_option(opt: ast.DefElem) -> bool:
    """The value of an option such as ``FULL`` in ``VACUUM (FULL false)``: no argument means true."""
    arg = opt.arg
    if arg is None:
        return True
    if isinstance(arg, ast.Boolean):
        return bool(arg.boolval)
    if isinstance(arg, ast.Integer):
        return arg.ival != 0
    text = getattr(arg, "sval", "")
    return str(text).lower() not in ("false", "off", "0", "no")
