"""``./rehearse``: parse, start, walk, report (the walk itself is :mod:`rehearsal.engine_walk`)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

from engine.build import EngineUnavailable, installed
from twin.lab import LabError

from .engine_report import load_figures, table, targets, timeline_png, write_json
from .report import target_line
from .engine_walk import EngineRehearsal, fails_requests, injections, switchover_line, walk, walk_sequence


def run_engine(args, console: Console) -> int:
    """0 when every step was applied and its rollback triggers passed (after a fault's rollback and retry)."""
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    try:
        sequence = walk_sequence(args.until)
        faults = injections(args.inject, args.until)
        engine = installed()
        engine.need("cli", "plugins", "kube", "etcd", "kubernetes", "command", "cloudflare")
    except (ValueError, EngineUnavailable) as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        return 2
    out: Path = args.out
    try:
        rehearsal = EngineRehearsal.start(engine, args.time_scale, args.rate, out, say, baseline=args.baseline)
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
    figures = load_figures(rehearsal.records, rehearsal.load_csv)
    # No request may fail, as ./rehearse, unless a fault fails them by design (the gateway's): then the
    # rollback and the retry decide. replica-lag must fail none.
    passed = passed and (any(fails_requests(f) for f in faults.values()) or figures.failed == 0)
    settings = {"timeScale": args.time_scale, "rate": args.rate, "baseline": args.baseline, "until": sequence[-1][1],
                "inject": args.inject, "serversDisk": str(rehearsal.twin.scratch or tempfile.gettempdir()),
                "elsewhereIdle": rehearsal.twin.elsewhere_idle}
    write_json(out / "report.json", rehearsal.records, passed, settings, figures)
    pictured = timeline_png(out / "timeline.png", rehearsal.load_csv, rehearsal.records,
                            figures.baseline.p95_ms if figures.baseline else None)
    if args.json:
        print(json.dumps(json.loads((out / "report.json").read_text())))
    else:
        console.print(table(rehearsal.records, figures))
        console.print(f"requests {figures.requests}, failed {figures.failed}; baseline p95 "
                      f"{figures.baseline.p95_ms if figures.baseline else '-'} ms", markup=False, highlight=False)
        for record in rehearsal.records:
            for attempt in record.attempts:
                if attempt.switchover:  # the stall's cause, step by step: where PgBouncer held the clients
                    console.print(f"{record.step}: {switchover_line(attempt.switchover)}", markup=False,
                                  highlight=False)
        for target in targets(rehearsal.records, figures):
            console.print(target_line(target), markup=False, highlight=False)
        console.print(f"{'PASSED' if passed else 'FAILED'}; report: {out}/report.json"
                      + (f", {out}/timeline.png" if pictured else ""), markup=False, highlight=False)
    return 0 if passed else 1
