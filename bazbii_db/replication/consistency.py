"""Primary vs replica data comparison at a known WAL position.

For each table: row count plus an order-independent checksum (two 64-bit sums of
per-row md5 halves, kept in ``numeric`` so they never overflow). The text form
of each row is made deterministic by pinning the session's output settings.

How "at a known LSN" works while the service keeps writing:

1. Primary, snapshot A (REPEATABLE READ): checksums, then ``L1 =
   pg_current_wal_insert_lsn()``: every commit visible in A is in WAL before L1.
2. Replica: wait until ``pg_last_wal_replay_lsn() >= L1`` (bounded), then a
   REPEATABLE READ snapshot R: checksums and the replay LSN it was taken at.
3. Primary, snapshot B, only for tables where R differs from A.

A table is *equal* when R matches A (state at L1) or B (state at L2 >= R's LSN).
It *differs* when A == B (the table did not change on the primary across the
whole interval) yet R is different: that is a real divergence. When A != B and R
matches neither, the table was being written during the check: it is retried
(fresh snapshots) and reported as *unverified* if it never settles. A divergence
must be seen in two attempts (or on the last one) before it is reported, which
absorbs the sub-millisecond window where a replica replays a commit record
before the primary's snapshot shows it.

Unlogged and temporary tables are not replicated and are skipped (listed).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal, overload

import psycopg
from psycopg import sql

from bazbii_db.rows import one_row, one_value

from ._conn import connect, dsn_target
from .lag import primary_lsn, replay_lsn, wait_for_replay
from .lsn import format_lsn

_SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
)

_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relpersistence
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
 ORDER BY 1, 2
"""

TableName = tuple[str, str]
Digest = tuple[int, str]  # (row count, checksum)


@dataclass
class TableResult:
    table: str
    status: str                      # equal | differs | unverified | missing_on_replica | missing_on_primary
    primary_rows: int | None = None
    replica_rows: int | None = None
    primary_checksum: str | None = None
    replica_checksum: str | None = None
    at_lsn: str | None = None


