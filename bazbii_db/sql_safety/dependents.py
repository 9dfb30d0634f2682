"""Dependents: what a drop takes with it, and the views the old application reads.

PostgreSQL knows every dependent (``pg_depend``); the static rules know only the views, columns and
types the SQL seen so far created (earlier statements, stages and migrations). A shadow run
(:mod:`.shadow`) reports what PostgreSQL itself drops or refuses.

* ``DROP ... CASCADE`` (and ``DROP COLUMN ... CASCADE``) drops whatever depends on the object,
  views and columns the statement does not name: refused in every stage (``drop-cascade``);
* a drop of a table, column or type that a known view or column uses: PostgreSQL refuses it and
  the stage stops half done (``drop-breaks-dependents``);
* ``CREATE OR REPLACE VIEW`` of a view this file did not create may change or drop a column the old
  application reads: only PostgreSQL's stored definition tells (``needs-shadow-run``).
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import DropBehavior, ObjectType

from .facts import Context, ViewFact
from .findings import ERROR
from .parsing import Statement, name_key, names, present, shown, text_of, walk

_RELATIONS = (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_VIEW, ObjectType.OBJECT_MATVIEW,
              ObjectType.OBJECT_FOREIGN_TABLE)
_TYPES = (ObjectType.OBJECT_TYPE, ObjectType.OBJECT_DOMAIN)


def view_fact(ctx: Context, query) -> ViewFact:
    refs = [node for node in walk(query) if isinstance(node, ast.ColumnRef)]
    return ViewFact(tables=frozenset(ctx.key(rv) for rv in walk(query) if isinstance(rv, ast.RangeVar)),
                    columns=frozenset(n[-1] for n in (names(ref.fields) for ref in refs) if n),
                    star=any(isinstance(f, ast.A_Star) for ref in refs for f in ref.fields or ()))


def check_view(ctx: Context, stmt: Statement, node: ast.ViewStmt) -> None:
    view = ctx.key(node.view)
    if node.replace and view not in ctx.new_tables:
        ctx.needs_shadow_run(stmt, f"CREATE OR REPLACE VIEW {shown(node.view)} may replace a view the old application "
                                   "reads and change what one of its columns returns")
    ctx.facts.views[view] = view_fact(ctx, node.query)
    ctx.new_tables.add(view)


def record_table_as(ctx: Context, node: ast.CreateTableAsStmt) -> None:
    """CREATE TABLE AS / CREATE MATERIALIZED VIEW: a new relation (a matview also reads its tables)."""
    if not (node.into and node.into.rel) or node.if_not_exists:
        return
    name = ctx.key(node.into.rel)
    ctx.new_tables.add(name)
    if node.objtype == ObjectType.OBJECT_MATVIEW:
        ctx.facts.matviews.add(name)
        ctx.facts.views[name] = view_fact(ctx, node.query)


def _cascade(ctx: Context, stmt: Statement, what: str) -> None:
    ctx.add(stmt, "drop-cascade", ERROR,
            f"{what} ... CASCADE also drops every object that depends on it (views, columns of a dropped type, "
            "foreign keys), none of which the statement names",
            "drop the dependents explicitly first, each by name, then the object without CASCADE")


def _breaks(ctx: Context, stmt: Statement, what: str, users: list[str]) -> None:
    ctx.add(stmt, "drop-breaks-dependents", ERROR,
            f"{what}: {', '.join(sorted(users))} still use{'s' if len(users) == 1 else ''} it, so PostgreSQL refuses "
            "the drop and the stage stops half done",
            "drop or change the dependents first (in the same or an earlier contract), then the object")


def _readers(ctx: Context, table: str, column: str | None = None, dropped: frozenset[str] = frozenset()) -> list[str]:
    return [f"view {view}" for view, fact in ctx.facts.views.items()
            if view not in dropped and table in fact.tables and (column is None or fact.star or column in fact.columns)]


def _parts(obj) -> list[str]:
    if isinstance(obj, (list, tuple)):
        return names(obj)
    if isinstance(obj, ast.TypeName):
        return names(obj.names)
    if isinstance(obj, ast.ObjectWithArgs):
        return names(obj.objname)
    return [text_of(obj)] if isinstance(obj, ast.String) else ["?"]


def check_drop(ctx: Context, stmt: Statement, node: ast.DropStmt) -> None:
    """DROP TABLE/VIEW/TYPE ...: cascades and known dependents; the dropped objects leave the facts."""
    keys = [name_key(_parts(obj), ctx.facts.path_epoch) for obj in node.objects or ()]
    kind = present(node.removeType, "DROP's object type").name.removeprefix("OBJECT_").replace("_", " ")
    if node.behavior == DropBehavior.DROP_CASCADE:
        _cascade(ctx, stmt, f"DROP {kind} {', '.join(keys)}")
    dropped = frozenset(keys)
    if node.removeType in _RELATIONS:
        users = [u for key in keys if key not in ctx.new_tables for u in _readers(ctx, key, dropped=dropped)]
        if users and node.behavior != DropBehavior.DROP_CASCADE:
            _breaks(ctx, stmt, f"DROP {kind} {', '.join(keys)}", users)
        for key in keys:
            ctx.facts.views.pop(key, None)
            ctx.facts.matviews.discard(key)
            ctx.facts.partitioned.discard(key)
    elif node.removeType in _TYPES:
        typenames = {key.lower() for key in keys}
        users = [f"column {table}.{column}" for (table, column), spec in ctx.facts.column_types.items()
                 if spec.name in typenames]
        if users and node.behavior != DropBehavior.DROP_CASCADE:
            _breaks(ctx, stmt, f"DROP {kind} {', '.join(keys)}", users)
        for name in typenames:
            ctx.facts.domains.pop(name, None)
            ctx.facts.user_types.discard(name)
    elif node.removeType == ObjectType.OBJECT_INDEX:
        for key in keys:
            ctx.facts.indexes.pop(key, None)


def check_drop_column(ctx: Context, stmt: Statement, table: str, table_shown: str, cmd: ast.AlterTableCmd) -> None:
    what = f"ALTER TABLE {table_shown} DROP COLUMN {cmd.name}"
    if cmd.behavior == DropBehavior.DROP_CASCADE:
        _cascade(ctx, stmt, what)
    elif table not in ctx.new_tables:
        users = _readers(ctx, table, cmd.name)
        if users:
            _breaks(ctx, stmt, what, users)
    ctx.facts.column_types.pop((table, cmd.name or ""), None)


def check_drop_constraint_cascade(ctx: Context, stmt: Statement, table_shown: str, cmd: ast.AlterTableCmd) -> None:
    if cmd.behavior == DropBehavior.DROP_CASCADE:
        _cascade(ctx, stmt, f"ALTER TABLE {table_shown} DROP CONSTRAINT {cmd.name}")

