"""Shared pieces of the schema-migration benchmark: a throwaway cluster and an open-loop OLTP load.

The load runs in separate processes (no GIL shared with the code under test). Each worker
issues transactions on a fixed schedule (open loop): latency is measured from the *scheduled*
start, so a stall shows up as latency for every request that should have started during it
(no coordinated omission). Each sample keeps its scheduled start, so a result can be cut to the
stretch of time a backfill actually ran (``LoadResult.between``).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections import deque
from dataclasses import dataclass

import psycopg

from bazbii_db.migrations.throttle import overlap_by_bin, p99_since, percentile, slow_by_bin
from testsupport.localcluster import LocalCluster, make_workdir, remove_workdir

BENCH_CONF = {
    "shared_buffers": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "wal_compression": "off",
    "log_min_messages": "warning",
}


def start_cluster() -> tuple[LocalCluster, object]:
    workdir = make_workdir("bazbii-bench-schema-")
    cluster = LocalCluster.init(workdir, "primary", **BENCH_CONF)
    cluster.start()
    return cluster, workdir


def stop_cluster(cluster: LocalCluster, workdir) -> None:
    cluster.stop(mode="immediate")
    remove_workdir(workdir)


def _worker(dsn: str, table: str, max_id: int, rate: float, seconds: float, start_at: float, index: int, conn_out,
            stop, update_ratio: float = 0.2, live=None):
    rng = random.Random(1000 + index)  # the same requests in every run
    samples: list[tuple[float, float]] = []  # (scheduled start, epoch s; latency ms)
    select = f"SELECT title, category FROM {table} WHERE id = %s"
    update = f"UPDATE {table} SET updated_at = now() WHERE id = %s"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        interval = 1.0 / rate
        while time.time() < start_at:
            time.sleep(0.001)
        n = 0
        t_end = start_at + seconds
        while True:
            scheduled = start_at + n * interval
            if scheduled >= t_end or stop.is_set():
                break
            now = time.time()
            if scheduled > now:
                time.sleep(scheduled - now)
            key = rng.randint(1, max_id)
            if rng.random() >= update_ratio:
                conn.execute(select, (key,)).fetchone()
            else:
                conn.execute(update, (key,))
            ms = (time.time() - scheduled) * 1000.0
            samples.append((scheduled, ms))
            if live is not None:  # the application's latency as it happens (LoadLatency)
                live.record(index, time.monotonic(), ms)
            n += 1
    conn_out.send(samples)
    conn_out.close()


@dataclass
class LoadResult:
    samples: list[tuple[float, float]]  # (scheduled start, epoch s; latency ms)
    seconds: float

    @property
    def latencies_ms(self) -> list[float]:
        return [ms for _, ms in self.samples]

    def between(self, start: float, end: float) -> "LoadResult":
        """Only the transactions scheduled in [start, end) (epoch seconds)."""
        return LoadResult([(t, ms) for t, ms in self.samples if start <= t < end], max(0.0, end - start))

    def __add__(self, other: "LoadResult") -> "LoadResult":
        return LoadResult(self.samples + other.samples, self.seconds + other.seconds)

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def tps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


class LiveLatencies:
    """Each worker's finished transactions, (monotonic time, ms), in a ring of shared memory: a
    plain store per transaction, no pipe or feeder thread (which cost the load itself latency)."""

    CAPACITY = 1 << 14  # per worker: 65 s at the bench's 250 tx/s; a slower reader loses only the oldest

    def __init__(self, workers: int):
        ctx = mp.get_context("fork")
        self.workers = workers
        self.values = ctx.RawArray("d", workers * self.CAPACITY * 2)
        self.counts = ctx.RawArray("q", workers)

    def record(self, worker: int, at: float, ms: float) -> None:
        n = self.counts[worker]
        slot = (worker * self.CAPACITY + n % self.CAPACITY) * 2
        self.values[slot], self.values[slot + 1] = at, ms
        self.counts[worker] = n + 1  # after the values: a reader never sees a slot before it is written

    def read_new(self, seen: list[int]) -> list[tuple[float, float]]:
        """The samples recorded since ``seen`` (per worker counts, updated in place)."""
        out = []
        for w in range(self.workers):
            n = self.counts[w]
            for k in range(max(seen[w], n - self.CAPACITY), n):
                slot = (w * self.CAPACITY + k % self.CAPACITY) * 2
                out.append((self.values[slot], self.values[slot + 1]))
            seen[w] = n
        return out


class LoadLatency:
    """A latency source (``bazbii_db.migrations.throttle.LatencySource``) reading the load's own
    transactions as they finish: the application's p99, as Prometheus gives it in production, but
    without a scrape interval. Its reading is the p99 of the transactions finished since ``since``
    (it keeps the last ``max(window_s, 30 s)``), once there are ``min_samples`` of them."""

    name = "app"

    def __init__(self, live: LiveLatencies, window_s: float = 2.0, min_samples: int = 100):
        self.live, self.window_s, self.min_samples = live, window_s, min_samples
        self.samples: deque[tuple[float, float]] = deque()
        self._seen = [0] * live.workers

    def start(self) -> None:
        pass

    def _refresh(self) -> None:
        new = self.live.read_new(self._seen)
        # kept in time order (the throttle walks them from the newest back): a worker's transaction
        # that finished before the last one read, but was recorded after it, is merged in
        first = min(new)[0] if new else None
        while first is not None and self.samples and self.samples[-1][0] > first:
            new.append(self.samples.pop())
        self.samples.extend(sorted(new))
        horizon = time.monotonic() - max(self.window_s, 30.0)
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()

    def read(self, since: float) -> float | None:
        self._refresh()
        return p99_since(self.samples, since, self.min_samples)

    def count_slow(self, since: float, limit_ms: float, bin_s: float) -> list[list[int]]:
        """[transactions slower than ``limit_ms``, all] per ``bin_s``, finished from ``since`` on."""
        self._refresh()
        return slow_by_bin(self.samples, since, limit_ms, bin_s)

    def count_overlap(self, since: float, limit_ms: float, bin_s: float, spans) -> list[list[int]]:
        """[slow busy, busy, slow idle, idle] per ``bin_s``, finished from ``since`` on: busy ones
        overlapped one of the batches' (start, end) ``spans``, timed from their scheduled start."""
        self._refresh()
        return overlap_by_bin(self.samples, since, limit_ms, bin_s, spans)

    def close(self) -> None:
        pass


