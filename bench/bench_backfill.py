"""Benchmark: the latency-aware backfill against the frontier of fixed rates, judged as production could.

Not a test. Starts a throwaway PostgreSQL 15 cluster and a real Prometheus on 127.0.0.1 and, in
rounds under the same open-loop OLTP load (``testsupport.schema_load``: point SELECTs and UPDATEs on
the table being backfilled), backfills a freshly built table once per setting:

* the adaptive backfill, with only what production has: its probe through the application's path,
  and the load's p99 from Prometheus, which scrapes the latency histogram the load exports every
  ``--scrape-interval-s`` (production's, ``bazbii_plan.facts``). Nothing of the load's own samples
  reaches it; before its baseline the load runs long enough for Prometheus to hold a range of it,
  as an application's history would;
* every fixed ``BATCH:PAUSE_MS`` setting of ``--sweep``: rates from slow to back to back;
* for contrast (not a candidate), one ``UPDATE`` of the whole table (``--no-single`` skips it).

Each run stops after ``--run-s`` at most (throughput: keys per second over the time it ran; time to
backfill: the table's rows at that rate). The load's p99 is scored on every transaction scheduled
while the backfill ran. The baseline is the load alone on a fresh table, half before the first and
half after the last setting of the round (pooled). The budget is the throttle's default form,
``--budget-ratio`` x the baseline but at least ``--floor-ms`` over it, applied to that baseline.

Per round: the frontier is the best fixed throughput whose p99 is within the budget; the adaptive run
is paired with it (every other round in reverse order, so drift does not land on one side). Figures
are medians over ``--rounds`` with their spread (lowest-highest). Targets: the adaptive p99 within the
budget; its throughput >= 0.9x the frontier; its longest batch lock hold <= 50 ms.

    venv/bin/python -m bench.bench_backfill [--rounds 5] [--json PATH] [--plot PNG] [--strict] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import psycopg
from psycopg import sql
from rich import box
from rich.console import Console
from rich.table import Table

from bazbii_analysis.latency import PrometheusLatency
from bazbii_db.migrations.backfill import Backfill, BackfillConfig, BackfillResult, BackfillStopped
from bazbii_db.migrations.journal import Journal
from bazbii_db.migrations.spec import BackfillSpec
from bazbii_db.migrations.throttle import LatencyBudget
from bazbii_plan.facts import PROMETHEUS_SCRAPE_INTERVAL_S
from bench.backfill_plot import plot
from testsupport.localcluster import make_workdir, remove_workdir
from testsupport.metrics_stack import wait_until, scraped, start_prometheus
from testsupport.schema_load import HistogramExporter, LoadHistogram, LoadResult, OltpLoad, start_cluster, stop_cluster

TARGET_THROUGHPUT, TARGET_HOLD_MS = 0.9, 50.0
TABLE = "bench_fill"
ADAPTIVE = "adaptive"
SINGLE = "single UPDATE"
WARMUP_S = 1.0  # a new load's first transactions (fresh connections, cold caches) count nowhere
DEFAULTS = LatencyBudget()
SWEEP = "1000:0,1000:5,1000:10,1000:20,1000:40,1000:80,1000:160,1000:320,1000:640"
QUICK = dict(rows=50_000, sweep="200:0,200:20", run_s=4.0, baseline_s=2.0, workers=2, rate=50.0,
             latency_baseline_s=1.0, rounds=1, scrape_interval_s=1.0)


@dataclass
class RunFigures:
    label: str
    rows_per_s: float
    load_p99_ms: float
    load_tps: float
    hold_max_ms: float
    batches: int
    final: str  # final batch size / pause
    log: list = field(default_factory=list)  # the adaptive run's control steps
    budget_ms: dict = field(default_factory=dict)  # the adaptive run's own, per source
    baseline_ms: dict = field(default_factory=dict)


def parse_sweep(text: str) -> list[tuple[int, int]]:
    settings = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        batch, sep, pause = item.partition(":")
        if not sep or not batch.isdigit() or not pause.isdigit() or int(batch) < 1:
            raise ValueError(f"--sweep: {item!r} is not BATCH:PAUSE_MS (e.g. 2000:5)")
        settings.append((int(batch), int(pause)))
    if not settings:
        raise ValueError("--sweep: needs at least one BATCH:PAUSE_MS setting")
    return settings


def p99_query(scrape_interval_s: float) -> str:
    """The load's p99 in seconds, over two scrape intervals: the shortest range a rate() always has two
    samples in."""
    return (f"histogram_quantile(0.99, sum by (le) (rate({LoadHistogram.NAME}_bucket"
            f"[{2 * scrape_interval_s:g}s])))")


class Bench:
    """The cluster, the load's histogram and its exporter, and a Prometheus scraping it."""

    def __init__(self, args) -> None:
        self.args = args
        self.cluster, self.cluster_dir = start_cluster()
        self.histogram = LoadHistogram(args.workers)
        self.exporter = HistogramExporter(self.histogram)
        self.prom_dir = make_workdir("bazbii-bench-prometheus-")
        self.log = open(self.prom_dir / "prometheus.log", "wb")
        self.prometheus, self.prometheus_url = start_prometheus(
            self.prom_dir, args.scrape_interval_s, {"load": (self.exporter.target, {"service": "bench"})}, self.log)
        wait_until(lambda: scraped(self.prometheus_url, 1), 60 + 2 * args.scrape_interval_s,
              "Prometheus's first scrape of the load's histogram")
        self.dsn = self.cluster.dsn()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            Journal(conn).ensure()

    def close(self) -> None:
        self.prometheus.terminate()
        self.prometheus.wait(10)
        self.log.close()
        self.exporter.stop()
        stop_cluster(self.cluster, self.cluster_dir)
        remove_workdir(self.prom_dir)

    def new_load(self) -> OltpLoad:
        a = self.args
        return OltpLoad(self.dsn, TABLE, a.rows, a.workers, a.rate, a.update_ratio, histogram=self.histogram)

    def build_table(self) -> None:
        t = sql.Identifier(TABLE)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
            conn.execute("DELETE FROM bazbii_migrations.backfill_checkpoint")
            conn.execute(sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, user_id integer NOT NULL, title text NOT NULL, body text, "
                "category text, updated_at timestamptz NOT NULL DEFAULT now()) WITH (autovacuum_enabled = false)"
            ).format(t))
            conn.execute(sql.SQL("INSERT INTO {} (id, user_id, title, body) SELECT g, g %% 5000, 'title ' || g, "
                                 "repeat('x', 60) FROM generate_series(1, %s) g").format(t), (self.args.rows,))
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(t))
            # start each run clean: PostgreSQL's dirty buffers, then the kernel's (the cluster runs
            # with fsync=off, so the build's writes would otherwise be written back during the run)
            conn.execute("CHECKPOINT")
        os.sync()

    def baseline(self, seconds: float) -> LoadResult:
        self.build_table()
        load = self.new_load()
        load.start(WARMUP_S + seconds)
        time.sleep(WARMUP_S + seconds)
        started = time.time() - seconds
        return load.join().between(started, time.time())

    def backfill(self, label: str, batch: int, pause_ms: int, latency: LatencyBudget | None,
                 console: Console) -> RunFigures:
        a = self.args
        self.build_table()
        spec = BackfillSpec(name="bench", kind="update", table=TABLE, key="id", set={"category": "'general'"},
                            where="category IS NULL", batch_size=batch, pause_ms=pause_ms)
        stop = threading.Event()
        # only production's sources: the probe (built by the backfill from the latency table) and Prometheus
        backfill = Backfill(self.dsn, "bench", spec, "bench", BackfillConfig(
            latency=latency, prometheus=partial(PrometheusLatency.connect, self.prometheus_url), stop=stop,
            console=console, progress_interval_s=5))

        def time_box() -> None:
            # the clock starts at the first batch: the adaptive run first measures its own baseline
            while latency is not None and not stop.is_set() and not (backfill.throttle and backfill.throttle.budget_ms):
                time.sleep(0.01)
            stop.wait(a.run_s)
            stop.set()

        # before the adaptive run's baseline ends, Prometheus must hold a whole range of the load alone,
        # as it holds the application's history in production
        prelude = WARMUP_S if latency is None else max(WARMUP_S, 3 * a.scrape_interval_s - a.latency_baseline_s)
        load = self.new_load()
        load.start(prelude + a.latency_baseline_s + a.run_s + 60)
        time.sleep(prelude)
        threading.Thread(target=time_box, daemon=True).start()
        try:
            try:
                result = backfill.run()
            except BackfillStopped as stopped:  # the time box ended it
                result = stopped.result
        finally:
            end = time.time()
            stop.set()
            during = load.join()
        during = during.between(end - result.elapsed_s, end)
        return figures(label, result, during)

    def single(self) -> RunFigures:
        """One UPDATE of every row under the same load: every row lock is held for the whole statement."""
        self.build_table()
        load = self.new_load()
        load.start(600)
        time.sleep(WARMUP_S)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                start = time.time()
                rows = conn.execute(sql.SQL("UPDATE {} SET category = 'general' WHERE category IS NULL").format(
                    sql.Identifier(TABLE))).rowcount
                end = time.time()
        finally:
            during = load.join()
        during = during.between(start, end)
        return RunFigures(SINGLE, rows / (end - start), during.p99, during.tps, (end - start) * 1000.0, 1, "-")


