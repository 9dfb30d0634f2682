"""Benchmark: ``./preview --all`` against its import floor, in one run (issue 28: within 4x).

The import floor is the time a fresh interpreter takes to import everything ``--all`` needs: exactly the
modules a ``--all`` run of this round had loaded when it ended (so the floor follows the code). Both are
measured as separate processes, from interpreter start to exit, alternating over ``--rounds``; the report
gives each median with its spread (min-max) and the ratio of the medians. Exit 1 when the ratio is above
``--max-ratio`` (default 4), 2 when a ``--all`` run fails.

    venv/bin/python -m bench.bench_preview [--rounds 3] [--max-ratio 4]

Figures depend on the machine and on what else runs on it: say where they were measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_RATIO = 4.0

# A --all run that leaves the names of the modules it loaded in the file named by argv[1].
_PREVIEW_ALL = """
import json, runpy, sys
out = sys.argv[1]
sys.argv = ["offline_preview", "--all"]
try:
    runpy.run_module("offline_preview", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as stop:
    code = stop.code
with open(out, "w") as f:
    json.dump(sorted(name for name in sys.modules if not name.startswith("__")), f)
sys.exit(code)
"""
# The floor: import each of those modules in a fresh interpreter.
_IMPORT_FLOOR = """
import importlib, json, sys
for name in json.load(open(sys.argv[1])):
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def _timed(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    code = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - started, code


def summarise(floor: list[float], full: list[float], max_ratio: float = MAX_RATIO) -> tuple[str, bool]:
    """The report of the rounds (medians, spread, ratio of the medians) and whether the ratio is within bound."""
    def spread(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"

    ratio = statistics.median(full) / statistics.median(floor)
    ok = ratio <= max_ratio
    return ("\n".join([f"import floor:   {spread(floor)}",
                       f"preview --all:  {spread(full)}",
                       f"ratio:          {ratio:.1f}x the import floor ({'within' if ok else 'ABOVE'} {max_ratio:g}x)"]),
            ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_preview", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each, alternating (default 3)")
    parser.add_argument("--max-ratio", type=float, default=MAX_RATIO,
                        help="exit 1 above this ratio of the medians (default %(default)g)")
    args = parser.parse_args(argv)
    floor: list[float] = []
    full: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bazbii-bench-preview-") as work:
        modules = os.path.join(work, "modules.json")
        for round_ in range(1, args.rounds + 1):
            seconds, code = _timed(["-c", _PREVIEW_ALL, modules])
            if code != 0:
                print(f"preview --all failed (exit {code}) in round {round_}", file=sys.stderr)
                return 2
            full.append(seconds)
            floor.append(_timed(["-c", _IMPORT_FLOOR, modules])[0])
            print(f"round {round_}: import floor {floor[-1]:.2f} s, preview --all {full[-1]:.2f} s", file=sys.stderr)
        count = len(json.load(open(modules)))
    text, ok = summarise(floor, full, args.max_ratio)
    print(f"{text}\n(the floor imports the {count} modules a --all run had loaded)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
