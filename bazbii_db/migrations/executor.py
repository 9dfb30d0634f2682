"""Running DDL statements: timeouts, bounded jittered retries on lock timeout, CIC repair.

Every statement runs on its own in autocommit on the DDL connection, which has
``lock_timeout`` and ``statement_timeout`` set. A statement that cannot get its lock within
``lock_timeout`` fails with SQLSTATE 55P03 *instead of waiting in the lock queue*, so other
sessions' reads and writes queue behind it for at most ``lock_timeout``. It is then retried
after a jittered exponential backoff, up to ``max_attempts``.

``CREATE INDEX CONCURRENTLY``: a failed build leaves an INVALID index behind, and re-running
the same statement with ``IF NOT EXISTS`` would "succeed" while the index stays INVALID. Before
each build the executor looks the index up in pg_index; an INVALID one is dropped (``DROP INDEX
CONCURRENTLY``) and rebuilt. After a build the index must be valid. When a build fails for a
reason other than a lock timeout, its INVALID leftover is dropped at once, because an invalid
unique index still enforces uniqueness on new rows.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

import psycopg
from pglast import ast
from psycopg import errors, sql

from bazbii_db.migrations.errors import LockRetryExhausted, StatementFailed
from bazbii_db.sql_safety import walk
from bazbii_db.sql_safety.parsing import present, relname
from bazbii_db.sql_safety.timeouts import RUNNER_LOCK_TIMEOUT_MS

log = logging.getLogger("bazbii_db.migrations")


@dataclass
class DdlConfig:
    lock_timeout_ms: int = RUNNER_LOCK_TIMEOUT_MS  # files may lower it, never raise it (the analysis checks)
    statement_timeout_ms: int = 600_000
    max_attempts: int = 10
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0


@dataclass
class ExecStats:
    attempts: int = 0
    lock_timeouts: int = 0
    repaired_indexes: list[str] = field(default_factory=list)


def configure_session(conn: psycopg.Connection, lock_timeout_ms: int, statement_timeout_ms: int) -> None:
    conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 (f"{int(lock_timeout_ms)}ms", f"{int(statement_timeout_ms)}ms"))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniformly in [d/2, d], d = min(cap, base * 2**attempt)."""
    d = min(cap, base * (2 ** attempt))
    return d / 2 + rng.random() * d / 2


def relations_of(node) -> list[tuple[str | None, str]]:
    return [(rv.schemaname, relname(rv)) for rv in walk(node) if isinstance(rv, ast.RangeVar)]


def lock_holders(conn: psycopg.Connection, relations: list[tuple[str | None, str]]) -> list[dict]:
    names = [sql.Identifier(*(p for p in rel if p)).as_string(conn) for rel in relations]
    if not names:
        return []
    rows = conn.execute(
        """
        SELECT DISTINCT a.pid, coalesce(a.application_name, ''), a.state, l.mode,
               round(extract(epoch FROM now() - a.xact_start)::numeric, 1), left(a.query, 120)
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.granted AND l.locktype = 'relation' AND a.pid <> pg_backend_pid()
           AND l.relation = ANY (SELECT to_regclass(n) FROM unnest(%s::text[]) AS n)
        """,
        (names,),
    ).fetchall()
    return [dict(pid=r[0], application_name=r[1], state=r[2], mode=r[3], xact_seconds=float(r[4] or 0),
                 query=r[5]) for r in rows]


def _describe_blockers(blockers: list[dict]) -> str:
    return "; ".join(f"pid {b['pid']} ({b['application_name'] or 'no application_name'}, {b['state']}, "
                     f"{b['mode']}, transaction open {b['xact_seconds']}s)" for b in blockers) or "none visible"


class DdlExecutor:
    def __init__(self, conn: psycopg.Connection, config: DdlConfig, rng: random.Random | None = None):
        if not conn.autocommit:
            raise ValueError("DDL runs in autocommit (CREATE INDEX CONCURRENTLY cannot run in a transaction)")
        self.conn = conn
        self.config = config
        self.rng = rng or random.Random()
        configure_session(conn, config.lock_timeout_ms, config.statement_timeout_ms)

    # --- CIC support -----------------------------------------------------------------
    def _index_state(self, node: ast.IndexStmt) -> tuple[str, bool] | None:
        """(schema, indisvalid) of the index this statement builds, if it exists."""
        relation = present(node.relation, "index's table")
        table = sql.Identifier(*(p for p in (relation.schemaname, relname(relation)) if p))
        row = self.conn.execute(
            """
            SELECT n.nspname, i.indisvalid
              FROM pg_index i
              JOIN pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_namespace n ON n.oid = ic.relnamespace
             WHERE ic.relname = %s AND i.indrelid = to_regclass(%s)
            """,
            (node.idxname, table.as_string(self.conn)),
        ).fetchone()
        return (row[0], bool(row[1])) if row else None

    def _drop_invalid_index(self, node: ast.IndexStmt, stats: ExecStats, label: str) -> None:
        state = self._index_state(node)
        if state is None or state[1]:
            return
        schema, index = state[0], present(node.idxname, "index name")  # found by it: the index has one
        log.warning("%s: index %s.%s is INVALID (left by a failed build); dropping it to rebuild",
                    label, schema, index)
        self._run_with_retry(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            sql.Identifier(schema, index)), label + " (drop invalid index)", [], stats)
        stats.repaired_indexes.append(f"{schema}.{index}")

    # --- execution ----------------------------------------------------------------------
    def _run_with_retry(self, query, label: str, relations, stats: ExecStats, before_attempt=None) -> None:
        cfg = self.config
        for attempt in range(cfg.max_attempts):
            if before_attempt is not None:
                before_attempt()
            stats.attempts += 1
            try:
                self.conn.execute(query)
                return
            except errors.LockNotAvailable:
                stats.lock_timeouts += 1
                if attempt + 1 >= cfg.max_attempts:
                    break
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, self.rng)
                log.info("%s: lock not granted within %dms (55P03), attempt %d/%d; retrying in %.2fs",
                         label, cfg.lock_timeout_ms, attempt + 1, cfg.max_attempts, delay)
                time.sleep(delay)
        blockers = lock_holders(self.conn, relations)
        raise LockRetryExhausted(
            f"{label}: could not get its lock within lock_timeout={cfg.lock_timeout_ms}ms in {cfg.max_attempts} "
            f"attempts; sessions holding locks on the table: {_describe_blockers(blockers)}",
            cfg.max_attempts, blockers)

    def execute(self, text: str, node=None, label: str = "<sql>") -> ExecStats:
        """Run one statement (``node`` is its pglast parse tree, if known)."""
        stats = ExecStats()
        relations = relations_of(node) if node is not None else []
        is_cic = isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname
        before = (lambda: self._drop_invalid_index(node, stats, label)) if is_cic else None
        try:
            self._run_with_retry(text, label, relations, stats, before_attempt=before)
        except psycopg.Error as exc:
            if is_cic:
                try:
                    self._drop_invalid_index(node, stats, label)
                except psycopg.Error:
                    log.exception("%s: could not drop the INVALID index left by the failed build", label)
            diag = exc.diag
            detail = f" ({diag.message_detail})" if diag and diag.message_detail else ""
            raise StatementFailed(f"{label}: {exc.sqlstate or ''} {str(exc).strip()}{detail}", exc.sqlstate) from None
        if is_cic:
            state = self._index_state(node)
            if state is None or not state[1]:
                raise StatementFailed(f"{label}: index {node.idxname} is not valid after CREATE INDEX CONCURRENTLY",
                                      None)
        return stats
