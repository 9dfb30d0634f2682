"""``./rehearse --engine``: parse, start, walk, report (the walk itself is :mod:`rehearsal.engine_walk`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rich.console import Console

from engine.build import EngineUnavailable, installed
from twin.lab import LabError

from .engine_report import table, timeline_png, write_json
from .engine_walk import EngineRehearsal, check_injections, infra_sequence, walk


def run_engine(args, console: Console) -> int:
    """0 when every step was applied and its rollback triggers passed (after a fault's rollback and retry)."""
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    faults: dict[str, str] = {}
    try:
        sequence = infra_sequence(args.until)
        for value in args.inject:
            fault, sep, step = value.partition("@")
            if not sep:
                raise ValueError(f"--inject {value!r}: expected FAULT@STEP")
            faults[step] = fault
        check_injections(faults, sequence)
        engine = installed()
        engine.need("cli", "plugins", "kube", "etcd", "kubernetes", "command", "cloudflare")
    except (ValueError, EngineUnavailable) as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    out: Path = args.out
    try:
        rehearsal = EngineRehearsal.start(engine, args.time_scale, args.rate, out, say)
    except (LabError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"error: the twin did not start: {exc}", markup=False, highlight=False)
        return 1
    try:
        passed = walk(rehearsal, sequence, dict(faults))
    except (LabError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # a server, the engine or the cluster failed under the walk: what was recorded is still reported
        console.print(f"error: the walk stopped: {exc}", markup=False, highlight=False)
        passed = False
    finally:
        rehearsal.stop()
    settings = {"timeScale": args.time_scale, "rate": args.rate, "until": sequence[-1], "inject": args.inject}
    write_json(out / "report.json", rehearsal.records, passed, settings)
    pictured = timeline_png(out / "timeline.png", rehearsal.load_csv, rehearsal.records)
    if args.json:
        print(json.dumps(json.loads((out / "report.json").read_text())))
    else:
        console.print(table(rehearsal.records))
        console.print(f"{'PASSED' if passed else 'FAILED'}; report: {out}/report.json"
                      + (f", {out}/timeline.png" if pictured else ""), markup=False, highlight=False)
    return 0 if passed else 1