class OltpLoad:
    """``workers`` processes, ``rate`` transactions/s each (80 % point SELECT, 20 % point UPDATE).
    With ``live``, each transaction's latency is also streamed as it finishes (``latency_source()``)."""

    def __init__(self, dsn: str, table: str, max_id: int, workers: int = 4, rate: float = 100.0,
                 update_ratio: float = 0.2, live: bool = False):
        self.dsn, self.table, self.max_id, self.workers, self.rate = dsn, table, max_id, workers, rate
        self.update_ratio = update_ratio
        self._procs: list[tuple[mp.Process, object]] = []
        self.seconds = 0.0
        self._live = LiveLatencies(workers) if live else None

    def latency_source(self, window_s: float = 2.0, min_samples: int = 100) -> LoadLatency:
        if self._live is None:
            raise ValueError("OltpLoad(live=True) streams its latencies; this one does not")
        return LoadLatency(self._live, window_s, min_samples)

    def start(self, seconds: float) -> None:
        """Run for ``seconds`` at most; ``join()`` earlier stops it."""
        ctx = mp.get_context("fork")
        self._stop = ctx.Event()
        start_at = time.time() + 0.5
        self._start_at = start_at
        for i in range(self.workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(self.dsn, self.table, self.max_id, self.rate, seconds, start_at,
                                                     i, send, self._stop, self.update_ratio, self._live),
                              daemon=True)
            proc.start()
            self._procs.append((proc, recv))
        time.sleep(0.5)

    def join(self) -> LoadResult:
        self._stop.set()
        self.seconds = time.time() - self._start_at
        samples: list[tuple[float, float]] = []
        for proc, recv in self._procs:
            samples.extend(recv.recv())
        for proc, _ in self._procs:
            proc.join(timeout=30)
        self._procs.clear()
        return LoadResult(samples, self.seconds)
