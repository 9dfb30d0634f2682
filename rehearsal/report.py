"""Figures from the per-request records: a table per step, a JSON report and a timeline PNG.

Latency is measured from each request's *scheduled* start (open loop), so a stall counts in
full. "Longest write stall" is the longest a write waited, from its scheduled start to its
answer (or failure), among the writes scheduled in the window.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .runner import RunResult


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


def step_rows(result: RunResult, records: Records) -> list[dict]:
    base = records.window(*result.baseline)
    rows = [{"track": "-", "step": "baseline", "action": "", "outcome": "", "duration_s":
             round(result.baseline[1] - result.baseline[0], 1), **asdict(base), "p95_vs_baseline": 1.0}]
    for s in result.steps:
        w = records.window(s.started, s.ended)
        ratio = p95_vs_baseline(w, base)
        rows.append({"track": s.track, "step": s.step, "action": s.action, "outcome": s.outcome, "fault": s.fault,
                     "started": round(s.started, 3), "ended": round(s.ended, 3),
                     "duration_s": round(s.ended - s.started, 1), "apply_s": round(s.applied - s.started, 2),
                     **asdict(w), "p95_vs_baseline": ratio, "served_by": records.served_by(s.started, s.ended),
                     "timings": {k: v for k, v in s.timings.items() if k != "switchover_window"},
                     "notes": s.notes, "gate": s.gate})
    return rows


def summary(result: RunResult, records: Records, rows: list[dict]) -> dict:
    total_failed = int(records.failed.sum())
    steps = [r for r in rows[1:]]
    switch = [r for r in steps if "switchover_window_ms" in r.get("timings", {})]
    summ = {
        "requests": len(records), "failed": total_failed,
        "rate": result.options.rate, "soak_s": result.options.soak, "ttl_scale": result.options.ttl_scale,
        "duration_s": round(result.ended - result.started, 1),
        "baseline_p95_ms": rows[0]["p95_ms"],
        "max_p95_vs_baseline": max((r["p95_vs_baseline"] or 0 for r in steps), default=None),
        "switchover_write_stall_ms": switch[-1]["write_stall_ms"] if switch else None,
        "switchover_window_ms": switch[-1]["timings"]["switchover_window_ms"] if switch else None,
        "injected": result.options.inject,
        "rollbacks": [{"step": r["step"], "outcome": r["outcome"]} for r in steps if r["action"] == "rollback"],
        "first_failures": records.failures(),
        "error": result.error,
        "processes_stopped": result.stopped,
        "run_dir": result.run_dir,
    }
    summ["targets"] = targets(result, rows, summ)
    return summ


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


def targets(result: RunResult, rows: list[dict], summ: dict) -> list[dict]:
    """Issue 11's targets, each with its measured value and whether it was met."""
    steps = [r for r in rows[1:] if r["action"] != "rollback"]
    slow = [f"{r['step']} ({r['p95_vs_baseline']}x)" for r in steps
            if r["p95_vs_baseline"] is not None and r["p95_vs_baseline"] > P95_TARGET_FACTOR]
    out = []
    if not result.options.inject:
        out.append(failed_requests_target(summ["failed"]))
    out.append(p95_target(slow))
    stall = summ["switchover_write_stall_ms"]
    if stall is not None:
        out.append(switchover_stall_target(stall))
    for r in summ["rollbacks"]:
        out.append({"target": f"rollback of {r['step']} recovers (< 1 % errors) within two soak intervals",
                    "value": r["outcome"], "met": r["outcome"] == "recovered"})
    return out


def write_json(path: Path, result: RunResult, rows: list[dict], summ: dict) -> None:
    path.write_text(json.dumps({"summary": summ, "steps": rows}, indent=2, default=str))


def render_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="rehearsal: one row per step (latency from the scheduled start)")
    for col in ("track", "step", "action", "outcome", "s", "requests", "failed", "p50 ms", "p95 ms", "p99 ms",
                "p95/base", "write stall ms"):
        table.add_column(col, justify="right" if col not in ("track", "step", "action", "outcome") else "left")
    for r in rows:
        outcome = r["outcome"] + (f" ({r['fault']})" if r.get("fault") else "")
        style = "red" if r["failed"] or r["outcome"] in ("failed", "refused", "not-recovered", "error") else None
        table.add_row(r["track"], r["step"], r["action"], outcome, f"{r['duration_s']:.1f}", str(r["requests"]),
                      str(r["failed"]), _f(r["p50_ms"]), _f(r["p95_ms"]), _f(r["p99_ms"]),
                      _f(r["p95_vs_baseline"]), _f(r["write_stall_ms"]), style=style)
    return table


