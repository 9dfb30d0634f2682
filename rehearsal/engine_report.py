"""The engine rehearsal's report: a table per step, ``report.json`` and a timeline picture of the load."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from rich.table import Table
from rich.text import Text

from engine.events import CHANGING_OPS

from .engine_walk import Attempt, StepRecord, summary


def table(records: list[StepRecord]) -> Table:
    out = Table(title="Rehearsal through pulumi up")
    for column in ("track", "step", "attempts", "gate before (the check)", "up s", "resources changed", "triggers after",
                   "rolled back"):
        out.add_column(column)
    for record in records:
        refused = [a for a in record.attempts if not a.applied]
        applied = next((a for a in record.attempts if a.applied), None)
        gate = "passed" if applied else "REFUSED"
        if refused:
            gate += f" after {len(refused)} refusal(s), the last: {'; '.join(refused[-1].reasons)[:200]}"
        cells = [record.track, record.step + (f" [{record.fault}]" if record.fault else ""), str(len(record.attempts)), gate,
                 f"{applied.seconds:g}" if applied else "-", changed(applied),
                 "\n".join([record.triggers, *record.trigger_signals]), "yes" if record.rolled_back else ""]
        out.add_row(*(Text(cell) for cell in cells))  # plain text: a fault's [name] is not markup
    return out


def changed(applied: Attempt | None) -> str:
    """The resources the engine changed applying a step, with its operations: ``3 (update 2, create 1)``."""
    if applied is None:
        return "-"
    ops = ", ".join(f"{op} {n}" for op, n in sorted(applied.changes.items(), key=lambda item: -item[1])
                    if op in CHANGING_OPS and n)
    return f"{applied.changed} ({ops})" if ops else str(applied.changed)


def write_json(path: Path, records: list[StepRecord], passed: bool, settings: dict) -> None:
    path.write_text(json.dumps({"passed": passed, "settings": settings, "steps": summary(records)}, indent=2))


def timeline_png(path: Path, load_csv: Path, records: list[StepRecord]) -> bool:
    """Requests and failed requests per second, with each applied step marked; False when there was no load."""
    if not load_csv.exists():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from datetime import datetime

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
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot([x - t0 for x in xs], [total[x] for x in xs], label="requests/s", color="tab:blue")
    ax.plot([x - t0 for x in xs], [failed[x] for x in xs], label="failed/s", color="tab:red")
    for record in records:
        for attempt in record.attempts:
            if attempt.applied:
                at = datetime.fromisoformat(attempt.at).timestamp() - t0
                if at >= 0:
                    ax.axvline(at, color="grey", linestyle=":")
                    ax.text(at, ax.get_ylim()[1] * 0.95, record.step, rotation=90, fontsize=7, va="top")
    ax.set_xlabel("seconds since the load started")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
