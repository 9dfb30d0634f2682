"""Benchmark: planned switchover through PgBouncer vs. a naive reconnect, under 8 writer threads.

Not a test: run it by hand (``./venv/bin/python -m bench.bench_switchover``). Every run starts
from a fresh local topology (primary, pg_basebackup replica, PgBouncer on 127.0.0.1), runs a
bounded write load (UPDATE + SELECT + INSERT per transaction, every acknowledged commit
recorded), switches over in the middle and then checks every acknowledged commit on the new
primary.

Modes (both measured in the same invocation):
  pgbouncer  bazbii_db.replication.planned_switchover: PAUSE, fence, catch-up, promote,
             ini rewrite + RELOAD, RESUME; the old primary is stopped after the window.
  naive      no pooler: clients use a multi-host DSN with target_session_attrs=read-write;
             CHECKPOINT (outside the window), fast shutdown of the old primary, promote the
             replica (pg_promote(wait => false) + 1 ms polling); clients reconnect by themselves.

Figures per run: failed transactions (errors seen by clients; 'in doubt' = error on COMMIT),
lost acknowledged commits, the write stall (longest gap between two acknowledged commits), TPS,
and for the PgBouncer mode the window breakdown (pause, fence, lsn, catch-up, promote, reload,
resume). Target: 0 failed, 0 lost, median stall <= 100 ms and <= 0.25 x the naive median stall.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


import psycopg

from testsupport.replication_topology import (APP_DB, APP_PASSWORD, APP_USER, WriteLoad, build_topology,
                                       missing_acked, wait_streaming)
from bazbii_db.replication import (GateConfig, SwitchoverConfig, planned_switchover,
                                   require_lag_gate)

STEPS = ("pause", "fence", "lsn", "catchup", "promote", "reload", "resume")


def _summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def run_pgbouncer(threads: int, seconds: float, switch_at: float) -> dict:
    topo = build_topology()
    try:
        wait_streaming(topo)
        require_lag_gate(topo.primary.dsn(), topo.slot, config=GateConfig(window_seconds=0.5, timeout_seconds=20))
        load = WriteLoad(topo.app_dsn(), threads=threads, max_seconds=seconds + 10).start()
        try:
            time.sleep(switch_at)
            config = SwitchoverConfig(database_alias=topo.alias, pgbouncer_ini_path=str(topo.bouncer.ini_path),
                                      new_host="127.0.0.1", new_port=topo.replica.port, pause_timeout=5.0)
            t0 = time.monotonic()
            report = planned_switchover(topo.primary.dsn(dbname=APP_DB), topo.replica.dsn(dbname=APP_DB),
                                        topo.bouncer.admin_dsn(), config, stop_old_primary=topo.primary.stop)
            time.sleep(max(0.0, seconds - switch_at - (time.monotonic() - t0)))
        finally:
            result = load.stop()
        lost = missing_acked(topo.replica.dsn(dbname=APP_DB), result)
        stall, _ = result.max_stall(start=t0 - 1.0)
        acks = result.ack_times()
        before = [t for t in acks if t <= report.window_started_at]
        after = [t for t in acks if t >= report.window_ended_at]
        return {
            "mode": "pgbouncer",
            "last_ack_before_pause_ms": (report.window_started_at - before[-1]) * 1000 if before else None,
            "first_ack_after_resume_ms": (after[0] - report.window_ended_at) * 1000 if after else None, "failed": len(result.failed), "in_doubt": len(result.in_doubt),
            "refused_connects": result.refused_connects, "lost": len(lost), "acked": len(result.acked),
            "tps": round(result.tps), "stall_ms": stall * 1000, "window_ms": report.window_ms,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="PgBouncer switchover runs")
    parser.add_argument("--naive-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per run")
    parser.add_argument("--switch-at", type=float, default=4.0, help="seconds into the load")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)

    runs: list[dict] = []
    for i in range(args.runs):
        r = run_pgbouncer(args.threads, args.seconds, args.switch_at)
        runs.append(r)
        steps = ", ".join(f"{k} {v:.1f}" for k, v in r["steps_ms"].items() if v is not None)
        print(f"pgbouncer run {i + 1}: failed {r['failed']} (in doubt {r['in_doubt']}), lost {r['lost']}/"
              f"{r['acked']} acked, stall {r['stall_ms']:.0f} ms, window {r['window_ms']:.1f} ms "
              f"[{steps}], first ack {r['first_ack_after_resume_ms']:.1f} ms after RESUME, {r['tps']} TPS, "
              f"fenced {r['fenced_lsn']} = replayed {r['replica_replay_lsn']}", flush=True)
    for i in range(args.naive_runs):
        r = run_naive(args.threads, args.seconds, args.switch_at)
        runs.append(r)
        print(f"naive     run {i + 1}: failed {r['failed']} (in doubt {r['in_doubt']}), lost {r['lost']}/"
              f"{r['acked']} acked, stall {r['stall_ms']:.0f} ms, window {r['window_ms']:.1f} ms "
              f"[shutdown {r['steps_ms']['shutdown']:.1f}, promote {r['steps_ms']['promote']:.1f}], "
              f"{r['refused_connects']} refused connects, {r['tps']} TPS, errors {r['errors']}", flush=True)

    fence = [r for r in runs if r["mode"] == "pgbouncer"]
    naive = [r for r in runs if r["mode"] == "naive"]
    print()
    print(f"{'mode (runs)':<16} {'failed':>8} {'in doubt':>9} {'lost':>6} {'stall ms min/med/max':>22} "
          f"{'window ms min/med/max':>22} {'TPS med':>8}")
    for label, group in (("pgbouncer", fence), ("naive", naive)):
        if not group:
            continue
        print(f"{label + f' ({len(group)})':<16} {sum(r['failed'] for r in group):>8} "
              f"{sum(r['in_doubt'] for r in group):>9} {sum(r['lost'] for r in group):>6} "
              f"{_summary([r['stall_ms'] for r in group]):>22} {_summary([r['window_ms'] for r in group]):>22} "
              f"{statistics.median([r['tps'] for r in group]):>8.0f}")
    if fence:
        print("pgbouncer window breakdown, median ms: " + ", ".join(
            f"{k} {statistics.median([r['steps_ms'][k] for r in fence]):.1f}" for k in STEPS)
            + "; after RESUME until the first acknowledged commit (new server logins) "
            + f"{statistics.median([r['first_ack_after_resume_ms'] for r in fence]):.1f}")
    if naive:
        print("naive window breakdown, median ms: shutdown "
              f"{statistics.median([r['steps_ms']['shutdown'] for r in naive]):.1f}, promote "
              f"{statistics.median([r['steps_ms']['promote'] for r in naive]):.1f}")

    ok = True
    if fence:
        med = statistics.median([r["stall_ms"] for r in fence])
        failed = sum(r["failed"] for r in fence)
        lost = sum(r["lost"] for r in fence)
        print()
        print(f"target 0 failed transactions:           {failed} -> {'MET' if failed == 0 else 'MISSED'}")
        print(f"target 0 lost acknowledged commits:     {lost} -> {'MET' if lost == 0 else 'MISSED'}")
        print(f"target median stall <= 100 ms:          {med:.0f} ms -> {'MET' if med <= 100 else 'MISSED'}")
        ok = failed == 0 and lost == 0 and med <= 100
        if naive:
            naive_med = statistics.median([r["stall_ms"] for r in naive])
            ratio = med / naive_med if naive_med else float("inf")
            print(f"target <= 0.25 x naive median stall:    {med:.0f} / {naive_med:.0f} ms = {ratio:.2f}x -> "
                  f"{'MET' if ratio <= 0.25 else 'MISSED'}")
            ok = ok and ratio <= 0.25
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
