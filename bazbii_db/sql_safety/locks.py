"""Statements whose lock blocks readers or writers for as long as they run, and table rewrites.

Exempt: relations created earlier in the same file (nothing else can use them yet), unless they
were created with IF NOT EXISTS (which leaves an existing table in place).
"""

from __future__ import annotations

from pglast import ast

from .facts import Context
from .findings import ERROR
from .parsing import Statement, def_option, shown, table_key


def check_create_index(ctx: Context, stmt: Statement, node: ast.IndexStmt) -> None:
    if not node.concurrent and table_key(node.relation) not in ctx.new_tables:
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


def check_refresh(ctx: Context, stmt: Statement, node: ast.RefreshMatViewStmt) -> None:
    if not node.concurrent and table_key(node.relation) not in ctx.new_tables:
        ctx.add(stmt, "require-concurrent-refresh", ERROR,
                f"REFRESH MATERIALIZED VIEW {shown(node.relation)} without CONCURRENTLY holds an ACCESS "
                "EXCLUSIVE lock: every read of the view waits until the refresh ends",
                "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index on the view)")


def check_vacuum(ctx: Context, stmt: Statement, node: ast.VacuumStmt) -> None:
    if def_option(node.options, "full") is not None:
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


def check_detach_partition(ctx: Context, stmt: Statement, table_shown: str, cmd: ast.AlterTableCmd) -> None:
    spec = cmd.def_
    if not (isinstance(spec, ast.PartitionCmd) and spec.concurrent):
        ctx.add(stmt, "require-concurrent-partition-detach", ERROR,
                f"DETACH PARTITION on {table_shown} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the "
                "partitioned table", "use DETACH PARTITION ... CONCURRENTLY")
    else:
        ctx.destructive(stmt, f"DETACH PARTITION on {table_shown}", "detach partitions in contract")