@dataclass
class ConsistencyReport:
    passed: bool
    checked_lsn: str | None          # L1 of the first attempt: the replica had replayed past it
    replica_replay_lsn: str | None
    tables_compared: int
    equal: list[str]
    differing: list[TableResult]
    unverified: list[TableResult]
    skipped_unlogged: list[str]
    attempts: int
    elapsed_seconds: float
    primary: str = ""
    replica: str = ""
    error: str = ""
    details: list[TableResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        verdict = "CONSISTENT" if self.passed else "INCONSISTENT"
        lines = [f"consistency {verdict}: {self.tables_compared} tables of {self.primary} vs {self.replica}, "
                 f"checked at LSN {self.checked_lsn} (replica replayed to {self.replica_replay_lsn}), "
                 f"{self.attempts} attempt(s), {self.elapsed_seconds:.2f} s"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for item in self.differing:
            lines.append(f"  DIFFERS {item.table}: primary rows={item.primary_rows} sum={item.primary_checksum}; "
                         f"replica rows={item.replica_rows} sum={item.replica_checksum}")
        for item in self.unverified:
            lines.append(f"  UNVERIFIED {item.table}: changed on the primary during every attempt")
        if self.skipped_unlogged:
            lines.append("  skipped (unlogged, not replicated): " + ", ".join(self.skipped_unlogged))
        return "\n".join(lines)


def _qualified(name: TableName) -> str:
    return f"{name[0]}.{name[1]}"


def _table_name(text: str) -> TableName:
    """``schema.table`` (split at the first dot), or ``table`` in ``public``."""
    schema, dot, table = text.partition(".")
    return (schema, table) if dot else ("public", text)


def _list_tables(conn: psycopg.Connection) -> tuple[list[TableName], list[TableName]]:
    logged: list[TableName] = []
    unlogged: list[TableName] = []
    for schema, table, persistence in conn.execute(_TABLES_SQL).fetchall():
        (logged if persistence == "p" else unlogged).append((schema, table))
    return logged, unlogged


def table_digest_query(name: TableName) -> sql.Composed:
    """``count(*)`` plus two 64-bit sums of md5 halves of each row's text: order-independent."""
    return sql.SQL(
        "SELECT count(*),"
        " coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text || ':' ||"
        " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text"
        " FROM (SELECT md5(t::text) AS h FROM {} AS t) AS rows"
    ).format(sql.Identifier(*name))


@overload
def _digests(conn: psycopg.Connection, tables: list[TableName], *, on_primary: Literal[True]
             ) -> tuple[dict[TableName, Digest], int]: ...


@overload
def _digests(conn: psycopg.Connection, tables: list[TableName], *, on_primary: Literal[False]
             ) -> tuple[dict[TableName, Digest], int | None]: ...


def _digests(conn: psycopg.Connection, tables: list[TableName], *, on_primary: bool
             ) -> tuple[dict[TableName, Digest], int | None]:
    """Checksums of ``tables`` in one REPEATABLE READ snapshot, plus the WAL position that bounds it
    (a primary always has one; a replica that never replayed anything has none)."""
    out: dict[TableName, Digest] = {}
    lsn: int | None
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if on_primary:
            # The snapshot is taken by the first query; every commit it sees is in WAL before this position.
            conn.execute("SELECT 1").fetchone()
            for name in tables:
                count, checksum = one_row(conn, table_digest_query(name))
                out[name] = (count, checksum)
            lsn = primary_lsn(conn, "insert")
        else:
            # First query takes the snapshot; the replay position read with it bounds what it contains.
            lsn = replay_lsn(conn)
            for name in tables:
                count, checksum = one_row(conn, table_digest_query(name))
                out[name] = (count, checksum)
    return out, lsn


def check_consistency(primary_dsn: str, replica_dsn: str, *, tables: list[str] | None = None,
                      schemas: list[str] | None = None, attempts: int = 3, catchup_timeout: float = 30.0,
                      statement_timeout_ms: int = 600_000) -> ConsistencyReport:
    """Compare row counts and checksums of every logged table (or ``tables`` / ``schemas``)."""
    start = time.monotonic()
    attempts = max(1, attempts)
    report = ConsistencyReport(passed=False, checked_lsn=None, replica_replay_lsn=None, tables_compared=0,
                               equal=[], differing=[], unverified=[], skipped_unlogged=[], attempts=0,
                               elapsed_seconds=0.0, primary=dsn_target(primary_dsn), replica=dsn_target(replica_dsn))
    primary = connect(primary_dsn, application_name="bazbii-consistency")
    replica = connect(replica_dsn, application_name="bazbii-consistency")
    try:
        for conn in (primary, replica):
            for stmt in _SESSION_SETTINGS:
                conn.execute(stmt)
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms))))
        if one_value(primary, "SELECT pg_is_in_recovery()"):
            report.error = "the 'primary' DSN points at a server in recovery"
            return report
        if not one_value(replica, "SELECT pg_is_in_recovery()"):
            report.error = "the 'replica' DSN points at a server that is not in recovery"
            return report

        p_logged, p_unlogged = _list_tables(primary)
        # The replica lists its tables once it has replayed what the primary had when it listed its own: a
        # table created just before the check is not "missing on the replica" because of replication lag.
        listed_at = primary_lsn(primary, "insert")
        reached, replayed, _ = wait_for_replay(replica, listed_at, timeout=catchup_timeout, poll_interval=0.005)
        if not reached:
            report.error = (f"replica did not replay past {format_lsn(listed_at)} within {catchup_timeout:g} s "
                            f"(at {format_lsn(replayed)}); nothing compared")
            return report
        r_logged, _ = _list_tables(replica)
        wanted = set(p_logged) | set(r_logged)
        if tables:
            requested = {_table_name(t) for t in tables}
            wanted &= requested
            for missing in sorted(requested - set(p_logged) - set(r_logged)):
                report.differing.append(TableResult(table=_qualified(missing), status="missing_on_primary"))
        if schemas:
            wanted = {t for t in wanted if t[0] in set(schemas)}
        report.skipped_unlogged = [_qualified(t) for t in p_unlogged
                                   if (not schemas or t[0] in schemas)]
        only_primary = sorted(t for t in wanted if t not in set(r_logged))
        only_replica = sorted(t for t in wanted if t not in set(p_logged))
        for name in only_primary:
            report.differing.append(TableResult(table=_qualified(name), status="missing_on_replica"))
        for name in only_replica:
            report.differing.append(TableResult(table=_qualified(name), status="missing_on_primary"))
        pending = sorted(t for t in wanted if t in set(p_logged) and t in set(r_logged))
        report.tables_compared = len(pending) + len(only_primary) + len(only_replica)

        suspected: dict[TableName, int] = {}
        last_seen: dict[TableName, TableResult] = {}
        for attempt in range(1, attempts + 1):
            if not pending:
                break
            report.attempts = attempt
            digest_a, l1 = _digests(primary, pending, on_primary=True)
            if report.checked_lsn is None:
                report.checked_lsn = format_lsn(l1)
            reached, replayed, _ = wait_for_replay(replica, l1, timeout=catchup_timeout, poll_interval=0.005)
            if not reached:
                report.error = (f"replica did not replay past {format_lsn(l1)} within {catchup_timeout:g} s "
                                f"(at {format_lsn(replayed)}); nothing compared in attempt {attempt}")
                break
            try:
                digest_r, r_lsn = _digests(replica, pending, on_primary=False)
            except psycopg.errors.SerializationFailure:  # cancelled by a recovery conflict: try again
                continue
            report.replica_replay_lsn = format_lsn(r_lsn)
            mismatched = [t for t in pending if digest_r[t] != digest_a[t]]
            digest_b, l2 = _digests(primary, mismatched, on_primary=True) if mismatched else ({}, l1)
            still: list[TableName] = []
            for name in pending:
                a, r = digest_a[name], digest_r[name]
                if r == a:
                    report.equal.append(_qualified(name))
                    continue
                b = digest_b[name]
                if r == b:
                    report.equal.append(_qualified(name))
                    continue
                result = TableResult(table=_qualified(name), status="differs", primary_rows=b[0], replica_rows=r[0],
                                     primary_checksum=b[1], replica_checksum=r[1], at_lsn=format_lsn(l2))
                if a == b:
                    suspected[name] = suspected.get(name, 0) + 1
                    if suspected[name] >= 2 or attempt == attempts:
                        report.differing.append(result)
                        continue
                else:
                    result.status = "unverified"
                last_seen[name] = result
                still.append(name)
            pending = still
        for name in pending:
            item = last_seen.get(name) or TableResult(table=_qualified(name), status="unverified")
            item.status = "unverified"
            report.unverified.append(item)
        report.passed = not report.error and not report.differing and not report.unverified
        report.details = report.differing + report.unverified
        return report
    finally:
        report.elapsed_seconds = time.monotonic() - start
        primary.close()
        replica.close()