def markdown_table(rows: list[dict]) -> str:
    head = "| track | step | action | outcome | s | requests | failed | p50 ms | p95 ms | p99 ms | p95 / baseline | longest write stall ms |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        outcome = r["outcome"] + (f" ({r['fault']})" if r.get("fault") else "")
        lines.append(f"| {r['track']} | {r['step']} | {r['action']} | {outcome} | {r['duration_s']:.1f} | "
                     f"{r['requests']} | {r['failed']} | {_f(r['p50_ms'])} | {_f(r['p95_ms'])} | {_f(r['p99_ms'])} | "
                     f"{_f(r['p95_vs_baseline'])} | {_f(r['write_stall_ms'])} |")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) and v < 10 else f"{v:.0f}" if isinstance(v, float) else str(v))


def timeline_png(path: Path, result: RunResult, records: Records) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if not len(records):
        return
    t0 = result.baseline[0]
    sec = np.floor(records.scheduled - t0).astype(int)
    last = int(np.floor(records.scheduled.max() - t0))  # the last second is cut short by the stop
    keep = (sec >= 0) & (sec < last)
    sec, lat, failed = sec[keep], records.latency_ms[keep], records.failed[keep]
    n = int(sec.max()) + 1
    count = np.bincount(sec, minlength=n)
    errors = np.bincount(sec, weights=failed.astype(float), minlength=n)
    p95 = np.full(n, np.nan)
    for i in range(n):
        vals = lat[sec == i]
        if len(vals):
            p95[i] = np.percentile(vals, 95)
    x = np.arange(n)
    fig, axes = plt.subplots(3, 1, figsize=(15, 9), sharex=True, gridspec_kw={"hspace": 0.12})
    axes[0].plot(x, count, color="tab:blue", lw=1)
    axes[0].set_ylabel("requests/s\n(by scheduled start)")
    axes[0].set_ylim(0, max(count.max() * 1.25, 1))
    rate = np.divide(errors, count, out=np.zeros(n), where=count > 0) * 100
    axes[1].plot(x, rate, color="tab:red", lw=1)
    axes[1].axhline(1.0, color="tab:red", ls=":", lw=0.8)
    axes[1].text(0, 1.0, " 1 % trigger", color="tab:red", va="bottom", fontsize=8)
    axes[1].set_ylabel("failed %")
    axes[1].set_ylim(0, max(5.0, float(np.nanmax(rate)) * 1.2))
    axes[2].semilogy(x, p95, color="tab:green", lw=1)
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    axes[2].yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
    axes[2].yaxis.set_major_formatter(plain)
    axes[2].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    base_sel = (records.scheduled >= result.baseline[0]) & (records.scheduled < result.baseline[1])
    if base_sel.any():
        base_p95 = float(np.percentile(records.latency_ms[base_sel], 95))
        for factor, style in ((1.0, "--"), (1.5, ":")):
            axes[2].axhline(base_p95 * factor, color="gray", ls=style, lw=0.8)
            axes[2].text(0, base_p95 * factor, f" {factor:g}x baseline p95", color="gray", va="bottom", fontsize=8)
    axes[2].set_ylabel("p95 ms per second (log)")
    axes[2].set_xlabel(f"seconds since the baseline started (rate {result.options.rate:g}/s, soak "
                       f"{result.options.soak:g} s, TTLs time-scaled 1/{result.options.ttl_scale:g})")
    base_a, base_b = 0, result.baseline[1] - t0
    axes[0].text((base_a + base_b) / 2, axes[0].get_ylim()[1] * 0.98, "baseline", rotation=90, ha="center",
                 va="top", fontsize=7, color="dimgray")
    colors = {"apply": "#dddddd", "retry": "#cfe8cf", "rollback": "#f6c6c6"}
    for i, s in enumerate(result.steps):
        a, b = s.started - t0, s.ended - t0
        for ax in axes:
            ax.axvspan(a, b, color=colors.get(s.action, "#eeeeee"), alpha=0.55 if i % 2 else 0.35, lw=0)
            if s.action == "rollback":
                ax.axvline(a, color="tab:red", lw=1.2)
        label = s.step + (" (rollback)" if s.action == "rollback" else " (retry)" if s.action == "retry" else "")
        axes[0].text((a + b) / 2, axes[0].get_ylim()[1] * 0.98, label, rotation=90, ha="center", va="top",
                     fontsize=7, color="darkred" if s.action == "rollback" else "black")
    axes[0].set_title("bazbii rehearsal: live load through the whole plan (grey: step + soak, red: rollback, "
                      "green: retry)", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
