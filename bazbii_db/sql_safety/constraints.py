"""Constraints: ADD CONSTRAINT, VALIDATE, SET NOT NULL, domain constraints.

The safe way to a new constraint on a table in use: add it ``NOT VALID`` (brief lock, no scan),
``VALIDATE CONSTRAINT`` in a separate statement (SHARE UPDATE EXCLUSIVE: reads and writes go on),
and for NOT NULL, ``SET NOT NULL`` once a validated ``CHECK (col IS NOT NULL)`` exists (PostgreSQL
then skips the scan). The steps may be spread over stages: the facts carry over.
"""

from __future__ import annotations

from pglast import ast
from pglast.enums.parsenodes import ConstrType
from pglast.enums.primnodes import BoolExprType, NullTestType

from .facts import Context, Domain
from .findings import ERROR
from .parsing import Statement, names, present


def proven_not_null(expr) -> tuple[str, ...]:
    """The columns a CHECK expression proves NOT NULL: ``col IS NOT NULL``, alone or as a term of an AND."""
    if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.AND_EXPR:
        return tuple(dict.fromkeys(col for arg in expr.args or () for col in proven_not_null(arg)))
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == NullTestType.IS_NOT_NULL \
            and isinstance(expr.arg, ast.ColumnRef):
        cols = names(expr.arg.fields)
        if len(cols) == 1:
            return (cols[0],)
    return ()


def _described(con: ast.Constraint, kind: str) -> str:
    cols = ", ".join(names(con.keys))
    head = f"ADD CONSTRAINT {con.conname} {kind}" if con.conname else f"ADD {kind}"
    return f"{head} ({cols})" if cols else head


def record_check(ctx: Context, table: str, con: ast.Constraint) -> None:
    ctx.facts.add_check(table, con.conname or "", proven_not_null(con.raw_expr), validated=not con.skip_validation)


def check_add_constraint(ctx: Context, stmt: Statement, table: str, shown: str, con: ast.Constraint) -> None:
    if con.contype == ConstrType.CONSTR_CHECK:
        record_check(ctx, table, con)
    if table in ctx.new_tables:
        return
    if con.contype in (ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK) and not con.skip_validation:
        kind = "FOREIGN KEY" if con.contype == ConstrType.CONSTR_FOREIGN else "CHECK"
        ctx.add(stmt, "constraint-missing-not-valid", ERROR,
                f"{_described(con, kind)} on {shown} without NOT VALID scans the whole table while blocking writes",
                f"add it with NOT VALID, then ALTER TABLE {shown} VALIDATE CONSTRAINT ... in a separate "
                "statement (VALIDATE only takes SHARE UPDATE EXCLUSIVE)")
    elif con.contype == ConstrType.CONSTR_EXCLUSION:
        ctx.add(stmt, "exclusion-constraint", ERROR,
                f"{_described(con, 'EXCLUDE')} on {shown} builds its index and checks every row under an ACCESS "
                "EXCLUSIVE lock; PostgreSQL cannot attach an existing index to an exclusion constraint",
                "enforce it on a new table (created with the constraint) and copy the rows over with a "
                "[[backfill]] of kind 'copy', or add it during a maintenance window")
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and con.indexname:
        _check_using_index(ctx, stmt, table, shown, con)
    elif con.contype in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not con.indexname:
        kind = "UNIQUE" if con.contype == ConstrType.CONSTR_UNIQUE else "PRIMARY KEY"
        ctx.add(stmt, "disallowed-unique-constraint", ERROR,
                f"{_described(con, kind)} on {shown} builds its index under an ACCESS EXCLUSIVE lock",
                f"CREATE UNIQUE INDEX CONCURRENTLY <name> first, then ADD CONSTRAINT <name> {kind} USING INDEX <name>")


