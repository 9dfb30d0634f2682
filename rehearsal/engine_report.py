"""The engine rehearsal's report: a table per step, ``report.json`` and a timeline picture of the load."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

from rich.table import Table
from rich.text import Text

from engine.events import CHANGING_OPS

from .engine_walk import Attempt, StepRecord, fails_requests, prod_config, summary
from .report import (P95_TARGET_FACTOR, Records, Window, failed_requests_target, p95_target, p95_vs_baseline,
                     switchover_stall_target)


@dataclass
class LoadFigures:
    """What the load saw: the baseline before the first step it met, and each step's window (None: the
    step was applied before the load started), from its ``pulumi up`` to the next step's."""

    baseline: Optional[Window]
    steps: list[Optional[Window]]
    requests: int
    failed: int


def _started(record: StepRecord) -> float:
    first = record.attempts[0]
    return datetime.fromisoformat(first.at).timestamp() - first.seconds  # ``at``: when that up ended


def load_figures(records: list[StepRecord], load_csv: Path) -> LoadFigures:
    load = Records(load_csv)
    if not len(load) or not records:
        return LoadFigures(None, [None] * len(records), len(load), int(load.failed.sum()) if len(load) else 0)
    first, last = float(load.scheduled.min()), float(load.scheduled.max()) + 1.0
    starts = [_started(r) for r in records]
    under_load = next((i for i, start in enumerate(starts) if start >= first), len(records))
    baseline = load.window(first, starts[under_load] if under_load < len(records) else last)
    steps: list[Optional[Window]] = [None] * under_load
    for i in range(under_load, len(records)):
        steps.append(load.window(starts[i], starts[i + 1] if i + 1 < len(records) else last))
    return LoadFigures(baseline, steps, len(load), int(load.failed.sum()))


def targets(records: list[StepRecord], figures: LoadFigures) -> list[dict]:
    """The rehearsal's targets (as ./rehearse's, one definition in rehearsal/report.py): no failed request
    (unless a fault fails requests by design), each step's p95 within its factor of the baseline (the steps a fault did not hit),
    and the switchover's longest write stall."""
    out = [] if any(fails_requests(r.fault) for r in records) else [failed_requests_target(figures.failed)]
    slow = []
    for record, window in zip(records, figures.steps):
        ratio = p95_vs_baseline(window, figures.baseline) if window and figures.baseline else None
        if ratio is not None and not record.fault and ratio > P95_TARGET_FACTOR:
            slow.append(f"{record.step} ({ratio}x)")
    out.append(p95_target(slow))
    switchovers = switchover_steps()
    stalls = [window.write_stall_ms for record, window in zip(records, figures.steps)
              if record.step in switchovers and record.applied and window and window.write_stall_ms is not None]
    if stalls:
        out.append(switchover_stall_target(stalls[-1]))
    return out


def switchover_steps() -> set[str]:
    """The steps that switch PostgreSQL over (their change sets ``database.switchover``): the longest write
    stall of such a step's window is the switchover's (nothing else in it pauses the writes)."""
    return {step.name for track in prod_config().plan.tracks.values() for step in track.steps
            if "switchover" in (step.changes.get("database") or {})}


def table(records: list[StepRecord], figures: LoadFigures) -> Table:
    out = Table(title="Rehearsal through pulumi up")
    for column in ("track", "step", "attempts", "gate before (the check)", "up s", "resources changed", "triggers after",
                   "rolled back", "requests", "failed", "p95 ms", "p95 / baseline"):
        out.add_column(column)
    base = figures.baseline
    if base is not None:
        out.add_row(*(Text(c) for c in ("-", "baseline", "", "", "", "", "", "", str(base.requests), str(base.failed),
                                        _ms(base.p95_ms), "1.0")))
    for record, window in zip(records, figures.steps):
        refused = [a for a in record.attempts if not a.applied]
        applied = next((a for a in record.attempts if a.applied), None)
        gate = "passed" if applied else "REFUSED"
        if applied and applied.gate:
            gate = "\n".join(applied.gate)  # the check's verdict with its numbers
        elif applied:
            gate = "passed (no live gate)"
        if refused:
            gate += f" after {len(refused)} refusal(s), the last: {'; '.join(refused[-1].reasons)[:200]}"
        ratio = p95_vs_baseline(window, base) if window and base else None
        cells = [record.track, record.step + (f" [{record.fault}]" if record.fault else ""), str(len(record.attempts)), gate,
                 f"{applied.seconds:g}" if applied else "-", changed(applied),
                 "\n".join([record.triggers, *record.trigger_signals]), "yes" if record.rolled_back else "",
                 str(window.requests) if window else "-", str(window.failed) if window else "-",
                 _ms(window.p95_ms) if window else "-", f"{ratio:g}" if ratio is not None else "-"]
        out.add_row(*(Text(cell) for cell in cells))  # plain text: a fault's [name] is not markup
    return out


