"""Shared pieces of the schema-migration benchmark: a throwaway cluster and an open-loop OLTP load.

The load runs in separate processes (no GIL shared with the code under test). Each worker
issues transactions on a fixed schedule (open loop): latency is measured from the *scheduled*
start, so a stall shows up as latency for every request that should have started during it
(no coordinated omission). Each sample keeps its scheduled start, so a result can be cut to the
stretch of time a backfill actually ran (``LoadResult.between``).

What production would see of the load is its latency histogram (``LoadHistogram``), exported over
HTTP (``HistogramExporter``) for a real Prometheus to scrape; every sample reaches only the
benchmark's scoring, after the run (``OltpLoad.join``).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from bazbii_db.migrations.probe import percentile
from testsupport.localcluster import LocalCluster, free_port, make_workdir, remove_workdir
from testsupport.metrics_stack import histogram_lines

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
            stop, update_ratio: float = 0.2, histogram=None):
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
            if histogram is not None:  # what the application exports for Prometheus
                histogram.observe(index, ms)
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


class LoadHistogram:
    """The load's latency histogram in shared memory, as an application keeps one for Prometheus: each
    worker adds to its own row of bucket counts (a plain store per transaction, one writer per row,
    no lock), the exporter sums the rows. One histogram serves every load of a benchmark, so its
    counters only grow, as an application's do."""

    # seconds; fine below 5 ms, where this load's p99 lies (a PromQL quantile interpolates in a bucket)
    BOUNDS_S = (0.00025, 0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025, 0.003, 0.004, 0.005,
                0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
    NAME = "bench_request_duration_seconds"

    def __init__(self, workers: int):
        ctx = mp.get_context("fork")
        self.workers, self.width = workers, len(self.BOUNDS_S) + 1
        self.counts = ctx.RawArray("q", workers * self.width)
        self.sums = ctx.RawArray("d", workers)

    def observe(self, worker: int, ms: float) -> None:
        self.counts[worker * self.width + bisect_left(self.BOUNDS_S, ms / 1000.0)] += 1
        self.sums[worker] += ms / 1000.0

    def exposition(self) -> str:
        counts = [sum(self.counts[w * self.width + k] for w in range(self.workers)) for k in range(self.width)]
        return "\n".join(histogram_lines(self.NAME, self.BOUNDS_S, counts, sum(self.sums))) + "\n"


class HistogramExporter:
    """Serves a ``LoadHistogram`` on ``http://127.0.0.1:port/metrics`` from a thread of this process."""

    def __init__(self, histogram: LoadHistogram):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:
                body = histogram.exposition().encode() if self.path == "/metrics" else b"not found"
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OltpLoad:
    """``workers`` processes, ``rate`` transactions/s each (80 % point SELECT, 20 % point UPDATE).
    With a ``histogram`` (of at least ``workers`` rows), each transaction's latency is also counted there."""

    def __init__(self, dsn: str, table: str, max_id: int, workers: int = 4, rate: float = 100.0,
                 update_ratio: float = 0.2, histogram: LoadHistogram | None = None):
        if histogram is not None and histogram.workers < workers:
            raise ValueError(f"the histogram has rows for {histogram.workers} workers, not {workers}")
        self.dsn, self.table, self.max_id, self.workers, self.rate = dsn, table, max_id, workers, rate
        self.update_ratio = update_ratio
        self._procs: list[tuple[mp.Process, object]] = []
        self.seconds = 0.0
        self._histogram = histogram

    def start(self, seconds: float) -> None:
        """Run for ``seconds`` at most; ``join()`` earlier stops it."""
        ctx = mp.get_context("fork")
        self._stop = ctx.Event()
        start_at = time.time() + 0.5
        self._start_at = start_at
        for i in range(self.workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(self.dsn, self.table, self.max_id, self.rate, seconds, start_at,
                                                     i, send, self._stop, self.update_ratio, self._histogram),
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
