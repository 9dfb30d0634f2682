"""The backfill benchmark's own machinery, on real PostgreSQL: the load's live latency stream that
the adaptive run reads, and a smoke run of the whole benchmark (``--quick``: its figures mean
nothing, but every part runs, prints its targets, writes its JSON and its picture)."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from testsupport.schema_load import OltpLoad

from .conftest import execute

pytestmark = pytest.mark.timeout(300)


def test_the_load_streams_its_latencies_as_they_happen(db):
    execute(db, "CREATE TABLE t (id bigint PRIMARY KEY, title text, category text, updated_at timestamptz)")
    execute(db, "INSERT INTO t SELECT g, 'x', NULL, now() FROM generate_series(1, 1000) g")
    load = OltpLoad(db, "t", 1000, workers=2, rate=100.0, live=True)
    source = load.latency_source(window_s=1.0, min_samples=50)
    started = time.monotonic()
    load.start(30)
    try:
        deadline = time.monotonic() + 20
        while (quiet := source.read(started)) is None:
            assert time.monotonic() < deadline, "no live reading from the load"
            time.sleep(0.1)
        # a table lock held elsewhere: the load's own transactions wait, and the stream says so at once
        with psycopg.connect(db) as holder:
            holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            locked_at = time.monotonic()
            time.sleep(0.5)
        deadline = time.monotonic() + 20
        while (source.read(locked_at) or 0) < 200:
            assert time.monotonic() < deadline, f"the stream never showed the wait (quiet p99 {quiet:.2f} ms)"
            time.sleep(0.1)
    finally:
        result = load.join()
    assert quiet < 200 and len(result.samples) >= 100
    with pytest.raises(ValueError, match="live=True"):
        OltpLoad(db, "t", 1000).latency_source()


def test_the_live_stream_keeps_its_samples_in_time_order():
    # the throttle walks a source's samples from the newest back and stops at the first too old:
    # a transaction recorded after a later one (another worker's) must be merged in, not lost
    from testsupport.schema_load import LiveLatencies, LoadLatency

    live = LiveLatencies(2)
    source = LoadLatency(live)
    now = time.monotonic()
    live.record(0, now - 3.0, 1.0)
    live.record(0, now - 1.0, 9.0)
    source.count_slow(now - 10, 5.0, 1.0)
    live.record(1, now - 2.0, 9.0)  # finished before the last one read, recorded after it
    live.record(1, now - 0.5, 1.0)
    assert source.count_slow(now - 2.5, 5.0, 1.0) == [[1, 1], [1, 1], [0, 1]]
    assert [t for t, _ in source.samples] == [now - 3.0, now - 2.0, now - 1.0, now - 0.5]


def test_quick_benchmark_run_prints_targets_and_writes_json_and_picture(tmp_path, capsys):
    from bench import bench_backfill

    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert bench_backfill.main(["--quick", "--json", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "adaptive load p99 <= 1.5x baseline" in text and "longest batch lock hold" in text
    summary = json.loads(out.read_text())
    labels = [s["setting"] for s in summary["settings"]]
    assert labels[0] == "adaptive" and "fixed 200:0" in labels and "single UPDATE" in labels
    (probe,) = summary["probe"]
    assert set(probe["budget_ms"]) == {"probe", "app"}  # its probe and the load's own latencies
    assert [t["met"] for t in summary["targets"]][2] is not None
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        bench_backfill.main(["--sweep", "fast"])
    assert "--sweep: 'fast' is not BATCH:PAUSE_MS" in capsys.readouterr().err


def test_the_picture_shows_what_the_batches_cost_allowed(tmp_path):
    """A third panel once the adaptive run's log carries what the cost allowed (allowed_duty)."""
    import matplotlib.image

    from bench.backfill_plot import plot

    step = dict(at_s=2.0, usage=0.5, readings_ms={"app": 1.0}, batch=1000, pause_ms=150.0, allowed_duty=None)
    summary = dict(baseline_p99_ms=0.8, target_p99=1.5,
                   settings=[dict(setting="adaptive", rows_per_s=7000, p99_ratio=1.2),
                             dict(setting="fixed 1000:80", rows_per_s=11000, p99_ratio=2.0)],
                   probe=[dict(log=[step, dict(step, at_s=2.5, allowed_duty=0.031),
                                    dict(step, at_s=3.0, allowed_duty=0.035)])])
    plot(summary, str(tmp_path / "three.png"))
    summary["probe"][0]["log"] = [step]
    plot(summary, str(tmp_path / "two.png"))
    three, two = (matplotlib.image.imread(tmp_path / name) for name in ("three.png", "two.png"))
    assert three.shape[1] > two.shape[1] * 1.3  # the wider figure, with the cost's panel