def _ms(value: Optional[float]) -> str:
    return f"{value:g}" if value is not None else "-"


def changed(applied: Attempt | None) -> str:
    """The resources the engine changed applying a step, with its operations: ``3 (update 2, create 1)``."""
    if applied is None:
        return "-"
    ops = ", ".join(f"{op} {n}" for op, n in sorted(applied.changes.items(), key=lambda item: -item[1])
                    if op in CHANGING_OPS and n)
    return f"{applied.changed} ({ops})" if ops else str(applied.changed)


def write_json(path: Path, records: list[StepRecord], passed: bool, settings: dict, figures: LoadFigures) -> None:
    steps = [{**step, "load": asdict(window) if window else None}
             for step, window in zip(summary(records), figures.steps)]
    path.write_text(json.dumps({
        "passed": passed, "settings": settings, "requests": figures.requests, "failed": figures.failed,
        "baseline": asdict(figures.baseline) if figures.baseline else None, "targets": targets(records, figures),
        "steps": steps}, indent=2))


P95_BUCKET_SECONDS = 10  # the latency panel's p95 is taken over this many seconds of scheduled requests


def timeline_png(path: Path, load_csv: Path, records: list[StepRecord], baseline_p95_ms: Optional[float] = None) -> bool:
    """Requests and failed requests per second, and below them the p95 latency per P95_BUCKET_SECONDS with the
    target line (P95_TARGET_FACTOR x the baseline's p95), each applied step marked; False when there was no load."""
    if not load_csv.exists():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total, failed = Counter(), Counter()
    with open(load_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            second = int(float(row["scheduled"]))
            total[second] += 1
            if not row["status"].startswith(("2", "3")):
                failed[second] += 1
    if not total:
        return False
    t0 = min(total)
    xs = sorted(total)
    fig, (ax, lat) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax.plot([x - t0 for x in xs], [total[x] for x in xs], label="requests/s", color="tab:blue")
    ax.plot([x - t0 for x in xs], [failed[x] for x in xs], label="failed/s", color="tab:red")
    load = Records(load_csv)  # the p95 as each step's is taken (report.Records.window)
    starts = range(t0, xs[-1] + 1, P95_BUCKET_SECONDS)
    p95s = [load.window(start, start + P95_BUCKET_SECONDS).p95_ms for start in starts]
    lat.plot([start + P95_BUCKET_SECONDS / 2 - t0 for start, v in zip(starts, p95s) if v is not None],
             [v for v in p95s if v is not None], color="tab:purple", label=f"p95 per {P95_BUCKET_SECONDS} s")
    if baseline_p95_ms:
        lat.axhline(P95_TARGET_FACTOR * baseline_p95_ms, color="tab:orange", linestyle="--",
                    label=f"target: {P95_TARGET_FACTOR:g}x the baseline's p95 ({baseline_p95_ms:g} ms)")
    lat.set_ylim(bottom=0)
    for record in records:
        for attempt in record.attempts:
            if attempt.applied:
                at = datetime.fromisoformat(attempt.at).timestamp() - t0
                if at >= 0:
                    for axis in (ax, lat):
                        axis.axvline(at, color="grey", linestyle=":")
                    ax.text(at, ax.get_ylim()[1] * 0.95, record.step, rotation=90, fontsize=7, va="top")
    lat.set_xlabel("seconds since the load started")
    lat.set_ylabel("ms from the scheduled start")
    ax.legend(loc="lower right")
    lat.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
