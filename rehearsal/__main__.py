"""``./rehearse``: the whole migration plan on one machine, under load, each step applied by pulumi up.

The steps are applied by the real ``pulumi up`` on the twin of production (:mod:`rehearsal.engine_cli`).
Exit codes: 0 every step passed (and, without injected faults, no request failed; with faults, every
rollback completed and recovered); 1 otherwise; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from bazbii_plan.stackconfig import MAX_TIME_SCALE

from .faults import FAULTS
from .procs import Interrupted, stop_on_signals
from .sequence import BASELINE_SECONDS

DEFAULT_TIME_SCALE = 1800  # bazbii:timeScale of the rehearsal stack: a day in 48 s
RATE_RANGE = (1, 2000)
BASELINE_RANGE = (3, 600)


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
    p.add_argument("--time-scale", type=int, default=DEFAULT_TIME_SCALE,
                   help="bazbii:timeScale of the rehearsal stack: every soak, metrics window and DNS wait divided "
                        f"by it (default {DEFAULT_TIME_SCALE}: a day in 48 s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=args.json, width=None if sys.stderr.isatty() else 160)
    for name, value, (low, high) in (("--rate", args.rate, RATE_RANGE), ("--baseline", args.baseline, BASELINE_RANGE),
                                     ("--time-scale", args.time_scale, (1, MAX_TIME_SCALE))):
        if not low <= value <= high:
            console.print(f"error: {name} must be {low}..{high}, got {value:g}")
            return 2
    from .engine_cli import run_engine

    stop_on_signals()
    try:
        return run_engine(args, console)
    except Interrupted as exc:
        console.print(f"interrupted ({exc}); every started process was stopped")
        return 1


if __name__ == "__main__":
    sys.exit(main())
