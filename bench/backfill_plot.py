"""The backfill benchmark as a picture: the fixed settings' frontier against the adaptive run (medians
with their spread over rounds), and how the adaptive run moved its duty in its first round.

    venv/bin/python -m bench.backfill_plot RESULTS.json OUT.png     # from bench_backfill --json
    venv/bin/python -m bench.bench_backfill --plot OUT.png           # at the end of a run
"""

from __future__ import annotations

import json
import sys

SINGLE = "single UPDATE"  # off the scale of the others; left out of the picture
VERDICT_COLOURS = {"breach": "tab:red", "clean": "tab:green", "hold": "tab:orange"}


def _errors(s: dict) -> list[list[float]]:
    return [[s["median"] - s["low"]], [s["high"] - s["median"]]]


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw=dict(width_ratios=[1.2, 1]))
    allowance = summary["budget_ms"]["median"] - summary["baseline_p99_ms"]["median"]
    for s in summary["settings"]:
        if s["setting"] == SINGLE:
            continue
        adaptive = not s["setting"].startswith("fixed")
        rate, added = s["rows_per_s"], s["p99_added_ms"]
        within = s["rounds_within_budget"] * 2 > summary["rounds"]
        left.errorbar(rate["median"], added["median"], xerr=_errors(rate), yerr=_errors(added),
                      fmt="*" if adaptive else "o", markersize=14 if adaptive else 6, capsize=3, zorder=3,
                      color="tab:red" if adaptive else ("tab:blue" if within else "tab:gray"))
        left.annotate(s["setting"].removeprefix("fixed "), (rate["median"], added["median"]),
                      textcoords="offset points", xytext=(6, 5), fontsize=8)
    frontier = summary["frontier_rows_per_s"]
    left.axvspan(frontier["low"], frontier["high"], color="tab:blue", alpha=0.12,
                 label="frontier: best fixed within budget (lowest-highest round)")
    left.axvline(frontier["median"], color="tab:blue", linewidth=1, label="frontier, median")
    left.axhline(allowance, color="tab:red", linestyle="--", linewidth=1,
                 label=f"budget: +{allowance:.2f} ms over the baseline (median)")
    left.set_xscale("log")
    left.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_xlabel("backfill throughput, rows/s (log)")
    left.set_ylabel("load p99 added over the load alone, ms")
    left.set_title(f"medians and spread of {summary['rounds']} paired rounds (blue: within budget in most rounds)")
    left.legend(loc="upper left", fontsize=8)
    left.grid(True, alpha=0.3)

    log = next((run["log"] for run in summary.get("adaptive_runs", []) if run.get("log")), [])
    if log:
        t = [step["at_s"] for step in log]
        right.step(t, [100 * step["duty"] for step in log], where="post", color="tab:purple", label="duty, %")
        for verdict, colour in VERDICT_COLOURS.items():
            points = [(step["at_s"], 100 * step["duty"]) for step in log if step["verdict"] == verdict]
            if points:
                right.scatter(*zip(*points), s=14, color=colour, label=verdict, zorder=3)
        right.set_ylim(bottom=0)
        right.set_xlabel("seconds since the first batch")
        right.set_ylabel("share of the time batches run, %")
        right.set_title("the adaptive run (first round): its duty and each window's verdict")
        right.legend(loc="upper right", fontsize=8)
        right.grid(True, alpha=0.3)
    else:
        right.set_axis_off()
    fig.suptitle(f"latency-aware backfill vs fixed rates; load p99 alone {summary['baseline_p99_ms']['median']:.2f} ms "
                 f"(median), budget {summary['budget_ms']['median']:.2f} ms")
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
