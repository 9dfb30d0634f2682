"""Shared by tests/db_replication and bench/bench_switchover.py: a local primary + pg_basebackup
replica + PgBouncer topology, and a bounded multi-threaded write load that records every
acknowledged commit.

Everything runs on 127.0.0.1; the load refuses any other host and caps threads and duration.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict


from testsupport.localcluster import (SERVICE_USER, LocalCluster, LocalPgBouncer, make_workdir,
                                    remove_workdir)

APP_USER = "app"
APP_PASSWORD = "app-test-password"
APP_DB = "appdb"
ALIAS = "app"
SLOT = "server3_replica"
ACCOUNTS = 64
MAX_THREADS = 16
MAX_DURATION = 600.0  # the engine walk's switchover update took over 2 min on a busy CI machine
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# What WriteLoad writes to (created by its owner, e.g. an application user that owns the database).
LOAD_TABLES = f"""
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0, note text);
CREATE TABLE ledger (id bigserial PRIMARY KEY, writer int NOT NULL, seq int NOT NULL,
                     at timestamptz NOT NULL DEFAULT now(), UNIQUE (writer, seq));
INSERT INTO accounts (id) SELECT g FROM generate_series(1, {ACCOUNTS}) g;
"""
SCHEMA = LOAD_TABLES + f"""
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_USER};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_USER};
"""


@dataclass
class Topology:
    workdir: Path
    primary: LocalCluster
    replica: LocalCluster
    bouncer: LocalPgBouncer | None
    slot: str = SLOT
    alias: str = ALIAS

    def superuser_dsn(self, cluster: LocalCluster, dbname: str = APP_DB) -> str:
        return cluster.dsn(dbname=dbname)

    def app_dsn(self) -> str:
        """Through PgBouncer, as the application role."""
        assert self.bouncer is not None
        return self.bouncer.dsn(self.alias, APP_USER, APP_PASSWORD)

    def direct_app_dsn(self, cluster: LocalCluster) -> str:
        return cluster.dsn(dbname=APP_DB, user=APP_USER, password=APP_PASSWORD)

    def teardown(self) -> None:
        try:
            if self.bouncer is not None:
                self.bouncer.stop()
        finally:
            for cluster in (self.replica, self.primary):
                try:
                    cluster.stop(mode="immediate", timeout=30)
                except Exception:
                    pass
            remove_workdir(self.workdir)


def build_topology(*, with_bouncer: bool = True, start_replica: bool = True, slot: str = SLOT,
                   bouncer_settings: dict[str, str] | None = None) -> Topology:
    """Fresh primary (with the app schema), a pg_basebackup -R -C -S replica, and a PgBouncer."""
    workdir = make_workdir("bazbii-repl-")
    primary = replica = bouncer = None
    try:
        # Sockets outside the data directories (as on Debian): pg_rewind copies data directories
        # file by file and cannot read a socket. wal_log_hints lets the retired primary be
        # re-attached with pg_rewind.
        sockets = workdir / "sockets"
        sockets.mkdir()
        _give_to_service_user(sockets)
        primary = LocalCluster.init(workdir, "primary", wal_log_hints="on", wal_keep_size="'64MB'",
                                    unix_socket_directories=f"'{sockets}'")
        primary.start()
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {APP_DB} OWNER postgres")
        with psycopg.connect(primary.dsn(dbname=APP_DB), autocommit=True) as conn:
            conn.execute(SCHEMA)
        replica = primary.basebackup_replica(workdir, "replica", slot)
        if start_replica:
            replica.start()
        if with_bouncer:
            settings = {"default_pool_size": "20", "max_client_conn": "200", "server_connect_timeout": "5",
                        "query_wait_timeout": "30"}
            settings.update(bouncer_settings or {})
            bouncer = LocalPgBouncer.create(
                workdir,
                users={APP_USER: APP_PASSWORD, "postgres": primary.password},
                databases={ALIAS: f"host=127.0.0.1 port={primary.port} dbname={APP_DB}"},
                **settings)
            bouncer.start()
        return Topology(workdir=workdir, primary=primary, replica=replica, bouncer=bouncer, slot=slot)
    except BaseException:
        Topology(workdir=workdir, primary=primary or LocalCluster(workdir / "x", 0),
                 replica=replica or LocalCluster(workdir / "y", 0), bouncer=bouncer).teardown()
        raise


def _give_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVICE_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def wait_streaming(topo: Topology, timeout: float = 30.0) -> None:
    from bazbii_db.replication import verify_streaming
    verify_streaming(topo.primary.dsn(), topo.slot, timeout=timeout)


# --- load -------------------------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback  # 127.0.0.0/8 (the twin's servers too) and ::1
    except ValueError:
        return host in LOOPBACK


def _assert_loopback(dsn: str) -> None:
    params = conninfo_to_dict(dsn)
    hosts = [h.strip() for h in str(params.get("host", "")).split(",")]
    bad = [h for h in hosts if not _is_loopback(h)]
    if bad or not hosts:
        raise ValueError(f"load generator only targets loopback, refusing hosts {bad or hosts}")


@dataclass
class LoadResult:
    acked: list[tuple[int, int, float]] = field(default_factory=list)   # writer, seq, ack time
    failed: list[tuple[float, str]] = field(default_factory=list)       # time, error
    in_doubt: list[tuple[int, int]] = field(default_factory=list)       # commit sent, outcome unknown
    refused_connects: int = 0
    started_at: float = 0.0
    stopped_at: float = 0.0

    def ack_times(self) -> list[float]:
        return sorted(t for _, _, t in self.acked)

    def max_stall(self, start: float | None = None, end: float | None = None) -> tuple[float, float]:
        """Longest gap (seconds) between consecutive acknowledged commits, and where it began."""
        times = [t for t in self.ack_times() if (start is None or t >= start) and (end is None or t <= end)]
        best, at = 0.0, 0.0
        for a, b in zip(times, times[1:]):
            if b - a > best:
                best, at = b - a, a
        return best, at

    def stall_during(self, start: float, end: float) -> float:
        """Longest gap between acknowledged commits that overlaps ``start``..``end``; the load's end counts as
        the next ack, so traffic that never came back is a stall too."""
        times = self.ack_times() + [self.stopped_at]
        return max((b - a for a, b in zip(times, times[1:]) if b >= start and a <= end), default=float("inf"))

    @property
    def tps(self) -> float:
        span = self.stopped_at - self.started_at
        return len(self.acked) / span if span > 0 else 0.0


class WriteLoad:
    """``threads`` writers, each looping UPDATE + SELECT + INSERT(ledger) transactions until stopped.

    Every acknowledged commit is recorded with its (writer, seq) key so it can be looked up on the
    new primary afterwards. Errors are counted as failed transactions (an error on COMMIT itself is
    'in doubt'); the writer then reconnects and carries on. Bounded: at most MAX_THREADS threads,
    stopped after ``max_seconds`` at the latest, loopback only.
    """

    def __init__(self, dsn: str, *, threads: int = 8, max_seconds: float = 60.0, reconnect_pause: float = 0.005):
        _assert_loopback(dsn)
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be 1..{MAX_THREADS}")
        if not 0 < max_seconds <= MAX_DURATION:  # refused, not cut: a load that quietly stopped early read as a stall
            raise ValueError(f"max_seconds must be in (0, {MAX_DURATION:g}]")
        self.dsn = dsn
        self.threads = threads
        self.max_seconds = max_seconds
        self.reconnect_pause = reconnect_pause
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> "WriteLoad":
        self.result.started_at = time.monotonic()
        self._deadline = self.result.started_at + self.max_seconds
        for writer in range(1, self.threads + 1):
            thread = threading.Thread(target=self._run, args=(writer,), name=f"writer-{writer}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)
        self.result.stopped_at = time.monotonic()
        return self.result

    def wait_acked(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.result.acked) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        if len(self.result.acked) < count:
            ended = " (the load had reached its max_seconds)" if time.monotonic() >= self._deadline else ""
            raise TimeoutError(f"only {len(self.result.acked)} commits acknowledged in {timeout} s{ended}")

    def _connect(self) -> psycopg.Connection | None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                return psycopg.connect(self.dsn, autocommit=False, prepare_threshold=None, connect_timeout=2)
            except psycopg.Error:
                with self._lock:
                    self.result.refused_connects += 1
                time.sleep(self.reconnect_pause)
        return None

    def _run(self, writer: int) -> None:
        seq = 0
        conn = self._connect()
        try:
            while conn is not None and not self._stop.is_set() and time.monotonic() < self._deadline:
                seq += 1
                committing = False
                try:
                    conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (writer,))
                    conn.execute("SELECT balance FROM accounts WHERE id = %s", (writer,)).fetchone()
                    conn.execute("INSERT INTO ledger (writer, seq) VALUES (%s, %s)", (writer, seq))
                    committing = True
                    conn.commit()
                    now = time.monotonic()
                    with self._lock:
                        self.result.acked.append((writer, seq, now))
                except psycopg.Error as exc:
                    now = time.monotonic()
                    with self._lock:
                        self.result.failed.append((now, f"{type(exc).__name__}: {str(exc).strip()[:200]}"))
                        if committing:
                            self.result.in_doubt.append((writer, seq))
                    try:
                        if conn.closed or conn.broken:
                            raise psycopg.OperationalError("broken")
                        conn.rollback()
                    except psycopg.Error:
                        try:
                            conn.close()
                        except Exception:
                            pass
                        time.sleep(self.reconnect_pause)
                        conn = self._connect()
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    pass


def hold_open(topo: Topology, application_name: str = "held-open-client") -> psycopg.Connection:
    """A client that begins a write transaction through PgBouncer and then holds it open (idle in
    transaction, holding a server connection), as a client that hangs mid-transaction does. It writes
    ``ledger`` row (700, 1); commit or close the connection to end it."""
    conn = psycopg.connect(topo.app_dsn(), application_name=application_name, autocommit=False,
                           prepare_threshold=None, connect_timeout=5)
    conn.execute("INSERT INTO ledger (writer, seq) VALUES (700, 1)")
    return conn


def missing_acked(dsn: str, result: LoadResult) -> list[tuple[int, int]]:
    """Acknowledged (writer, seq) pairs that are not in ``ledger`` on the server at ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        present = set(conn.execute("SELECT writer, seq FROM ledger").fetchall())
    return [(w, s) for w, s, _ in result.acked if (w, s) not in present]
