"""The backfill benchmark's own machinery, on real PostgreSQL and a real Prometheus: the histogram the
load exports (the adaptive run's only view of the load's latency), the frontier and the pairing of
rounds, and a smoke run of the whole benchmark (``--quick``: its figures mean nothing, but every part
runs, prints its targets, writes its JSON and its picture)."""

from __future__ import annotations

import json
import math
import time

import psycopg
import pytest

from bazbii_analysis.latency import PrometheusLatency
from testsupport.localcluster import make_workdir, remove_workdir
from testsupport.metrics_stack import scraped, start_prometheus, wait_until
from testsupport.schema_load import HistogramExporter, LoadHistogram, OltpLoad

from .conftest import execute

pytestmark = pytest.mark.timeout(300)


def test_the_histogram_counts_each_transaction_in_its_bucket():
    histogram = LoadHistogram(2)
    for worker, ms in ((0, 0.9), (1, 1.0), (1, 1.1), (0, 7000.0)):
        histogram.observe(worker, ms)
    lines = histogram.exposition().splitlines()
    bucket = {line.split('le="')[1].split('"')[0]: int(line.split()[-1]) for line in lines if "_bucket" in line}
    # cumulative, "less than or equal": 1.0 ms falls in le=0.001
    assert bucket["0.00075"] == 0 and bucket["0.001"] == 2 and bucket["0.00125"] == 3 and bucket["2.5"] == 3
    assert bucket["+Inf"] == 4 and f"{LoadHistogram.NAME}_count 4" in lines
    assert math.isclose(float(next(line for line in lines if "_sum" in line).split()[-1]), 7.003)
    with pytest.raises(ValueError, match="rows for 2 workers, not 4"):
        OltpLoad("dbname=x", "t", 10, workers=4, histogram=histogram)


def test_prometheus_reads_the_loads_p99_from_the_histogram_it_exports(db):
    execute(db, "CREATE TABLE t (id bigint PRIMARY KEY, title text, category text, updated_at timestamptz)")
    execute(db, "INSERT INTO t SELECT g, 'x', NULL, now() FROM generate_series(1, 1000) g")
    histogram = LoadHistogram(2)
    exporter = HistogramExporter(histogram)
    workdir = make_workdir("bazbii-bench-prometheus-test-")
    log = open(workdir / "prometheus.log", "wb")
    prometheus, url = start_prometheus(workdir, 1, {"load": (exporter.target, {"service": "bench"})}, log)
    load = OltpLoad(db, "t", 1000, workers=2, rate=100.0, histogram=histogram)
    source = PrometheusLatency.connect(url, f"histogram_quantile(0.99, sum by (le) (rate({LoadHistogram.NAME}"
                                            "_bucket[3s])))", interval_s=0)
    try:
        wait_until(lambda: scraped(url, 1), 60, "Prometheus's first scrape of the load")
        load.start(60)
        wait_until(lambda: (source.read(0) or math.inf) < 100, 30, "a p99 of the quiet load")
        quiet = source.read(0)
        # a table lock held elsewhere: the load's transactions wait, and Prometheus says so a scrape later
        with psycopg.connect(db) as holder:
            holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            time.sleep(0.5)
        wait_until(lambda: (source.read(0) or 0) >= 200, 30, f"the p99 shows the wait (quiet p99 {quiet:.2f} ms)")
    finally:
        result = load.join()
        source.close()
        prometheus.terminate()
        prometheus.wait(10)
        log.close()
        exporter.stop()
        remove_workdir(workdir)
    assert quiet < 100 and len(result.samples) >= 100


def _run(label: str, rows_per_s: float, p99: float) -> dict:
    return dict(label=label, rows_per_s=rows_per_s, load_p99_ms=p99, load_tps=1000.0, hold_max_ms=5.0, batches=10,
                final="-", log=[], budget_ms={}, baseline_ms={})


