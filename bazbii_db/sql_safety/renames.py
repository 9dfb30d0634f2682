"""Renames and drops: they break old application versions, so they belong in contract only."""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import ObjectType

from .facts import Context
from .parsing import Statement, name_key, names, present, shown, text_of

_RENAME_FIX = {
    ObjectType.OBJECT_COLUMN: "rename in five steps: add the new column (expand), write both (dual_write), backfill "
                              "(migrate), switch the application, drop the old column (contract)",
    ObjectType.OBJECT_TABLE: "create the new table, copy and dual-write, switch the application, then drop the old "
                             "table in contract",
}
_GENERIC_FIX = "add the new object beside the old one, switch the application, and remove the old one in contract"


def _object_label(obj) -> str:
    if isinstance(obj, (list, tuple)):
        return ".".join(names(obj)) or "?"
    if isinstance(obj, ast.String):
        return text_of(obj)
    if isinstance(obj, ast.TypeName):
        return ".".join(names(obj.names))
    if isinstance(obj, ast.ObjectWithArgs):
        return ".".join(names(obj.objname))
    return "?"


def _kind(object_type) -> str:
    return object_type.name.removeprefix("OBJECT_").replace("_", " ")


def check_rename(ctx: Context, stmt: Statement, node: ast.RenameStmt) -> None:
    if node.relation is not None and ctx.key(node.relation) in ctx.new_tables:
        return
    rename_type = present(node.renameType, "RENAME's object type")
    kind = _kind(rename_type)
    if rename_type == ObjectType.OBJECT_COLUMN:
        what = f"RENAME COLUMN {node.subname} on {shown(node.relation)}"
    elif node.relation is not None:
        what = f"RENAME {kind} {shown(node.relation)}" + (f" {node.subname}" if node.subname else "")
    else:
        what = f"RENAME {kind} {node.subname or _object_label(node.object)}"
    ctx.destructive(stmt, f"{what} TO {node.newname}", _RENAME_FIX.get(rename_type, _GENERIC_FIX))


def check_set_schema(ctx: Context, stmt: Statement, node: ast.AlterObjectSchemaStmt) -> None:
    if node.relation is not None and ctx.key(node.relation) in ctx.new_tables:
        return
    target = shown(node.relation) if node.relation is not None else _object_label(node.object)
    ctx.destructive(stmt, f"ALTER {_kind(node.objectType)} {target} SET SCHEMA {node.newschema}",
                    "old versions name the object by its old schema: create it in the new schema, copy, switch "
                    "the application, then drop the old one in contract")


def check_enum(ctx: Context, stmt: Statement, node: ast.AlterEnumStmt) -> None:
    if node.oldVal:
        ctx.destructive(stmt, f"ALTER TYPE {'.'.join(names(node.typeName))} RENAME VALUE {node.oldVal!r}",
                        "add the new value (ADD VALUE) in expand, switch the application and rewrite the rows "
                        "with a backfill, stop using the old value, then retire it in contract")


def check_drop(ctx: Context, stmt: Statement, node: ast.DropStmt) -> None:
    labels = [_object_label(obj) for obj in node.objects or ()]
    if node.removeType == ObjectType.OBJECT_TABLE and all(
            name_key(label.split("."), ctx.facts.path_epoch) in ctx.new_tables for label in labels):
        return
    fix = ("stop using the table in the application, deploy, then drop it in contract"
           if node.removeType == ObjectType.OBJECT_TABLE else
           "stop using it in the application, deploy, then drop it in contract")
    ctx.destructive(stmt, f"DROP {_kind(node.removeType)} {', '.join(labels)}", fix)


def check_truncate(ctx: Context, stmt: Statement, node: ast.TruncateStmt) -> None:
    if all(ctx.key(rv) in ctx.new_tables for rv in node.relations or ()):
        return
    ctx.destructive(stmt, "TRUNCATE", "truncate only in contract, after no version uses the data")


def check_revoke(ctx: Context, stmt: Statement, node: ast.GrantStmt) -> None:
    if not node.is_grant:
        ctx.destructive(stmt, "REVOKE", "revoke privileges in contract, once no running version needs them")