def figures(label: str, result: BackfillResult, during: LoadResult) -> RunFigures:
    log = [dict(at_s=round(c.at_s, 2), verdict=c.verdict, duty=round(c.duty, 4), usage=round(c.usage, 2),
                batch=c.setting.batch_size, pause_ms=round(c.setting.pause_ms, 1),
                readings_ms={k: round(v, 3) for k, v in c.readings_ms.items()}) for c in result.control_log]
    return RunFigures(label, result.keys_done / result.elapsed_s if result.elapsed_s else 0.0, during.p99, during.tps,
                      result.max_batch_hold_ms, result.batches,
                      f"{result.final_batch_size} / {result.final_pause_ms:.0f} ms", log,
                      dict(result.latency_budget_ms), dict(result.latency_baseline_ms))


def run_round(bench: Bench, n: int, settings: list[tuple[int, int]], budget: LatencyBudget, console: Console) -> dict:
    a = bench.args
    load_before = os.getloadavg()[0]
    print(f"round {n}: load average {load_before:.2f}", flush=True)
    before = bench.baseline(a.baseline_s / 2)
    plan = [(ADAPTIVE, a.adaptive_start, 0, budget)] + [(f"fixed {b}:{p}", b, p, None) for b, p in settings]
    if n % 2 == 0:  # every other round in reverse, so the adaptive run is not always first (drift)
        plan.reverse()
    runs = []
    for label, batch, pause, latency in plan:
        run = bench.backfill(label, batch, pause, latency, console)
        runs.append(run)
        print(f"  {label:<16} {run.rows_per_s:>10,.0f} rows/s  load p99 {run.load_p99_ms:7.2f} ms  "
              f"hold max {run.hold_max_ms:6.1f} ms  final {run.final}", flush=True)
    if a.single:
        run = bench.single()
        runs.append(run)
        print(f"  {SINGLE:<16} {run.rows_per_s:>10,.0f} rows/s  load p99 {run.load_p99_ms:7.2f} ms  "
              f"every row lock held {run.hold_max_ms:,.0f} ms", flush=True)
    after = bench.baseline(a.baseline_s / 2)
    base = before + after
    print(f"  baseline p99 {base.p99:.2f} ms (before {before.p99:.2f} / after {after.p99:.2f}) at {base.tps:,.0f} tx/s, "
          f"budget {budget.limit_ms(base.p99):.2f} ms", flush=True)
    return dict(baseline_p99_ms=base.p99, budget_ms=budget.limit_ms(base.p99), load_average=load_before,
                runs=[asdict(r) for r in runs])