def test_the_frontier_is_the_best_fixed_rate_within_each_rounds_budget_and_the_adaptive_run_is_paired_with_it():
    from bench.bench_backfill import summarise

    rounds = [dict(baseline_p99_ms=1.0, budget_ms=2.0, load_average=0.1, runs=[
                  _run("adaptive", 9_000, 1.9), _run("fixed 1000:0", 100_000, 2.5), _run("fixed 1000:10", 40_000, 2.1),
                  _run("fixed 1000:20", 20_000, 1.8), _run("fixed 1000:40", 10_000, 1.2)]),
              dict(baseline_p99_ms=1.2, budget_ms=2.2, load_average=0.1, runs=[
                  _run("adaptive", 30_000, 2.3), _run("fixed 1000:0", 100_000, 3.0), _run("fixed 1000:10", 40_000, 2.15),
                  _run("fixed 1000:20", 21_000, 1.9), _run("fixed 1000:40", 10_000, 1.3)]),
              dict(baseline_p99_ms=0.9, budget_ms=1.9, load_average=0.1, runs=[
                  _run("adaptive", 20_000, 1.5), _run("fixed 1000:0", 100_000, 5.0), _run("fixed 1000:10", 40_000, 4.0),
                  _run("fixed 1000:20", 19_000, 2.0), _run("fixed 1000:40", 10_000, 1.4)])]
    summary = summarise(rounds, 1_000_000)
    assert [f["setting"] for f in summary["frontier"]] == ["fixed 1000:20", "fixed 1000:10", "fixed 1000:40"]
    assert summary["adaptive_to_frontier"] == [pytest.approx(0.45), pytest.approx(0.75), pytest.approx(2.0)]
    assert summary["adaptive_to_frontier_spread"] == dict(median=pytest.approx(0.75), low=pytest.approx(0.45),
                                                          high=pytest.approx(2.0))
    adaptive = summary["settings"][0]
    assert adaptive["setting"] == "adaptive" and adaptive["rounds_within_budget"] == 2
    assert adaptive["p99_to_budget"]["median"] == pytest.approx(1.9 / 2.0)
    assert adaptive["p99_added_ms"] == dict(median=pytest.approx(0.9), low=pytest.approx(0.6), high=pytest.approx(1.1))
    assert adaptive["backfill_s"]["median"] == pytest.approx(50.0)  # 1M rows at 20,000 rows/s
    met = [t["met"] for t in summary["targets"]]
    assert met == [True, False, True]  # within the budget (median 0.95), 0.75x the frontier, holds of 5 ms


def test_the_default_sweep_spans_at_least_eight_rates_from_back_to_back_down():
    from bench.bench_backfill import SWEEP, parse_sweep

    # rows per (pause + a batch of about 5 ms): distinct rates, the fastest with no pause at all
    rates = sorted({batch / (pause + 5.0) for batch, pause in parse_sweep(SWEEP)}, reverse=True)
    assert len(rates) >= 8 and min(pause for _batch, pause in parse_sweep(SWEEP)) == 0
    assert rates[0] / rates[-1] >= 50  # from back to back down to a slow trickle


def test_quick_benchmark_run_prints_targets_and_writes_json_and_picture(tmp_path, capsys):
    from bench import bench_backfill

    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert bench_backfill.main(["--quick", "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "adaptive load p99 within the budget" in text and "longest batch lock hold" in text
    assert "frontier (best fixed within the round's budget)" in text
    summary = json.loads(out.read_text())
    labels = [s["setting"] for s in summary["settings"]]
    assert labels[0] == "adaptive" and "fixed 200:0" in labels and "single UPDATE" in labels
    (run,) = summary["adaptive_runs"]
    assert set(run["budget_ms"]) == {"probe", "prometheus"}  # production's sources, and nothing else
    assert run["log"] and {"duty", "verdict"} <= set(run["log"][0])
    assert summary["targets"][2]["met"] is not None
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        bench_backfill.main(["--sweep", "fast"])
    assert "--sweep: 'fast' is not BATCH:PAUSE_MS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_backfill.main(["--floor-ms", "-1"])
    assert "--floor-ms: must be 0 or more" in capsys.readouterr().err