def _check_using_index(ctx: Context, stmt: Statement, table: str, shown: str, con: ast.Constraint) -> None:
    """ADD ... USING INDEX: PostgreSQL refuses a partial index; a PRIMARY KEY makes its columns NOT NULL, which
    scans the table under ACCESS EXCLUSIVE unless each is NOT NULL already or proven by a validated CHECK."""
    schema = table.rpartition(".")[0]
    indexname = present(con.indexname, "USING INDEX's index")
    index = ctx.facts.indexes.get(f"{schema}.{indexname}" if schema else indexname)
    kind = "PRIMARY KEY" if con.contype == ConstrType.CONSTR_PRIMARY else "UNIQUE"
    if index is not None and index.partial:
        ctx.add(stmt, "using-index-partial", ERROR,
                f"ADD {kind} USING INDEX {con.indexname} on {shown}: the index is partial, so PostgreSQL refuses it",
                "build a unique index without a WHERE clause (CONCURRENTLY) and use that one")
        return
    if kind != "PRIMARY KEY":
        return
    known = ctx.facts.proven_not_null() | ctx.facts.not_null
    nullable = [c for c in index.columns if (table, c) not in known] if index is not None and index.columns else None
    if nullable == []:
        return
    ctx.add(stmt, "primary-key-using-index-scans", ERROR,
            f"ADD PRIMARY KEY USING INDEX {con.indexname} on {shown} makes "
            f"{', '.join(nullable) if nullable else 'the index columns (unknown to the analysis)'} NOT NULL, which scans "
            "the whole table under an ACCESS EXCLUSIVE lock unless each is NOT NULL already or proven by a validated "
            "CHECK", "first ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID and VALIDATE it for each column")


def check_validate(ctx: Context, table: str, cmd: ast.AlterTableCmd) -> None:
    ctx.facts.validate(table, cmd.name or "")


def check_set_not_null(ctx: Context, stmt: Statement, table: str, shown: str, cmd: ast.AlterTableCmd) -> None:
    # A column added earlier in the file is no exemption: even with a DEFAULT, SET NOT NULL scans every row.
    col = cmd.name or ""
    if table in ctx.new_tables or (table, col) in ctx.facts.proven_not_null() or (table, col) in ctx.facts.not_null:
        return
    ctx.add(stmt, "set-not-null-without-validated-check", ERROR,
            f"SET NOT NULL on {shown}.{cmd.name} scans the whole table under an ACCESS EXCLUSIVE lock unless a "
            f"validated CHECK ({cmd.name} IS NOT NULL) on {shown} exists",
            f"first ADD CONSTRAINT ... CHECK ({cmd.name} IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT in a "
            "separate statement (or an earlier stage), then SET NOT NULL, then drop the CHECK")


def check_drop_constraint(ctx: Context, stmt: Statement, table: str, shown: str, cmd: ast.AlterTableCmd) -> None:
    ctx.facts.drop_constraint(table, cmd.name or "")
    if table in ctx.new_tables:
        return
    ctx.destructive(stmt, f"DROP CONSTRAINT {cmd.name} on {shown}",
                    "old application versions (and a rollback to them) may rely on the constraint: drop it in "
                    "contract, once every running version is past it")


def check_alter_domain(ctx: Context, stmt: Statement, node: ast.AlterDomainStmt) -> None:
    domain = ".".join(names(node.typeName))
    known = ctx.facts.domains.get(domain.lower())
    if node.subtype in ("C", "O") and known is not None:
        ctx.facts.domains[domain.lower()] = Domain(known.base, checked=True)
    if node.subtype == "C" and isinstance(node.def_, ast.Constraint) and not node.def_.skip_validation:
        ctx.add(stmt, "domain-constraint-scan", ERROR,
                f"ALTER DOMAIN {domain} ADD CONSTRAINT checks every column of every table that uses the domain "
                "while holding a lock that blocks writes to them",
                f"ALTER DOMAIN {domain} ADD CONSTRAINT ... NOT VALID, then ALTER DOMAIN {domain} VALIDATE "
                "CONSTRAINT ... in a separate statement")
    elif node.subtype == "O":
        ctx.add(stmt, "domain-constraint-scan", ERROR,
                f"ALTER DOMAIN {domain} SET NOT NULL checks every column that uses the domain under a lock",
                "add a CHECK (VALUE IS NOT NULL) NOT VALID constraint to the domain, then VALIDATE it")
    elif node.subtype == "X":
        ctx.facts.domains.pop(domain.lower(), None)  # whether it keeps another constraint is not known
        ctx.destructive(stmt, f"ALTER DOMAIN {domain} DROP CONSTRAINT",
                        "drop it in contract, once no running version relies on it")
    elif node.subtype not in ("C", "V", "N", "T"):
        ctx.cannot_judge(stmt, f"ALTER DOMAIN {domain} (subcommand {node.subtype!r})")
