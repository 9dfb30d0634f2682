"""Columns: ADD COLUMN (defaults, serial/identity, inline constraints) and ALTER COLUMN ... TYPE.

Volatile defaults: ``ADD COLUMN ... DEFAULT f()`` rewrites the table when ``f`` is volatile.
Volatility is asked of PostgreSQL (``pg_proc.provolatile``) when the analysis has a catalog
connection; without one every function counts as volatile (fail closed).

Column types of a user-defined type: adding a column whose type is a domain with a CHECK (or
NOT NULL) rewrites the table, as PostgreSQL checks every row's value; a domain, enum or other
user type is known from the SQL seen so far or asked of the catalog; an unknown one is refused.

Type changes: PostgreSQL changes a column's type without rewriting the table only when the
new type is binary coercible and accepts every old value. :data:`NO_REWRITE` is that
allow-list, plus a domain changed to its base type and an array losing its element's length
limit (each proven against a real server in tests/db_schema: the table's relfilenode does not
change); every other change, a change with ``USING`` or ``COLLATE``, and a change whose old
type is unknown is denied.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import ConstrType

from .facts import Context, Domain, TypeSpec
from .findings import ERROR
from .parsing import Statement, names, walk

# PostgreSQL 15's built-in scalar types (pg_type in pg_catalog, base, range and multirange types; a
# test checks the list against the server): adding a column of one never runs a domain check.
BUILTIN_TYPES = frozenset("""
    aclitem bit bool box bpchar bytea char cid cidr circle date datemultirange daterange float4 float8 gtsvector
    inet int2 int4 int4multirange int4range int8 int8multirange int8range interval json jsonb jsonpath line lseg
    macaddr macaddr8 money name numeric nummultirange numrange oid path point polygon refcursor text tid time
    timestamp timestamptz timetz tsmultirange tsquery tsrange tstzmultirange tstzrange tsvector txid_snapshot uuid
    varbit varchar xid xid8 xml""".split())
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
    ("timestamp", "timestamp"): _longer_or_unlimited,
    ("timestamptz", "timestamptz"): _longer_or_unlimited,
}


def rewrite_free(old: TypeSpec, new: TypeSpec, old_domain: Domain | None = None) -> bool:
    """``old_domain``: what the old type is when it is a domain (changing it to its base type keeps every value)."""
    if old == new:
        return True
    if old.array != new.array:
        return False
    if old.array:  # an element type change rewrites, except dropping the element's length limit
        return old.name == new.name and not new.mods
    if old_domain is not None and old_domain.base == new:
        return True
    rule = NO_REWRITE.get((old.name, new.name))
    return bool(rule and rule(old, new))


def user_type(ctx: Context, name: str) -> Domain | bool | None:
    """What a type named in a column definition is: a :class:`Domain`, True for another user type (enum,
    composite, range), None when unknown; from the SQL seen so far, else the catalog."""
    if name in ctx.facts.domains:
        return ctx.facts.domains[name]
    if name in ctx.facts.user_types:
        return True
    return ctx.catalog.user_type(name)


def _volatile_calls(ctx: Context, expr) -> list[str]:
    found = []
    for node in walk(expr):
        if isinstance(node, ast.FuncCall):
            qualified = tuple(n.lower() for n in names(node.funcname))
            if ctx.catalog.function_volatility(qualified) not in ("i", "s"):
                found.append(".".join(qualified) or "?")
    return found


def check_alter_type(ctx: Context, stmt: Statement, table: str, shown: str, cmd: ast.AlterTableCmd) -> None:
    column = cmd.name or ""
    col = cmd.def_ if isinstance(cmd.def_, ast.ColumnDef) else None
    new = TypeSpec.from_type_name(col.typeName) if col else None
    old = ctx.facts.column_types.get((table, column)) or ctx.catalog.column_type(table, column)
    if col is not None and new is not None:
        ctx.facts.column_types[(table, column)] = new
    if table in ctx.new_tables:
        return
    domain = user_type(ctx, old.name) if old is not None and old.name not in BUILTIN_TYPES else None
    if col is not None and col.raw_default is None and col.collClause is None and old and new \
            and rewrite_free(old, new, domain if isinstance(domain, Domain) else None):
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
            "varchar -> text, more numeric precision at the same scale, cidr -> inet, a longer or unlimited timestamp "
            "precision, a domain to its base type, varchar(n)[] -> varchar[]) are allowed when the old type is known")


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
    colname = col.colname or ""
    spec = TypeSpec.from_type_name(col.typeName)
    if spec is not None:
        ctx.facts.column_types[(table, colname)] = spec
    record_column_constraints(ctx, table, col)
    if table in ctx.new_tables:
        return
    _check_column_type(ctx, stmt, shown, col, spec)
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


def _check_column_type(ctx: Context, stmt: Statement, shown: str, col: ast.ColumnDef, spec: TypeSpec | None) -> None:
    """A column of a domain with a CHECK rewrites the table: every row's value is checked against it."""
    if spec is None or spec.name in BUILTIN_TYPES or spec.name in SERIAL_TYPES:
        return
    kind = user_type(ctx, spec.name)
    if kind is True or (isinstance(kind, Domain) and not kind.checked):
        return
    why = ("is a domain with a CHECK or NOT NULL constraint, which PostgreSQL checks on every row by rewriting the "
           "table" if isinstance(kind, Domain) else
           "is a type the analysis does not know (a domain with a CHECK would rewrite the table; unknown without a "
           "catalog connection)")
    ctx.add(stmt, "adding-column-of-checked-domain", ERROR,
            f"ADD COLUMN {col.colname} {spec} on {shown}: {spec.name} {why}, under an ACCESS EXCLUSIVE lock",
            "add the column with the domain's base type (or a domain without constraints), backfill it, then "
            "enforce the rule with a CHECK ... NOT VALID and VALIDATE CONSTRAINT")


def record_column_constraints(ctx: Context, table: str, col: ast.ColumnDef) -> None:
    for con in col.constraints or ():
        if isinstance(con, ast.Constraint) and con.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY):
            ctx.facts.not_null.add((table, col.colname or ""))


def record_create_table(ctx: Context, table: str, node: ast.CreateStmt) -> None:
    for elt in node.tableElts or ():
        if isinstance(elt, ast.ColumnDef):
            spec = TypeSpec.from_type_name(elt.typeName)
            if spec is not None:
                ctx.facts.column_types[(table, elt.colname or "")] = spec
            record_column_constraints(ctx, table, elt)
        elif isinstance(elt, ast.Constraint) and elt.contype == ConstrType.CONSTR_PRIMARY:
            ctx.facts.not_null.update((table, key) for key in names(elt.keys))
    if node.partspec is not None:
        ctx.facts.partitioned.add(table)


def record_create_domain(ctx: Context, stmt: Statement, node: ast.CreateDomainStmt) -> None:
    name = ".".join(n.lower() for n in names(node.domainname))
    checked = any(isinstance(c, ast.Constraint) and c.contype in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_NOTNULL)
                  for c in node.constraints or ())
    ctx.facts.domains[name] = Domain(TypeSpec.from_type_name(node.typeName), checked)


def record_user_type(ctx: Context, stmt: Statement, node) -> None:
    """CREATE TYPE ... AS ENUM / AS (composite) / AS RANGE: a user type that is not a domain."""
    parts = names(node.typeName) if isinstance(node, (ast.CreateEnumStmt, ast.CreateRangeStmt)) \
        else [n for n in (node.typevar.schemaname, node.typevar.relname) if n]
    ctx.facts.user_types.add(".".join(p.lower() for p in parts))
