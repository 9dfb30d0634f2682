"""Statements whose lock blocks readers or writers for as long as they run, and table rewrites.

Exempt: relations created earlier in the same file (nothing else can use them yet), unless they
were created with IF NOT EXISTS (which leaves an existing table in place).
"""

from __future__ import annotations

from pglast import ast

from .facts import Context, IndexFact
from .findings import ERROR
from .parsing import Statement, boolean_option, def_option, present, shown


def check_create_index(ctx: Context, stmt: Statement, node: ast.IndexStmt) -> None:
    table = ctx.key(node.relation)
    record_index(ctx, table, node)
    partitioned = table in ctx.facts.partitioned
    if node.concurrent and partitioned:
        ctx.add(stmt, "concurrent-index-on-partitioned-table", ERROR,
                f"CREATE INDEX CONCURRENTLY on partitioned table {shown(node.relation)}: PostgreSQL refuses it",
                f"CREATE INDEX ... ON ONLY {shown(node.relation)} (catalog only), then CREATE INDEX CONCURRENTLY on each "
                "partition and ALTER INDEX ... ATTACH PARTITION each one")
    if partitioned and not present(node.relation, "index's table").inh:
        return  # ON ONLY a partitioned table: an invalid index in the catalog, nothing is built
    if not node.concurrent and table not in ctx.new_tables:
        ctx.add(stmt, "require-concurrent-index-creation", ERROR,
                f"CREATE INDEX on existing table {shown(node.relation)} without CONCURRENTLY "
                "blocks every write to the table until the build finishes",
                "use CREATE INDEX CONCURRENTLY IF NOT EXISTS <name> ... (the runner runs it outside "
                "a transaction and repairs an INVALID index left by a failed build)")
    if node.concurrent and not node.idxname:
        ctx.add(stmt, "concurrent-index-needs-name", ERROR,
                "CREATE INDEX CONCURRENTLY without an index name: a failed build leaves an INVALID "
                "index the runner cannot identify to drop and rebuild",
                "name the index explicitly")


def check_drop_index(ctx: Context, stmt: Statement, node: ast.DropStmt) -> None:
    if not node.concurrent:
        ctx.add(stmt, "require-concurrent-index-deletion", ERROR,
                "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table",
                "use DROP INDEX CONCURRENTLY IF EXISTS")


def check_reindex(ctx: Context, stmt: Statement, node: ast.ReindexStmt) -> None:
    if def_option(node.params, "concurrently") is None:
        ctx.add(stmt, "require-concurrent-reindex", ERROR,
                "REINDEX without CONCURRENTLY blocks writes (and reads that use the index) until it finishes",
                "use REINDEX ... CONCURRENTLY")


def record_index(ctx: Context, table: str, node: ast.IndexStmt) -> None:
    if not node.idxname:
        return
    columns = tuple(p.name for p in node.indexParams or () if isinstance(p, ast.IndexElem) and p.name)
    if len(columns) != len(node.indexParams or ()):
        columns = ()  # an expression is indexed
    schema = present(node.relation, "index's table").schemaname
    name = f"{schema}.{node.idxname}" if schema else node.idxname
    ctx.facts.indexes[name] = IndexFact(table, columns, bool(node.unique), node.whereClause is not None)


def _has_complete_unique_index(ctx: Context, matview: str) -> bool:
    return any(ix.table == matview and ix.unique and ix.columns and not ix.partial for ix in ctx.facts.indexes.values())


def check_refresh(ctx: Context, stmt: Statement, node: ast.RefreshMatViewStmt) -> None:
    view = ctx.key(node.relation)
    if node.concurrent and view in ctx.facts.matviews and not _has_complete_unique_index(ctx, view):
        ctx.add(stmt, "refresh-concurrently-needs-unique-index", ERROR,
                f"REFRESH MATERIALIZED VIEW CONCURRENTLY {shown(node.relation)}: the view has no unique index on "
                "columns without a WHERE clause, so PostgreSQL refuses it",
                f"CREATE UNIQUE INDEX CONCURRENTLY ... ON {shown(node.relation)} (<columns>) first")
    if not node.concurrent and view not in ctx.new_tables:
        ctx.add(stmt, "require-concurrent-refresh", ERROR,
                f"REFRESH MATERIALIZED VIEW {shown(node.relation)} without CONCURRENTLY holds an ACCESS "
                "EXCLUSIVE lock: every read of the view waits until the refresh ends",
                "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view)")


def check_vacuum(ctx: Context, stmt: Statement, node: ast.VacuumStmt) -> None:
    full = def_option(node.options, "full")
    if full is not None and boolean_option(full):
        ctx.add(stmt, "table-rewrite", ERROR, "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock",
                "use plain VACUUM, or pg_repack outside the migration")


def check_cluster(ctx: Context, stmt: Statement, node: ast.ClusterStmt) -> None:
    ctx.add(stmt, "table-rewrite", ERROR, "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock",
            "remove it (pg_repack can reorder a table online)")


def check_lock(ctx: Context, stmt: Statement, node: ast.LockStmt) -> None:
    ctx.add(stmt, "explicit-lock-table", ERROR,
            "LOCK TABLE in a migration holds a lock for the whole statement sequence",
            "remove it; the runner takes no locks beyond what each statement needs")


def table_rewrite(ctx: Context, stmt: Statement, what: str) -> None:
    ctx.add(stmt, "table-rewrite", ERROR, f"{what} rewrites the table under an ACCESS EXCLUSIVE lock",
            "create a new table and copy in batches instead")


def check_set_tablespace(ctx: Context, stmt: Statement, table: str, table_shown: str) -> None:
    """Where a table lives is not part of the schema a shadow run copies: judged by the static rule alone."""
    if table not in ctx.new_tables:
        ctx.add(stmt, "set-tablespace", ERROR,
                f"ALTER TABLE {table_shown} SET TABLESPACE copies the table to the new tablespace under an ACCESS "
                "EXCLUSIVE lock", "move tables outside the migration (pg_repack can move a table online)")


def check_detach_partition(ctx: Context, stmt: Statement, table_shown: str, cmd: ast.AlterTableCmd) -> None:
    spec = cmd.def_
    if not (isinstance(spec, ast.PartitionCmd) and spec.concurrent):
        ctx.add(stmt, "require-concurrent-partition-detach", ERROR,
                f"DETACH PARTITION on {table_shown} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the "
                "partitioned table", "use DETACH PARTITION ... CONCURRENTLY")
    else:
        ctx.destructive(stmt, f"DETACH PARTITION on {table_shown}", "detach partitions in contract")
