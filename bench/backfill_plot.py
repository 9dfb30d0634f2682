"""The backfill benchmark as a picture: every setting's throughput against the load's p99, and how
the adaptive run steered (its batch size, pause and budget in use over time, and the share of the
time its batches' cost allowed them to run).

    venv/bin/python -m bench.backfill_plot RESULTS.json OUT.png     # from bench_backfill --json
    venv/bin/python -m bench.bench_backfill --plot OUT.png           # at the end of a run
"""

from __future__ import annotations

import json
import sys

SINGLE = "single UPDATE"  # off the scale of the others; left out of the picture


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    target = summary.get("target_p99", 1.5)
    log = next((p["log"] for p in summary.get("probe", []) if p and p.get("log")), [])
    costed = [(step["at_s"], 100 * step["allowed_duty"]) for step in log if step.get("allowed_duty") is not None]
    fig, axes = plt.subplots(1, 3 if costed else 2, figsize=(18 if costed else 13, 5),
                             gridspec_kw=dict(width_ratios=[1, 1.3, 0.8] if costed else [1, 1.3]))
    left, right = axes[0], axes[1]
    for s in summary["settings"]:
        if s["setting"] == SINGLE:
            continue
        adaptive = not s["setting"].startswith("fixed")
        left.scatter(s["rows_per_s"], s["p99_ratio"], s=90 if adaptive else 40, marker="*" if adaptive else "o",
                     color="tab:red" if adaptive else ("tab:blue" if s["p99_ratio"] <= target else "tab:gray"),
                     zorder=3)
        left.annotate(s["setting"].removeprefix("fixed "), (s["rows_per_s"], s["p99_ratio"]),
                      textcoords="offset points", xytext=(5, 4), fontsize=8)
    left.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target {target:g}x")
    left.legend(loc="upper left", fontsize=8)
    left.set_xscale("log")
    left.margins(x=0.15, y=0.1)
    left.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel("backfill throughput, rows/s (log)")
    left.set_ylabel("load p99 / baseline (median of rounds)")
    left.set_title("each setting: throughput against the load's p99")
    left.grid(True, alpha=0.3)

    if log:
        t = [step["at_s"] for step in log]
        right.step(t, [100 * step["usage"] for step in log], where="post", color="tab:red", label="budget in use, %")
        right.axhline(100, color="tab:red", linestyle="--", linewidth=1)
        right.set_ylabel("budget in use, % (worst source)")
        right.set_xlabel("seconds since the first batch")
        batches = right.twinx()
        batches.step(t, [step["batch"] for step in log], where="post", color="tab:blue", label="batch size, rows")
        batches.step(t, [step["pause_ms"] for step in log], where="post", color="tab:green", label="pause, ms")
        batches.set_ylabel("batch size (rows) / pause (ms)")
        lines = right.get_legend_handles_labels()[0] + batches.get_legend_handles_labels()[0]
        right.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
        right.set_title("the adaptive run (first round): how it steered")
        right.grid(True, alpha=0.3)
    else:
        right.set_axis_off()
    if costed:  # what the batches' cost allowed (batchcost), once it was plain
        duty = axes[2]
        duty.step(*zip(*costed), where="post", color="tab:purple")
        duty.set_ylim(bottom=0)
        duty.set_xlabel("seconds since the first batch")
        duty.set_ylabel("% of the time batches may run")
        duty.set_title("what the batches' cost allowed (first round)")
        duty.grid(True, alpha=0.3)
    fig.suptitle(f"latency-aware backfill vs fixed settings, load p99 baseline {summary['baseline_p99_ms']:.2f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.backfill_plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    try:
        with open(args[0]) as fh:
            summary = json.load(fh)
        plot(summary, args[1])
    except (OSError, ValueError, KeyError) as exc:
        print(f"bench.backfill_plot: {args[0]}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
