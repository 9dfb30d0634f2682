"""Gradual move of direct (no PgBouncer) read traffic, with rollback on errors."""

from __future__ import annotations

import threading
import time

import pytest

from repl_helpers import ensure_replica_streaming, su
from bazbii_db.replication import WeightedPools, gradual_move

pytestmark = pytest.mark.timeout(60)


class Readers:
    """Bounded reader threads doing SELECTs through the weighted pools (loopback only)."""

    def __init__(self, pools: WeightedPools, threads: int = 3, max_seconds: float = 30):
        self.pools, self.stop_event = pools, threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.served = {"old": 0, "new": 0}
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                with self.pools.connection() as (conn, target):
                    conn.execute("SELECT count(*) FROM accounts").fetchone()
                    self.served[target] += 1
            except Exception:
                time.sleep(0.01)
            time.sleep(0.002)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)


def test_gradual_move_steps_shares_and_completes(shared_topo):
    pools = WeightedPools(su(shared_topo), su(shared_topo, "replica"), max_size=3)
    readers = Readers(pools)
    try:
        report = gradual_move(pools, steps=(0.1, 0.5, 1.0), hold_seconds=1.0, min_requests=3)
    finally:
        readers.stop()
        pools.close()
    assert report.completed and not report.rolled_back and report.final_share == 1.0, report
    shares = []
    for step in report.steps:
        total = step.new["requests"] + step.old["requests"]
        shares.append(step.new["requests"] / total)
    assert abs(shares[0] - 0.1) < 0.05 and abs(shares[1] - 0.5) < 0.05 and shares[2] == 1.0


def test_gradual_move_rolls_back_when_new_server_fails(shared_topo):
    pools = WeightedPools(su(shared_topo), su(shared_topo, "replica"), max_size=3, timeout=0.2)
    readers = Readers(pools)
    stopped = threading.Event()

    def hold(seconds: float) -> None:
        # Second step: the new server dies while it holds half the traffic.
        if pools.share == 0.5 and not stopped.is_set():
            shared_topo.replica.stop(mode="immediate")
            stopped.set()
        time.sleep(seconds)

    try:
        report = gradual_move(pools, steps=(0.1, 0.5, 1.0), hold_seconds=0.8, min_requests=5, sleep=hold)
        assert report.rolled_back and not report.completed and pools.share == 0.0, report
        # Either the failures or the requests that could not even be served stop the move at 50 %.
        assert len(report.steps) == 2 and report.steps[0].passed and not report.steps[1].passed
        assert "error rate" in report.reason or "requests reached" in report.reason
        before = readers.served["old"]
        time.sleep(0.3)
        assert readers.served["old"] > before  # everything back on the old server, still serving
    finally:
        readers.stop()
        pools.close()
        ensure_replica_streaming(shared_topo)