def spread(values: list[float]) -> dict:
    return dict(median=statistics.median(values), low=min(values), high=max(values))


def _order(label: str) -> tuple:
    """adaptive, then the fixed settings by batch and pause, then the single UPDATE."""
    if label == ADAPTIVE:
        return (0,)
    if label == SINGLE:
        return (2,)
    batch, pause = label.removeprefix("fixed ").split(":")
    return (1, int(batch), int(pause))


def summarise(rounds: list[dict], rows: int) -> dict:
    """Per setting, medians and spreads over rounds; per round, the frontier and the adaptive run's ratio to it."""
    labels = sorted({run["label"] for run in rounds[0]["runs"]}, key=_order)
    by = {label: [next(run for run in r["runs"] if run["label"] == label) for r in rounds] for label in labels}
    settings = []
    for label, per in by.items():
        within = [run["load_p99_ms"] <= r["budget_ms"] for run, r in zip(per, rounds)]
        settings.append(dict(
            setting=label, rows_per_s=spread([p["rows_per_s"] for p in per]),
            load_p99_ms=spread([p["load_p99_ms"] for p in per]),
            p99_added_ms=spread([p["load_p99_ms"] - r["baseline_p99_ms"] for p, r in zip(per, rounds)]),
            p99_to_budget=spread([p["load_p99_ms"] / r["budget_ms"] for p, r in zip(per, rounds)]),
            rounds_within_budget=sum(within), hold_max_ms=spread([p["hold_max_ms"] for p in per]),
            backfill_s=spread([rows / p["rows_per_s"] if p["rows_per_s"] else float("inf") for p in per])))
    frontier, ratios = [], []
    for r in rounds:
        fixed = [run for run in r["runs"] if run["label"].startswith("fixed") and run["load_p99_ms"] <= r["budget_ms"]]
        best = max(fixed, key=lambda run: run["rows_per_s"], default=None)
        adaptive = next(run for run in r["runs"] if run["label"] == ADAPTIVE)
        frontier.append(dict(setting=best["label"] if best else None, rows_per_s=best["rows_per_s"] if best else 0.0))
        ratios.append(adaptive["rows_per_s"] / best["rows_per_s"] if best else None)
    adaptive = settings[0]
    paired = [x for x in ratios if x is not None]
    summary = dict(
        rounds=len(rounds), baseline_p99_ms=spread([r["baseline_p99_ms"] for r in rounds]),
        budget_ms=spread([r["budget_ms"] for r in rounds]), settings=settings, frontier=frontier,
        frontier_rows_per_s=spread([f["rows_per_s"] for f in frontier]), adaptive_to_frontier=ratios,
        adaptive_to_frontier_spread=spread(paired) if paired else None,
        load_average=[r["load_average"] for r in rounds],
        adaptive_runs=[dict(budget_ms=run["budget_ms"], baseline_ms=run["baseline_ms"], log=run["log"])
                       for run in by[ADAPTIVE]])
    ratio = summary["adaptive_to_frontier_spread"]
    summary["targets"] = [
        dict(target="adaptive load p99 within the budget (median of p99 / budget <= 1)",
             figure=f"{adaptive['p99_to_budget']['median']:.2f} of the budget, "
                    f"+{adaptive['p99_added_ms']['median']:.2f} ms over the baseline",
             met=adaptive["p99_to_budget"]["median"] <= 1.0),
        dict(target=f"adaptive throughput >= {TARGET_THROUGHPUT}x the best fixed setting within the same budget "
                    "(median of the rounds' ratios)",
             figure=(f"{ratio['median']:.2f}x [{ratio['low']:.2f}-{ratio['high']:.2f}] over {len(paired)} rounds"
                     if ratio else "no fixed setting was within the budget"),
             met=None if ratio is None else ratio["median"] >= TARGET_THROUGHPUT),
        dict(target=f"adaptive longest batch lock hold <= {TARGET_HOLD_MS:.0f} ms (every round)",
             figure=f"{adaptive['hold_max_ms']['high']:.1f} ms", met=adaptive["hold_max_ms"]["high"] <= TARGET_HOLD_MS),
    ]
    return summary


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("PASS" if met else "MISS")


