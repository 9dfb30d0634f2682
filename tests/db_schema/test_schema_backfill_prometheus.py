"""The latency throttle reading the application's p99 from a real Prometheus.

The stack (``testsupport.metrics_stack``): an API-like HTTP service whose latency the test sets,
HAProxy in front of it, Prometheus scraping it every second, all on 127.0.0.1. A thread sends
requests through HAProxy the whole time; the backfill's only latency source is the PromQL p99.

Prometheus is read once a second (its scrape interval), so a breach halves the duty about once a
second and the test's three phases take tens of seconds. The backfill must not run out of rows
before that: every batch is given a fixed cost in the database (a statement-level trigger, standing
in for a real backfill's index and WAL work), which caps its speed whatever the machine's load.
Without it an idle machine updated all 500,000 rows in about 5 s, after four readings, and the test
then waited on a setting that could no longer change. Every wait also ends at once, with the
throttle's control log, if the backfill stops by itself.
"""

from __future__ import annotations

import math
import threading
from functools import partial

import pytest

from bazbii_analysis.latency import PrometheusLatency
from bazbii_db.migrations.backfill import Backfill
from bazbii_db.migrations.throttle import BREACH, CLEAN, MIN_DUTY, LatencyBudget
from testsupport.localcluster import free_port
from testsupport.metrics_stack import start_metrics_stack

from .conftest import execute, fetch
from .test_schema_backfill import counters_db, hits_spec, quiet
from .test_schema_backfill_latency import run_until_stopped, wait_for

pytestmark = pytest.mark.timeout(240)

P99 = 'histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="api"}[5s])))'
FAST, SLOW = 0.002, 0.2  # service latency, seconds
BATCH_COST_S = 0.025  # each batch's floor: at most 40 batches/s, i.e. 40 x batch size rows/s
BATCH_COST = f"""
CREATE FUNCTION batch_cost() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({BATCH_COST_S}); RETURN NULL; END $$;
CREATE TRIGGER counters_batch_cost AFTER UPDATE ON counters FOR EACH STATEMENT EXECUTE FUNCTION batch_cost();
"""


@pytest.fixture(scope="module")
def stack():
    stack = start_metrics_stack()
    stack.service.set(error_percent=0, latency=FAST)
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            stack.drive(0.5, threads=2)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        yield stack
    finally:
        done.set()
        thread.join(30)
        stack.stop()


def test_prometheus_source_reads_the_p99_and_fails_closed(stack):
    source = PrometheusLatency.connect(stack.prometheus_url, P99, interval_s=0)
    try:
        wait_for("Prometheus has a fast p99", lambda: (source.read(0) or math.inf) < 50, 60)
        stack.service.set(error_percent=0, latency=SLOW)
        wait_for("Prometheus sees the slow p99", lambda: (source.read(0) or 0) >= 100, 60)
    finally:
        stack.service.set(error_percent=0, latency=FAST)
        source.close()
    # read at most once per interval: the value only changes once per scrape
    paced = PrometheusLatency.connect(stack.prometheus_url, P99, interval_s=30)
    assert paced.read(0) is not None and paced.read(0) is None
    paced.close()
    empty = PrometheusLatency.connect(stack.prometheus_url, P99.replace("http_request_duration", "no_such"),
                                      interval_s=0)
    assert empty.read(0) is None  # no traffic: no reading, not zero
    bad = PrometheusLatency.connect(stack.prometheus_url, "histogram_quantile(", interval_s=0)
    assert bad.read(0) == math.inf and "PromQL rejected" in bad.last_error
    gone = PrometheusLatency.connect(f"http://127.0.0.1:{free_port()}", P99, interval_s=0, timeout_s=0.5)
    assert gone.read(0) == math.inf and "unreachable" in gone.last_error
    for s in (empty, bad, gone):
        s.close()


def test_backfill_follows_the_prometheus_p99_down_and_up(db, stack):
    counters_db(db, n=500_000, step=1)
    execute(db, BATCH_COST)
    stack.service.set(error_percent=0, latency=FAST)
    budget = LatencyBudget(budget_ms=60.0, baseline_s=1.0, probe=False, prometheus_query=P99, prometheus_interval_s=1.0,
                           window_s=1.0, start_duty=0.2, increase=0.2)
    stop = threading.Event()
    backfill = Backfill(db, "m", hits_spec(batch_size=100), "c",
                        quiet(latency=budget, prometheus=partial(PrometheusLatency.connect, stack.prometheus_url),
                              stop=stop, max_batch_size=1000, lock_wait_threshold_ms=None))
    box: dict = {}
    worker = threading.Thread(target=run_until_stopped, args=(backfill, box), daemon=True)
    worker.start()
    try:
        def duty() -> float:
            if not worker.is_alive():  # finished or failed: its duty can no longer change
                log = backfill.throttle.log[-5:] if backfill.throttle else []
                pytest.fail(f"the backfill ended before the test stopped it: {box}; last decisions: {log}")
            return backfill.throttle.duty if backfill.throttle and backfill.throttle.budget_ms else 0.0

        wait_for("the duty rises while the app is fast", lambda: duty() >= 0.8, 60)
        stack.service.set(error_percent=0, latency=SLOW)
        wait_for("the duty falls to its floor while the app is slow", lambda: duty() == MIN_DUTY, 60)
        stack.service.set(error_percent=0, latency=FAST)
        wait_for("the duty rises once the app is fast again", lambda: duty() >= 0.2, 60)
        assert worker.is_alive(), box  # rows were left: the run ends by stop, not by running out
    finally:
        stack.service.set(error_percent=0, latency=FAST)
        stop.set()
        worker.join(60)
    assert "error" not in box, box["error"]
    result = box["result"]
    assert result.stopped and set(result.latency_budget_ms) == {"prometheus"}
    verdicts = [step.verdict for step in result.control_log]
    assert BREACH in verdicts and CLEAN in verdicts[verdicts.index(BREACH):]
    assert max(step.usage for step in result.control_log) > 1.0
    assert fetch(db, "SELECT finished_at IS NULL FROM bazbii_migrations.backfill_checkpoint") == [(True,)]
