"""Benchmark: planned switchover through PgBouncer vs. a naive reconnect, under 8 writer threads.

Not a test: run it by hand (``./venv/bin/python -m bench.bench_switchover``). Every run starts
from a fresh local topology (primary, pg_basebackup replica, PgBouncer on 127.0.0.1), runs a
bounded write load (UPDATE + SELECT + INSERT per transaction, every acknowledged commit
recorded), switches over in the middle and then checks every acknowledged commit on the new
primary.

Modes, each run once per round, in this order, so that every round compares them on the same machine
state (ratios are taken within a round, against that round's pgbouncer run):
  pgbouncer     bazbii_db.replication.planned_switchover: PAUSE, fence, catch-up, promote,
                ini rewrite + RELOAD, RESUME; the old primary is stopped after the window.
  held          the same, while a client holds a transaction open through PgBouncer (idle in
                transaction, begun 1 s before the switchover) and commits it 1 s into the switchover:
                the switchover waits for it without pausing, then switches over.
  held-slipped  a client begins a transaction right before PAUSE (after the switchover's last look)
                and holds it: PAUSE waits out its bound (bazbii_plan.facts), RESUMEs, aborts.
  naive         no pooler: clients use a multi-host DSN with target_session_attrs=read-write;
                CHECKPOINT (outside the window), fast shutdown of the old primary, promote the
                replica (pg_promote(wait => false) + 1 ms polling); clients reconnect by themselves.

Figures per run: failed transactions (errors seen by clients; 'in doubt' = error on COMMIT),
lost acknowledged commits (looked up on the server that serves afterwards), the write stall (longest
gap between two acknowledged commits from 1 s before the switchover on), TPS, and for the PgBouncer
modes the window breakdown (pause, fence, lsn, catch-up, promote, reload, resume). Targets: 0 failed,
0 lost; pgbouncer median stall <= 100 ms and <= 0.25 x the naive median stall; a held transaction
(both held modes) costs at most 1 s of stall in every round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path


import psycopg

from testsupport.replication_topology import (APP_DB, APP_PASSWORD, APP_USER, WriteLoad, build_topology, hold_open,
                                       missing_acked, wait_streaming)
from bazbii_db.replication import (GateConfig, SwitchoverAborted, SwitchoverConfig, planned_switchover,
                                   require_lag_gate)
from bazbii_plan.facts import DEFAULT_PAUSE_TIMEOUT_SECONDS, SWITCHOVER_STALL_TARGET_SECONDS

STEPS = ("pause", "fence", "lsn", "catchup", "promote", "reload", "resume")
MODES = ("pgbouncer", "held", "held-slipped", "naive")
HELD_BEFORE_S = 1.0  # the held transaction begins this long before the switchover ...
HELD_INTO_S = 1.0  # ... and commits this long into it (mode held)


def run_pgbouncer(threads: int, seconds: float, switch_at: float, held: str | None = None) -> dict:
    """One switchover through PgBouncer under load; ``held``: None, "held" or "held-slipped" (module docstring)."""
    topo = build_topology()
    try:
        wait_streaming(topo)
        require_lag_gate(topo.primary.dsn(), topo.slot, config=GateConfig(window_seconds=0.5, timeout_seconds=20))
        load = WriteLoad(topo.app_dsn(), threads=threads, max_seconds=seconds + 10).start()
        holders = []

        def begin_after_the_last_look(stage: str) -> None:
            if held == "held-slipped" and stage == "pause":
                holders.append(hold_open(topo))

        try:
            if held == "held":
                time.sleep(max(0.0, switch_at - HELD_BEFORE_S))
                holders.append(hold_open(topo))
                time.sleep(HELD_BEFORE_S)
                threading.Timer(HELD_INTO_S, holders[0].commit).start()
            else:
                time.sleep(switch_at)
            config = SwitchoverConfig(database_alias=topo.alias, pgbouncer_ini_path=str(topo.bouncer.ini_path),
                                      new_host="127.0.0.1", new_port=topo.replica.port)  # the default bounds
            t0 = time.monotonic()
            try:
                report = planned_switchover(topo.primary.dsn(dbname=APP_DB), topo.replica.dsn(dbname=APP_DB),
                                            topo.bouncer.admin_dsn(), config, stop_old_primary=topo.primary.stop,
                                            on_stage=begin_after_the_last_look)
            except SwitchoverAborted as exc:
                report = exc.report
            t1 = time.monotonic()
            time.sleep(max(0.0, seconds - switch_at - (t1 - t0)))
        finally:
            result = load.stop()
            for conn in holders:
                if held == "held-slipped":
                    conn.commit()  # after the run: the abort must have left the old primary writable
                conn.close()
        serving = topo.replica if report.completed else topo.primary
        lost = missing_acked(serving.dsn(dbname=APP_DB), result)
        stall, _ = result.max_stall(start=t0 - 1.0)
        acks = result.ack_times()
        ended = report.window_ended_at or t1  # an aborted window ends with its RESUME, inside the call
        before = [t for t in acks if report.window_started_at and t <= report.window_started_at]
        after = [t for t in acks if t >= ended]
        return {
            "mode": held or "pgbouncer", "completed": report.completed, "stage": report.stage,
            "last_ack_before_pause_ms": (report.window_started_at - before[-1]) * 1000 if before else None,
            "first_ack_after_resume_ms": (after[0] - ended) * 1000 if after else None,
            "failed": len(result.failed), "in_doubt": len(result.in_doubt),
            "refused_connects": result.refused_connects, "lost": len(lost), "acked": len(result.acked),
            "tps": round(result.tps), "stall_ms": stall * 1000, "window_ms": report.window_ms,
            "switchover_ms": (t1 - t0) * 1000, "unpaused_wait_ms": report.steps_ms.get("transactions"),
            "steps_ms": {k: report.steps_ms.get(k) for k in STEPS},
            "fenced_lsn": report.fenced_lsn, "replica_replay_lsn": report.replica_replay_lsn,
            "errors": sorted({e for _, e in result.failed})[:3],
        }
    finally:
        topo.teardown()


def run_naive(threads: int, seconds: float, switch_at: float) -> dict:
    topo = build_topology(with_bouncer=False)
    try:
        wait_streaming(topo)
        dsn = (f"host=127.0.0.1,127.0.0.1 port={topo.primary.port},{topo.replica.port} dbname={APP_DB} "
               f"user={APP_USER} password={APP_PASSWORD} target_session_attrs=read-write connect_timeout=2")
        load = WriteLoad(dsn, threads=threads, max_seconds=seconds + 10).start()
        try:
            time.sleep(switch_at)
            with psycopg.connect(topo.primary.dsn(), autocommit=True) as conn:
                conn.execute("CHECKPOINT")  # outside the window: shortens the shutdown checkpoint
            t0 = time.monotonic()
            topo.primary.stop(mode="fast")
            t_stopped = time.monotonic()
            with psycopg.connect(topo.replica.dsn(), autocommit=True) as conn:
                conn.execute("SELECT pg_promote(wait => false)")
                deadline = time.monotonic() + 30
                while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("promotion did not finish in 30 s")
                    time.sleep(0.001)
            t_promoted = time.monotonic()
            time.sleep(max(0.0, seconds - switch_at - (time.monotonic() - t0)))
        finally:
            result = load.stop()
        lost = missing_acked(topo.replica.dsn(dbname=APP_DB), result)
        stall, _ = result.max_stall(start=t0 - 1.0)
        return {
            "mode": "naive", "failed": len(result.failed), "in_doubt": len(result.in_doubt),
            "refused_connects": result.refused_connects, "lost": len(lost), "acked": len(result.acked),
            "tps": round(result.tps), "stall_ms": stall * 1000, "window_ms": (t_promoted - t0) * 1000,
            "steps_ms": {"shutdown": (t_stopped - t0) * 1000, "promote": (t_promoted - t_stopped) * 1000},
            "errors": sorted({e.split(":")[0] for _, e in result.failed})[:3],
        }
    finally:
        topo.teardown()


def _line(i: int, r: dict) -> str:
    steps = ", ".join(f"{k} {v:.1f}" for k, v in r["steps_ms"].items() if v is not None)
    head = (f"{r['mode']:<12} round {i + 1}: failed {r['failed']} (in doubt {r['in_doubt']}), lost {r['lost']}/"
            f"{r['acked']} acked, stall {r['stall_ms']:.0f} ms")
    if r["mode"] == "naive":
        return (head + f", window {r['window_ms']:.1f} ms [{steps}], {r['refused_connects']} refused connects, "
                f"{r['tps']} TPS, errors {r['errors']}")
    outcome = "completed" if r["completed"] else f"aborted at {r['stage']}"
    window = f"window {r['window_ms']:.1f} ms" if r["window_ms"] is not None else "no window"
    first = r["first_ack_after_resume_ms"]
    return (head + f", {outcome} in {r['switchover_ms']:.0f} ms (unpaused wait {r['unpaused_wait_ms'] or 0:.0f} ms), "
            f"{window} [{steps}], first ack {first if first is None else round(first, 1)} ms after RESUME, "
            f"{r['tps']} TPS" + (f", fenced {r['fenced_lsn']} = replayed {r['replica_replay_lsn']}"
                                if r["completed"] else ""))


def _summary(values: list[float], digits: int = 0) -> str:
    if not values:
        return "n/a"
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every mode once (default 5)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated modes to run in each round, in this order (default {','.join(MODES)})")
    parser.add_argument("--threads", type=int, default=8, help="writer threads (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per run, in seconds (default 8)")
    parser.add_argument("--switch-at", type=float, default=4.0,
                        help="seconds into the load when the switchover starts (default 4)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})")

    rounds: list[dict[str, dict]] = []
    for i in range(args.rounds):
        rounds.append({})
        for mode in modes:
            r = (run_naive(args.threads, args.seconds, args.switch_at) if mode == "naive" else
                 run_pgbouncer(args.threads, args.seconds, args.switch_at, None if mode == "pgbouncer" else mode))
            rounds[-1][mode] = r
            print(_line(i, r), flush=True)
    runs = {mode: [rnd[mode] for rnd in rounds] for mode in modes}

    print()
    print(f"{'mode (runs)':<19} {'failed':>6} {'in doubt':>8} {'lost':>5} {'stall ms min/med/max':>22} "
          f"{'x pgbouncer min/med/max':>24} {'window ms min/med/max':>22} {'TPS med':>8}")
    for mode, group in runs.items():
        ratios = [rnd[mode]["stall_ms"] / rnd["pgbouncer"]["stall_ms"] for rnd in rounds
                  if "pgbouncer" in rnd and rnd["pgbouncer"]["stall_ms"]]
        windows = [r["window_ms"] for r in group if r["window_ms"] is not None]
        print(f"{mode + f' ({len(group)})':<19} {sum(r['failed'] for r in group):>6} "
              f"{sum(r['in_doubt'] for r in group):>8} {sum(r['lost'] for r in group):>5} "
              f"{_summary([r['stall_ms'] for r in group]):>22} {_summary(ratios, 1):>24} "
              f"{_summary(windows):>22} {statistics.median([r['tps'] for r in group]):>8.0f}")
    for mode in ("pgbouncer", "held"):
        done = [r for r in runs.get(mode, []) if r["completed"]]
        if done:
            print(f"{mode} window breakdown, median ms: " + ", ".join(
                f"{k} {statistics.median([r['steps_ms'][k] for r in done]):.1f}" for k in STEPS)
                + "; after RESUME until the first acknowledged commit (new server logins) "
                + f"{statistics.median([r['first_ack_after_resume_ms'] for r in done]):.1f}")
    if "naive" in runs:
        print("naive window breakdown, median ms: shutdown "
              f"{statistics.median([r['steps_ms']['shutdown'] for r in runs['naive']]):.1f}, promote "
              f"{statistics.median([r['steps_ms']['promote'] for r in runs['naive']]):.1f}")

    print()
    targets: list[tuple[str, str, bool]] = []
    pooled = [r for mode in ("pgbouncer", "held", "held-slipped") for r in runs.get(mode, [])]
    if pooled:
        failed, lost = sum(r["failed"] for r in pooled), sum(r["lost"] for r in pooled)
        targets.append(("0 failed transactions (PgBouncer modes)", str(failed), failed == 0))
        targets.append(("0 lost acknowledged commits (PgBouncer modes)", str(lost), lost == 0))
    if "pgbouncer" in runs:
        med = statistics.median([r["stall_ms"] for r in runs["pgbouncer"]])
        targets.append(("pgbouncer median stall <= 100 ms", f"{med:.0f} ms", med <= 100))
        if "naive" in runs:
            naive_med = statistics.median([r["stall_ms"] for r in runs["naive"]])
            ratio = med / naive_med if naive_med else float("inf")
            targets.append(("pgbouncer <= 0.25 x naive median stall", f"{med:.0f} / {naive_med:.0f} ms = {ratio:.2f}x",
                            ratio <= 0.25))
    for mode in ("held", "held-slipped"):
        if mode in runs:
            worst = max(r["stall_ms"] for r in runs[mode])
            targets.append((f"{mode}: stall <= {SWITCHOVER_STALL_TARGET_SECONDS * 1000:.0f} ms in every round",
                            f"max {worst:.0f} ms", worst <= SWITCHOVER_STALL_TARGET_SECONDS * 1000))
    if "held" in runs:
        done = sum(r["completed"] for r in runs["held"])
        targets.append(("held: every switchover completes after the transaction ends", f"{done}/{len(runs['held'])}",
                        done == len(runs["held"])))
    if "held-slipped" in runs:
        at_pause = sum(r["stage"] == "pause" for r in runs["held-slipped"])
        targets.append((f"held-slipped: every one aborts at the PAUSE bound ({DEFAULT_PAUSE_TIMEOUT_SECONDS:g} s)",
                        f"{at_pause}/{len(runs['held-slipped'])}", at_pause == len(runs["held-slipped"])))
    for name, value, met in targets:
        print(f"target {name + ':':<62} {value} -> {'MET' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2, default=str))
    return 0 if all(met for _, _, met in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
