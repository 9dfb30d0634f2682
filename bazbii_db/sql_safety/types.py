"""Columns: ADD COLUMN (defaults, serial/identity, inline constraints) and ALTER COLUMN ... TYPE.

Volatile defaults: ``ADD COLUMN ... DEFAULT f()`` rewrites the table when ``f`` is volatile.
Volatility is asked of PostgreSQL (``pg_proc.provolatile``) when the analysis has a catalog
connection; without one every function counts as volatile (fail closed).

Type changes: PostgreSQL changes a column's type without rewriting the table only when the
new type is binary coercible and accepts every old value. :data:`NO_REWRITE` is that
allow-list (each entry is proven against a real server in tests/db_schema: the table's
relfilenode does not change); every other change, a change with ``USING`` or ``COLLATE``,
and a change whose old type is unknown is denied.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import ConstrType

from .facts import Context, TypeSpec
from .findings import ERROR
from .parsing import Statement, names, walk

# Rules whose offline verdict may be a refusal only for want of a catalog (function volatility, a
# column's current type): a caller with a connection asks again with one before refusing.
CATALOG_DEPENDENT_RULES = frozenset({"adding-field-with-volatile-default", "changing-column-type"})
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


def _longer_or_unlimited(old: TypeSpec, new: TypeSpec) -> bool:
    return not new.mods or (len(old.mods) == 1 and len(new.mods) == 1 and new.mods[0] >= old.mods[0])


def _more_precision_same_scale(old: TypeSpec, new: TypeSpec) -> bool:
    if not new.mods:
        return True  # unconstrained numeric holds every value of any numeric(p, s)
    old_p, old_s = (old.mods + (0,))[:2] if old.mods else (None, None)
    new_p, new_s = (new.mods + (0,))[:2]
    return old_p is not None and new_p >= old_p and new_s == old_s


# (old type name, new type name) -> does this pair of modifiers keep every value without a rewrite?
NO_REWRITE = {
    ("varchar", "varchar"): _longer_or_unlimited,
    ("varchar", "text"): lambda old, new: True,
    ("numeric", "numeric"): _more_precision_same_scale,
    ("cidr", "inet"): lambda old, new: True,
}


def rewrite_free(old: TypeSpec, new: TypeSpec) -> bool:
    if old == new:
        return True
    if old.array != new.array:
        return False
    rule = NO_REWRITE.get((old.name, new.name))
    return bool(rule and rule(old, new))


def _volatile_calls(ctx: Context, expr) -> list[str]:
    found = []
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            qualified = tuple(n.lower() for n in names(node.funcname))
            if ctx.catalog.function_volatility(qualified) not in ("i", "s"):
                found.append(".".join(qualified) or "?")
    return found


def check_alter_type(ctx: Context, stmt: Statement, table: str, shown: str, cmd: ast.AlterTableCmd) -> None:
    column = (cmd.name or "").lower()
    col = cmd.def_ if isinstance(cmd.def_, ast.ColumnDef) else None
    new = TypeSpec.from_type_name(col.typeName) if col else None
    old = ctx.facts.column_types.get((table, column)) or ctx.catalog.column_type(table, column)
    if col is not None and new is not None:
        ctx.facts.column_types[(table, column)] = new
    if table in ctx.new_tables:
        return
    if col is not None and col.raw_default is None and col.collClause is None and old and new \
            and rewrite_free(old, new):
        return
    why = ("its current type is unknown to the analysis" if old is None and col is not None and new is not None
           else "USING or COLLATE forces a rewrite or index rebuild" if col is not None
           and (col.raw_default is not None or col.collClause is not None)
           else f"{old} -> {new} is not a change PostgreSQL makes without a rewrite")
    ctx.add(stmt, "changing-column-type", ERROR,
            f"ALTER COLUMN {cmd.name} TYPE on {shown} takes an ACCESS EXCLUSIVE lock and may rewrite the whole "
            f"table and its indexes ({why})",
            "add a new column of the new type in expand, backfill it with [[backfill]] in migrate (optionally a "
            "[dual_write] trigger), and drop the old column in contract; rewrite-free changes (longer varchar, "
            "varchar -> text, more numeric precision at the same scale, cidr -> inet) are allowed when the old type "
            "is known")


# Constraints declared inline on a column added to an existing table: (rule, what it does, fix).
INLINE_CONSTRAINTS = {
    ConstrType.CONSTR_FOREIGN: (
        "constraint-missing-not-valid", "REFERENCES on new column {column} of {table} is validated immediately",
        "add the column first, then ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a "
        "separate statement"),
    ConstrType.CONSTR_CHECK: (
        "constraint-missing-not-valid",
        "CHECK on new column {column} of {table} scans the table under an ACCESS EXCLUSIVE lock",
        "add the column, then ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE"),
    ConstrType.CONSTR_UNIQUE: (
        "disallowed-unique-constraint",
        "UNIQUE on new column {column} of {table} builds an index while holding an ACCESS EXCLUSIVE lock",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX"),
    ConstrType.CONSTR_PRIMARY: (
        "disallowed-unique-constraint",
        "PRIMARY KEY on new column {column} of {table} builds an index while holding an ACCESS EXCLUSIVE lock",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY USING INDEX"),
}


def check_add_column(ctx: Context, stmt: Statement, table: str, shown: str, col: ast.ColumnDef) -> None:
    colname = (col.colname or "").lower()
    ctx.new_columns.add((table, colname))
    spec = TypeSpec.from_type_name(col.typeName)
    if spec is not None:
        ctx.facts.column_types[(table, colname)] = spec
    if table in ctx.new_tables:
        return
    if spec is not None and spec.name in SERIAL_TYPES:
        ctx.add(stmt, "adding-column-rewrite", ERROR,
                f"ADD COLUMN {col.colname} {spec.name} on {shown} fills every row from a sequence and rewrites "
                "the table under an ACCESS EXCLUSIVE lock",
                "add a nullable column, backfill it in batches, then attach the default")
    has_default = False
    not_null = False
    for con in col.constraints or ():
        if not isinstance(con, ast.Constraint):
            continue
        if con.contype == ConstrType.CONSTR_DEFAULT:
            has_default = True
            volatile = _volatile_calls(ctx, con.raw_expr)
            if volatile:
                ctx.add(stmt, "adding-field-with-volatile-default", ERROR,
                        f"ADD COLUMN {col.colname} on {shown} with a DEFAULT calling "
                        f"{', '.join(f'{v}()' for v in sorted(set(volatile)))}, which PostgreSQL does not know as "
                        "stable or immutable (pg_proc.provolatile; unknown without a catalog connection): a "
                        "volatile default rewrites the whole table under an ACCESS EXCLUSIVE lock",
                        "add the column without a default (or with a constant one), backfill it with "
                        "[[backfill]] in the migrate stage, then SET DEFAULT")
        elif con.contype in (ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED):
            ctx.add(stmt, "adding-column-rewrite", ERROR,
                    f"ADD COLUMN {col.colname} on {shown} as an identity/generated column rewrites the table "
                    "under an ACCESS EXCLUSIVE lock",
                    "add a plain nullable column and backfill it in batches")
        elif con.contype == ConstrType.CONSTR_NOTNULL:
            not_null = True
        elif con.contype in INLINE_CONSTRAINTS:
            rule, what, fix = INLINE_CONSTRAINTS[con.contype]
            ctx.add(stmt, rule, ERROR, f"inline {what.format(column=col.colname, table=shown)}", fix)
    if not_null and not has_default:
        ctx.add(stmt, "adding-required-field", ERROR,
                f"ADD COLUMN {col.colname} NOT NULL without a default on {shown} fails on a non-empty "
                "table and breaks inserts from the running application",
                "add it nullable, backfill, then make it NOT NULL through a validated CHECK in contract")


def record_create_table(ctx: Context, table: str, node: ast.CreateStmt) -> None:
    for elt in node.tableElts or ():
        if isinstance(elt, ast.ColumnDef):
            spec = TypeSpec.from_type_name(elt.typeName)
            if spec is not None:
                ctx.facts.column_types[(table, (elt.colname or "").lower())] = spec
