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
from dataclasses import dataclass

import psycopg

from bazbii_db.migrations.throttle import percentile
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


def _worker(dsn: str, table: str, max_id: int, rate: float, seconds: float, start_at: float, seed: int, conn_out,
            stop, update_ratio: float = 0.2):
    rng = random.Random(seed)
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
            samples.append((scheduled, (time.time() - scheduled) * 1000.0))
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


class OltpLoad:
    """``workers`` processes, ``rate`` transactions/s each (80 % point SELECT, 20 % point UPDATE)."""

    def __init__(self, dsn: str, table: str, max_id: int, workers: int = 4, rate: float = 100.0,
                 update_ratio: float = 0.2):
        self.dsn, self.table, self.max_id, self.workers, self.rate = dsn, table, max_id, workers, rate
        self.update_ratio = update_ratio
        self._procs: list[tuple[mp.Process, object]] = []
        self.seconds = 0.0

    def start(self, seconds: float) -> None:
        """Run for ``seconds`` at most; ``join()`` earlier stops it."""
        ctx = mp.get_context("fork")
        self._stop = ctx.Event()
        start_at = time.time() + 0.5
        self._start_at = start_at
        for i in range(self.workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(self.dsn, self.table, self.max_id, self.rate, seconds, start_at,
                                                     1000 + i, send, self._stop, self.update_ratio), daemon=True)
            proc.start()
            self._procs.append((proc, recv))
        time.sleep(0.5)

    def join(self) -> LoadResult:
        self._stop.set()
        self.seconds = time.time() - self._start_at
        samples: list[tuple[float, float]] = []
        for proc, recv in self._procs:
            samples.extend(recv.recv())
            proc.join(timeout=30)
        self._procs.clear()
        return LoadResult(samples, self.seconds)
