"""Benchmark: batched backfill vs one big UPDATE of the same 1M rows, under a concurrent OLTP load.

Not a test. Starts a throwaway PostgreSQL 15 cluster on 127.0.0.1, builds two identical tables,
and reports in one run:

* the batched backfill's throughput relative to a single ``UPDATE`` of the same rows
  (both run under the same OLTP load)                                   target >= 0.8x
* the OLTP load's p99 latency during the backfill relative to its own baseline   target <= 1.5x
* the longest time one batch held its row locks (UPDATE start -> COMMIT)          target <= 50 ms

    venv/bin/python -m bench.bench_backfill [--rows 1000000] [--batch-size 5000] [--controls] [--strict]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time

import psycopg
from psycopg import sql
from rich.console import Console


from bazbii_db.migrations.backfill import Backfill, BackfillConfig
from bazbii_db.migrations.journal import Journal
from bazbii_db.migrations.spec import BackfillSpec
from testsupport.schema_load import LoadResult, OltpLoad, percentile, start_cluster, stop_cluster

TARGET_RATIO, TARGET_P99, TARGET_HOLD_MS = 0.8, 1.5, 50.0


def build_table(dsn: str, name: str, rows: int) -> None:
    t = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, user_id integer NOT NULL, title text NOT NULL, body text, "
            "category text, updated_at timestamptz NOT NULL DEFAULT now()) WITH (autovacuum_enabled = false)").format(t))
        conn.execute(sql.SQL("INSERT INTO {} (id, user_id, title, body) SELECT g, g %% 5000, 'title ' || g, "
                             "repeat('x', 60) FROM generate_series(1, %s) g").format(t), (rows,))
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(t))


def checkpoint(dsn: str) -> None:
    """Start each phase clean: flush PostgreSQL's dirty buffers, then the kernel's dirty pages
    (the test cluster runs with fsync=off, so without os.sync() the previous phase's writes would be
    written back by the kernel during the next phase)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    os.sync()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def run_round(dsn: str, args, n: int) -> dict:
    """One full measurement on freshly built tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_batched, bench_single")
        conn.execute("DELETE FROM bazbii_migrations.backfill_checkpoint")
    t0 = time.monotonic()
    build_table(dsn, "bench_batched", args.rows)
    build_table(dsn, "bench_single", args.rows)
    print(f"round {n}: setup 2 x {args.rows:,} rows in {time.monotonic() - t0:.1f}s, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    # the load alone: its own baseline, half before and half after the backfill (pooled), so
    # drift on a shared machine does not land on one side of the comparison only
    def baseline(seconds: float):
        checkpoint(dsn)
        load = OltpLoad(dsn, "bench_batched", args.rows, args.workers, args.rate, args.update_ratio)
        load.start(seconds)
        time.sleep(seconds)
        return load.join()

    before = baseline(args.baseline_s / 2)

    # batched backfill under the load
    checkpoint(dsn)
    spec = BackfillSpec(name="bench", kind="update", table="bench_batched", key="id",
                        set={"category": "'general'"}, where="category IS NULL", batch_size=args.batch_size,
                        pause_ms=args.pause_ms)
    console = Console(stderr=True) if args.progress else Console(file=io.StringIO())
    config = BackfillConfig(target_batch_ms=args.target_batch_ms or None, console=console, progress_interval_s=5)
    load = OltpLoad(dsn, "bench_batched", args.rows, args.workers, args.rate, args.update_ratio)
    load.start(600)
    b_start = time.monotonic()
    result = Backfill(dsn, "bench", spec, "bench", config).run()
    b_secs = time.monotonic() - b_start
    during_batched = load.join()
    after = baseline(args.baseline_s / 2)
    base = LoadResult(before.latencies_ms + after.latencies_ms, before.seconds + after.seconds)

    # one UPDATE of the same rows under the same load
    checkpoint(dsn)
    load = OltpLoad(dsn, "bench_single", args.rows, args.workers, args.rate, args.update_ratio)
    load.start(600)
    s_start = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        single_rows = conn.execute("UPDATE bench_single SET category = 'general' WHERE category IS NULL").rowcount
    s_secs = time.monotonic() - s_start
    during_single = load.join()

    r = dict(b_rate=result.rows_changed / b_secs, s_rate=single_rows / s_secs, base_p99=base.p99,
             batched_p99=during_batched.p99, single_p99=during_single.p99, single_max=max(during_single.latencies_ms,
                                                                                          default=0.0),
             hold_max=result.max_batch_hold_ms, hold_p99=percentile(result.batch_hold_ms, 99),
             over=sum(1 for h in result.batch_hold_ms if h > TARGET_HOLD_MS), batches=result.batches,
             final_batch=result.final_batch_size, s_secs=s_secs, b_secs=b_secs, load_tps=during_batched.tps,
             single_tps=during_single.tps)
    r["ratio"] = r["b_rate"] / r["s_rate"]
    r["p99_ratio"] = r["batched_p99"] / r["base_p99"] if r["base_p99"] else float("inf")
    print(f"  batched backfill: {result.rows_changed:,} rows in {b_secs:.2f}s = {r['b_rate']:,.0f} rows/s, "
          f"{result.batches} batches (final size {result.final_batch_size}), lock timeouts {result.lock_timeouts}, "
          f"throttled {len(result.throttle_events)}x; longest batch lock hold {r['hold_max']:.1f} ms "
          f"(p99 {r['hold_p99']:.1f} ms, {r['over']} over {TARGET_HOLD_MS:.0f} ms)", flush=True)
    print(f"  single UPDATE:    {single_rows:,} rows in {s_secs:.2f}s = {r['s_rate']:,.0f} rows/s (every row lock "
          f"held {s_secs * 1000:,.0f} ms)", flush=True)
    print(f"  load p99: baseline {base.p99:.2f} ms (before {before.p99:.2f} / after {after.p99:.2f}), during "
          f"backfill {during_batched.p99:.2f} ms at {during_batched.tps:,.0f} tx/s, during single UPDATE "
          f"{during_single.p99:,.0f} ms at {during_single.tps:,.0f} tx/s (max {r['single_max']:,.0f} ms)", flush=True)
    return r


def run_controls(dsn: str, args) -> None:
    """What the same load sees next to work that shares no table with it: the machine's own floor."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_sink")
        conn.execute("CREATE TABLE bench_sink (id bigint, body text)")
    controls = [("CPU-only query (no writes)", "SELECT count(*) FROM generate_series(1, 30000000)"),
                (f"bulk INSERT of {args.rows:,} rows into an unrelated table",
                 f"INSERT INTO bench_sink SELECT g, repeat('x', 60) FROM generate_series(1, {int(args.rows)}) g")]
    print("controls (the load runs on bench_batched; the statement touches no table the load uses):")
    for label, query in controls:
        checkpoint(dsn)
        load = OltpLoad(dsn, "bench_batched", args.rows, args.workers, args.rate, args.update_ratio)
        load.start(args.baseline_s / 2)
        time.sleep(args.baseline_s / 2)
        base = load.join()
        checkpoint(dsn)
        load = OltpLoad(dsn, "bench_batched", args.rows, args.workers, args.rate, args.update_ratio)
        load.start(600)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(query)
        during = load.join()
        print(f"  {label}: load p99 {base.p99:.2f} -> {during.p99:.2f} ms ({during.p99 / base.p99:.2f}x)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3, help="repeat on fresh tables; the verdict uses the medians")
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--target-batch-ms", type=int, default=0,
                    help="adaptive batch sizing towards this lock hold (default 0: fixed --batch-size)")
    ap.add_argument("--pause-ms", type=int, default=0, help="pause between batches")
    ap.add_argument("--update-ratio", type=float, default=0.2, help="share of point UPDATEs in the OLTP load")
    ap.add_argument("--workers", type=int, default=4, help="OLTP load processes")
    ap.add_argument("--rate", type=float, default=100.0, help="transactions/s per load process")
    ap.add_argument("--baseline-s", type=float, default=10.0)
    ap.add_argument("--progress", action="store_true", help="show the backfill's progress output")
    ap.add_argument("--controls", action="store_true",
                    help="also measure the load's p99 next to a CPU-only query and a bulk INSERT elsewhere")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    print(f"machine: {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}; "
          f"{args.rows:,} rows, batch size " + (f"adaptive to {args.target_batch_ms} ms from {args.batch_size}"
                                                 if args.target_batch_ms else str(args.batch_size)) + f", pause {args.pause_ms} ms, "
          f"load {args.workers} x {args.rate:g} tx/s ({args.update_ratio:.0%} updates)", flush=True)
    cluster, workdir = start_cluster()
    try:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            Journal(conn).ensure()
        rounds = [run_round(dsn, args, n + 1) for n in range(args.rounds)]
        if args.controls:
            run_controls(dsn, args)
    finally:
        stop_cluster(cluster, workdir)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    ratio, p99_ratio, hold = med("ratio"), med("p99_ratio"), med("hold_max")
    print()
    print(f"figures against targets (median of {len(rounds)} rounds; per round: "
          + ", ".join(f"{r['ratio']:.2f}x/{r['p99_ratio']:.2f}x/{r['hold_max']:.0f}ms" for r in rounds) + ")")
    print(f"  throughput, batched / single UPDATE  : {ratio:.2f}x (medians {med('b_rate'):,.0f} and "
          f"{med('s_rate'):,.0f} rows/s)"
          f"   (target >= {TARGET_RATIO}x)   {verdict(ratio >= TARGET_RATIO)}")
    print(f"  load p99, during backfill / baseline : {p99_ratio:.2f}x (medians {med('batched_p99'):.2f} and "
          f"{med('base_p99'):.2f} ms)   (target <= {TARGET_P99}x)   {verdict(p99_ratio <= TARGET_P99)}")
    print(f"  longest batch lock hold              : {hold:.1f} ms (worst round {max(r['hold_max'] for r in rounds):.1f} "
          f"ms; batch p99 {med('hold_p99'):.1f} ms)   (target <= {TARGET_HOLD_MS:.0f} ms)   "
          f"{verdict(hold <= TARGET_HOLD_MS)}")
    print(f"  for contrast, load p99 during the single UPDATE: {med('single_p99'):,.0f} ms")
    print(f"  (load average at the end {os.getloadavg()[0]:.2f}; other work on the machine skews every figure)")
    ok = ratio >= TARGET_RATIO and p99_ratio <= TARGET_P99 and hold <= TARGET_HOLD_MS
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