def fmt(s: dict, unit: str = "", digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f}{unit} [{s['low']:,.{digits}f}-{s['high']:,.{digits}f}]"


def print_summary(summary: dict, console: Console) -> None:
    base, budget = summary["baseline_p99_ms"], summary["budget_ms"]
    table = Table(title=f"medians [lowest-highest] of {summary['rounds']} rounds; load p99 alone {fmt(base, ' ms', 2)}, "
                        f"budget {fmt(budget, ' ms', 2)}", box=box.MARKDOWN)
    for col in ("setting", "rows/s", "load p99 ms", "p99 added ms", "p99 / budget", "rounds within",
                "longest lock hold ms", "time to backfill s"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for s in summary["settings"]:
        contrast = s["setting"] == SINGLE
        table.add_row(s["setting"] + (" (contrast)" if contrast else ""), fmt(s["rows_per_s"]),
                      fmt(s["load_p99_ms"], digits=2), fmt(s["p99_added_ms"], digits=2), fmt(s["p99_to_budget"], digits=2),
                      f"{s['rounds_within_budget']}/{summary['rounds']}", fmt(s["hold_max_ms"], digits=1),
                      fmt(s["backfill_s"], digits=0))
    console.print(table)
    console.print("frontier (best fixed within the round's budget): " + fmt(summary["frontier_rows_per_s"], " rows/s")
                  + "; per round: " + ", ".join(f"{f['setting'] or 'none'} {f['rows_per_s']:,.0f}"
                                               for f in summary["frontier"]), markup=False)
    console.print("adaptive / frontier per round: " + ", ".join("-" if x is None else f"{x:.2f}x"
                                                              for x in summary["adaptive_to_frontier"]), markup=False)
    targets = Table(title="targets", box=box.MARKDOWN)
    for col in ("target", "figure", "verdict"):
        targets.add_column(col)
    for t in summary["targets"]:
        targets.add_row(t["target"], t["figure"], verdict(t["met"]))
    console.print(targets)
    for n, run in enumerate(summary["adaptive_runs"], 1):
        duties = [step["duty"] for step in run["log"]] or [0.0]
        console.print(f"round {n}, adaptive run's own baseline " + ", ".join(f"{k} {v:.2f} ms" for k, v in
                                                                          run["baseline_ms"].items())
                      + ", budget " + ", ".join(f"{k} {v:.2f} ms" for k, v in run["budget_ms"].items())
                      + f"; duty {min(duties):.1%}-{max(duties):.1%} over {len(run['log'])} windows, "
                      + f"{sum(step['verdict'] == 'breach' for step in run['log'])} breaches", markup=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--sweep", default=SWEEP, help="fixed settings, BATCH:PAUSE_MS,...")
    ap.add_argument("--run-s", type=float, default=40.0, help="each backfill stops after this long at most")
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds; figures are medians over them")
    ap.add_argument("--budget-ratio", type=float, default=DEFAULTS.budget_ratio, help="the budget over the baseline")
    ap.add_argument("--floor-ms", type=float, default=DEFAULTS.floor_ms, help="... but at least this many ms over it")
    ap.add_argument("--latency-baseline-s", type=float, default=DEFAULTS.baseline_s, help="the adaptive run's own")
    ap.add_argument("--scrape-interval-s", type=float, default=PROMETHEUS_SCRAPE_INTERVAL_S,
                    help="Prometheus's scrape interval (default: production's)")
    ap.add_argument("--adaptive-start", type=int, default=1000, help="the adaptive run's first batch size")
    ap.add_argument("--update-ratio", type=float, default=0.2, help="share of point UPDATEs in the OLTP load")
    ap.add_argument("--workers", type=int, default=4, help="OLTP load processes")
    ap.add_argument("--rate", type=float, default=250.0, help="transactions/s per load process")
    ap.add_argument("--baseline-s", type=float, default=10.0, help="the load alone, half before and half after")
    ap.add_argument("--no-single", dest="single", action="store_false", help="skip the single-UPDATE contrast run")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON ('-' for stdout)")
    ap.add_argument("--plot", metavar="PNG", help="also draw the figures (bench.backfill_plot)")
    ap.add_argument("--progress", action="store_true", help="show each backfill's progress output")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    try:
        settings = parse_sweep(args.sweep)
        budget = LatencyBudget(budget_ratio=args.budget_ratio, floor_ms=args.floor_ms,
                               baseline_s=args.latency_baseline_s, prometheus_query=p99_query(args.scrape_interval_s),
                               prometheus_interval_s=args.scrape_interval_s,
                               probe_query=f"SELECT title, category FROM {TABLE} WHERE id = 1")
    except ValueError as exc:
        ap.error(str(exc).replace("latency.budget_ratio", "--budget-ratio").replace("latency.floor_ms", "--floor-ms")
                 .replace("latency.baseline_s", "--latency-baseline-s")
                 .replace("latency.prometheus_interval_s", "--scrape-interval-s"))
    for key in ("rows", "rounds", "workers", "adaptive_start"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')}: must be at least 1")
    for key in ("run_s", "rate", "baseline_s"):
        if getattr(args, key) <= 0:
            ap.error(f"--{key.replace('_', '-')}: must be positive")

    out = Console(width=200)
    load_start = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average at start {load_start:.2f}; {args.rows:,} rows; load "
          f"{args.workers} x {args.rate:g} tx/s ({args.update_ratio:.0%} updates); each run <= {args.run_s:g}s; budget "
          f"{args.budget_ratio:g}x the baseline, at least +{args.floor_ms:g} ms; Prometheus scrapes every "
          f"{args.scrape_interval_s:g}s; fixed settings (batch:pause ms) {args.sweep}", flush=True)
    progress = Console(stderr=True) if args.progress else Console(file=io.StringIO())
    # stopped with SIGTERM (timeout, kill): still stop the cluster and Prometheus on the way out
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    try:
        rounds = [run_round(bench, n + 1, settings, budget, progress) for n in range(args.rounds)]
    finally:
        bench.close()
        signal.signal(signal.SIGTERM, previous)
    summary = summarise(rounds, args.rows)
    summary["conditions"] = dict(vars(args), cores=os.cpu_count(), load_average_start=load_start,
                                 load_average_end=os.getloadavg()[0], prometheus_query=budget.prometheus_query)
    summary["raw_rounds"] = rounds
    print()
    print_summary(summary, out)
    print(f"(load average at the start {load_start:.2f}, at the end {os.getloadavg()[0]:.2f}; other work on the "
          "machine skews every figure)")
    if args.json:
        text = json.dumps(summary, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.plot:
        plot(summary, args.plot)
        print(f"wrote {args.plot}")
    missed = any(t["met"] is False for t in summary["targets"])
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
