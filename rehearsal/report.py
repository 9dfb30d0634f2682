"""Figures from the load's per-request records (``load.csv``) and the rehearsal's targets.

Latency is measured from each request's *scheduled* start (open loop), so a stall counts in
full. "Longest write stall" is the longest a write waited, from its scheduled start to its
answer (or failure), among the writes scheduled in the window.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Window:
    requests: int
    failed: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    write_stall_ms: float | None


class Records:
    def __init__(self, path: Path):
        rows = list(csv.DictReader(open(path))) if path.exists() else []
        self.kind = np.array([r["kind"] for r in rows])
        self.scheduled = np.array([float(r["scheduled"]) for r in rows])
        self.end = np.array([float(r["end"]) for r in rows])
        self.status = np.array([int(r["status"]) for r in rows])
        self.pool = np.array([r["pool"] for r in rows])
        self.gateway = np.array([r["gateway"] for r in rows])
        self.version = np.array([r["version"] for r in rows])
        self.error = [r["error"] for r in rows]
        self.latency_ms = (self.end - self.scheduled) * 1000.0
        self.failed = (self.status == 0) | (self.status >= 400)
        self.writes = np.char.endswith(self.kind.astype(str), "write") if len(rows) else np.array([], bool)

    def __len__(self) -> int:
        return len(self.kind)

    def window(self, start: float, end: float) -> Window:
        sel = (self.scheduled >= start) & (self.scheduled < end)
        lat = self.latency_ms[sel]
        writes = self.latency_ms[sel & self.writes]

        def q(p):
            return round(float(np.percentile(lat, p)), 2) if len(lat) else None

        return Window(int(sel.sum()), int((sel & self.failed).sum()), q(50), q(95), q(99),
                      round(float(writes.max()), 1) if len(writes) else None)

    def served_by(self, start: float, end: float) -> dict[str, int]:
        sel = (self.scheduled >= start) & (self.scheduled < end) & ~self.failed
        keys = [f"{g or '?'}/{v or '?'}" for g, v in zip(self.gateway[sel], self.version[sel])]
        out: dict[str, int] = {}
        for k in keys:
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))

    def failures(self, limit: int = 10) -> list[dict]:
        idx = np.nonzero(self.failed)[0][:limit]
        return [{"kind": str(self.kind[i]), "scheduled": float(self.scheduled[i]), "status": int(self.status[i]),
                 "pool": str(self.pool[i]), "gateway": str(self.gateway[i]), "error": self.error[i]} for i in idx]


def p95_vs_baseline(window: Window, baseline: Window) -> float | None:
    return round(window.p95_ms / baseline.p95_ms, 2) if (window.p95_ms and baseline.p95_ms) else None


P95_TARGET_FACTOR = 1.5
SWITCHOVER_STALL_TARGET_MS = 100.0


def failed_requests_target(failed: int) -> dict:
    return {"target": "0 failed requests", "value": failed, "met": failed == 0}


def p95_target(slow: list[str]) -> dict:
    """``slow``: the steps above the factor, each as ``step (ratio x)``."""
    return {"target": f"p95 of each step <= {P95_TARGET_FACTOR}x baseline", "value": ", ".join(slow) or "all",
            "met": not slow}


def switchover_stall_target(stall_ms: float) -> dict:
    return {"target": f"longest write stall at the switchover <= {SWITCHOVER_STALL_TARGET_MS:g} ms",
            "value": stall_ms, "met": stall_ms <= SWITCHOVER_STALL_TARGET_MS}


def target_line(target: dict) -> str:
    return f"  target {'met' if target['met'] else 'MISSED'}: {target['target']}: {target['value']}"
