"""``./rehearse``: the whole migration plan on one machine, under load, each step applied by pulumi up.

The steps are applied by the real ``pulumi up`` on the twin of production (:mod:`rehearsal.engine_cli`);
``--reconcilers`` walks them through the rehearsal's own reconcilers instead (the older walk, kept until the
engine walk meets every target). Exit codes: 0 every step passed (and, without injected faults, no request failed; with
faults, every rollback completed and recovered); 1 otherwise; 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bazbii_plan.errors import ConfigError
from bazbii_plan.stackconfig import MAX_TIME_SCALE

from .faults import FAULTS, BadInjection
from .procs import Interrupted, stop_on_signals
from .runner import BASELINE_SECONDS, Options, prepare, run

DEFAULT_TIME_SCALE = 1800  # bazbii:timeScale of the rehearsal stack: a day in 48 s


# Options only one of the two walks reads; the other refuses them rather than ignore them.
RECONCILER_ONLY = ("--config", "--soak", "--ttl-scale", "--min-samples", "--keep-run-dir")
ENGINE_ONLY = ("--time-scale",)
# The defaults of the options that only one walk reads (None on the parser: given or not is what is refused).
WALK_DEFAULTS = {"config": Path("Pulumi.prod.yaml"), "soak": 6.0, "ttl_scale": 120.0, "min_samples": 50,
                 "time_scale": DEFAULT_TIME_SCALE}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./rehearse", description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop; default 100)")
    p.add_argument("--baseline", type=float, default=BASELINE_SECONDS,
                   help=f"baseline before the first step, seconds (default {BASELINE_SECONDS:g})")
    p.add_argument("--until", default=None, metavar="STEP", help="stop after this step (apply order)")
    p.add_argument("--inject", action="append", default=[], metavar="FAULT@STEP",
                   help=f"inject a fault at a step; FAULT is one of {', '.join(FAULTS)}")
    p.add_argument("--out", type=Path, default=Path("rehearsal-out"), help="directory for the report, PNG, records")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--time-scale", type=int, default=None,
                   help="bazbii:timeScale of the rehearsal stack: every soak, metrics window and DNS wait divided "
                        f"by it (default {WALK_DEFAULTS['time_scale']}: a day in 48 s)")
    p.add_argument("--engine", action="store_true",
                   help="apply every step with the real pulumi up on the twin (stack 'rehearsal'): the default")
    p.add_argument("--reconcilers", action="store_true",
                   help="the older walk: every step applied by the rehearsal's own reconcilers instead of pulumi up "
                        f"(kept until the engine walk meets every target; only it reads {', '.join(RECONCILER_ONLY)})")
    p.add_argument("--config", type=Path, default=None, help="with --reconcilers: stack file with the plan")
    p.add_argument("--soak", type=float, default=None,
                   help=f"with --reconcilers: compressed soak after each step, seconds (default {WALK_DEFAULTS['soak']:g})")
    p.add_argument("--ttl-scale", type=float, default=None,
                   help=f"with --reconcilers: DNS TTLs are divided by this (default {WALK_DEFAULTS['ttl_scale']:g})")
    p.add_argument("--min-samples", type=int, default=None,
                   help="with --reconcilers: fewer requests in a gate window: inconclusive "
                        f"(default {WALK_DEFAULTS['min_samples']})")
    p.add_argument("--keep-run-dir", action="store_true", help="with --reconcilers: keep configs and logs of the servers")
    return p


def _given(args, option: str) -> bool:
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    return value not in (None, False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.json, width=None if sys.stderr.isatty() else 160)
    if args.engine and args.reconcilers:
        console.print("error: --engine and --reconcilers are two walks: give one")
        return 2
    foreign = [o for o in (ENGINE_ONLY if args.reconcilers else RECONCILER_ONLY) if _given(args, o)]
    if foreign:
        console.print(f"error: {', '.join(foreign)} only applies {'without' if args.reconcilers else 'with'} "
                      "--reconcilers", markup=False, highlight=False)
        return 2
    for name, default in WALK_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name, value, low, high in (("--rate", args.rate, 1, 2000), ("--soak", args.soak, 2, 600),
                                   ("--baseline", args.baseline, 3, 600), ("--ttl-scale", args.ttl_scale, 1, 3600)):
        if not low <= value <= high:
            console.print(f"error: {name} must be {low}..{high}, got {value:g}")
            return 2
    if not args.reconcilers:
        from .engine_cli import run_engine

        if not 1 <= args.time_scale <= MAX_TIME_SCALE:
            console.print(f"error: --time-scale must be 1..{MAX_TIME_SCALE}, got {args.time_scale}")
            return 2
        stop_on_signals()
        try:
            return run_engine(args, console)
        except Interrupted as exc:
            console.print(f"interrupted ({exc}); every started process was stopped")
            return 1
    options = Options(stack_file=args.config, rate=args.rate, soak=args.soak, baseline=args.baseline,
                      ttl_scale=args.ttl_scale, until=args.until, inject=args.inject, out_dir=args.out,
                      min_samples=args.min_samples, keep_run_dir=args.keep_run_dir)
    try:
        prepared = prepare(options)
    except (ConfigError, BadInjection, ValueError) as exc:
        for line in (exc.problems if isinstance(exc, ConfigError) else [str(exc)]):
            console.print(f"error: {line}", markup=False, highlight=False)
        return 2
    stop_on_signals()
    try:
        result = run(options, lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True), prepared)
    except Interrupted as exc:
        console.print(f"interrupted ({exc}); every started process was stopped")
        return 1
    from .report import (Records, markdown_table, render_table, step_rows, summary, target_line, timeline_png,
                         write_json)

    records = Records(result.records_path)
    rows = step_rows(result, records)
    summ = summary(result, records, rows)
    write_json(options.out_dir / "report.json", result, rows, summ)
    (options.out_dir / "report.md").write_text(markdown_table(rows))
    timeline_png(options.out_dir / "timeline.png", result, records)
    if args.json:
        print((options.out_dir / "report.json").read_text())
    else:
        console.print(render_table(rows))
        console.print(f"requests {summ['requests']}, failed {summ['failed']}; baseline p95 "
                      f"{summ['baseline_p95_ms']} ms, worst step p95 {summ['max_p95_vs_baseline']}x baseline; "
                      f"switchover window {summ['switchover_window_ms']} ms, write stall "
                      f"{summ['switchover_write_stall_ms']} ms; {summ['duration_s']} s in all")
        for t in summ["targets"]:
            console.print(target_line(t), markup=False, highlight=False)
        console.print(f"report: {options.out_dir}/report.json, {options.out_dir}/report.md, "
                      f"{options.out_dir}/timeline.png; processes stopped: {len(summ['processes_stopped'])}")
    return exit_code(result, summ)


def exit_code(result, summ: dict) -> int:
    bad_steps = [s for s in result.steps if s.outcome in ("failed", "refused", "not-recovered", "error")
                 and s.fault is None and s.action != "rollback"]
    rollbacks_ok = all(r["outcome"] == "recovered" for r in summ["rollbacks"])
    last_ok = bool(result.steps) and result.steps[-1].outcome == "passed"
    if not result.options.inject:
        return 0 if summ["failed"] == 0 and not bad_steps and last_ok else 1
    return 0 if rollbacks_ok and last_ok and not bad_steps else 1


if __name__ == "__main__":
    sys.exit(main())
