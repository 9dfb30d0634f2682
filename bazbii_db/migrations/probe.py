"""The latency throttle's pooler probe: a light query timed through the application's pooler.

``PoolerProbe`` sends ``query`` (``SELECT 1`` by default, better one of the application's own point
reads, or a write: an ``UPDATE`` without ``RETURNING`` times commits, which a backfill's WAL slows) every
``interval_ms`` from a background thread, on its own autocommit connection through the same DSN, so the
same pooler, as the application. It is measured *while* batches run, not only between them. A probe
stuck for longer than its interval counts with its elapsed time, and as every probe its schedule would
have sent meanwhile (a stall is latency too, not "no data"); a lost connection (a pooler restart) is
retried, one long stall meanwhile; a query that fails outright stops the backfill, checkpoint kept.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Sequence

import psycopg

from bazbii_db.migrations.dsn import redact, with_params
from bazbii_db.migrations.throttle import LatencyProbeFailed

PROBE_INTERVAL_MS = 10.0  # 100 samples a second: a count of 1 % slow is plain within seconds
MIN_SAMPLES = 10  # a probe p99 of fewer samples is no reading


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


def samples_since(samples: Sequence[tuple[float, float]], since: float) -> list[float]:
    """The ms of the time-ordered (finished at, ms) samples from ``since`` on, walked from the newest back:
    a judgement costs the samples it counts, not every sample kept."""
    out = []
    for at, ms in reversed(samples):
        if at < since:
            break
        out.append(ms)
    return out


class PoolerProbe:
    """Times ``query`` every ``interval_ms`` from a background thread; keeps ``keep_s`` of samples."""

    name = "probe"
    proxy = True  # a stand-in for the application's requests (throttle.is_proxy)

    def __init__(self, dsn: str, query: str = "SELECT 1", interval_ms: float = PROBE_INTERVAL_MS,
                 keep_s: float = 15.0, min_samples: int = MIN_SAMPLES,
                 application_name: str = "bazbii-migrate latency probe"):
        self.dsn = with_params(dsn, application_name=application_name)
        self.query = query
        self.interval_s = interval_ms / 1000.0
        self.keep_s = keep_s
        self.min_samples = min_samples
        self.samples: deque[tuple[float, float]] = deque()  # (finished at, ms)
        self.backend_pid: int | None = None
        self.error: str | None = None  # the query failed: the probe stopped
        self.disconnected: str | None = None  # the connection is lost and being retried
        self._inflight_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        # no server-side prepared statements: a transaction pooler (PgBouncer < 1.21) hands the next
        # query to another server connection, where "_pg3_0" does not exist
        conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None)
        self.backend_pid = conn.info.backend_pid
        return conn

    def _execute(self, conn: psycopg.Connection) -> None:
        cur = conn.execute(self.query)
        if cur.description is not None:  # a write probe (UPDATE ... without RETURNING) has no rows
            cur.fetchall()

    def start(self) -> None:
        self._conn = conn = self._connect()
        self._execute(conn)  # fail here, on a bad query, not in the thread
        self._thread = threading.Thread(target=self._run, name="backfill-latency-probe", daemon=True)
        self._thread.start()

    def _probe_once(self) -> bool:
        """One timed query; a lost connection is retried until it works, the whole time counting as
        one probe in flight (the application cannot reach the database either). False: stopped."""
        while not self._stop.is_set():
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    self._conn = conn = self._connect()
                self._execute(conn)
                self.disconnected = None
                return True
            except psycopg.OperationalError as exc:
                self.disconnected = redact(str(exc).strip(), self.dsn)
                if self._conn is not None:
                    self._conn.close()
                self._stop.wait(max(self.interval_s, 0.05))
        return False

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                self._inflight_since = t0 = time.monotonic()
            try:
                if not self._probe_once():
                    return
            except psycopg.Error as exc:  # the query itself is wrong (syntax, permissions): no probe
                self.error = redact(str(exc).strip(), self.dsn)
                with self._lock:
                    self._inflight_since = None
                return
            t1 = time.monotonic()
            with self._lock:
                self._inflight_since = None
                self.samples.append((t1, (t1 - t0) * 1000.0))
                while self.samples and self.samples[0][0] < t1 - self.keep_s:
                    self.samples.popleft()
            next_at = max(next_at + self.interval_s, t1)  # behind schedule: probe again at once
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _check(self) -> None:
        if self.error is not None:
            raise LatencyProbeFailed(f"latency probe failed: {self.error}")

    def read(self, since: float) -> float | None:
        """The p99 of the probes finished since ``since``, or the stall of the one in flight if longer."""
        self._check()
        now = time.monotonic()
        with self._lock:
            recent = samples_since(self.samples, since)
            inflight = self._inflight_since
        p99 = percentile(recent, 99) if len(recent) >= self.min_samples else None
        stalled = (now - inflight) * 1000.0 if inflight is not None and now - inflight > self.interval_s else None
        readings = [r for r in (p99, stalled) if r is not None]
        return max(readings) if readings else None

    def count_slow(self, since: float, limit_ms: float) -> tuple[int, int]:
        """(probes slower than ``limit_ms``, all probes) finished since ``since``. A probe in flight for
        longer than the limit counts as every probe its schedule would have sent meanwhile, all slow:
        the application's requests wait behind the same stall."""
        self._check()
        now = time.monotonic()
        with self._lock:
            recent = samples_since(self.samples, since)
            inflight = self._inflight_since
        slow = sum(ms > limit_ms for ms in recent)
        if inflight is not None and (now - inflight) * 1000.0 > limit_ms:
            missed = int((now - max(inflight, since)) / self.interval_s) + 1
            return slow + missed, len(recent) + missed
        return slow, len(recent)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None and not self._conn.closed:
            if self._thread is not None and self._thread.is_alive():
                self._conn.cancel_safe(timeout=2)
                self._thread.join(timeout=5)
            self._conn.close()
