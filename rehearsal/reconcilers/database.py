"""Database: replica build, lag gate, consistency check, switchover, retirement (bazbii_db.replication)."""

from __future__ import annotations

import time

from bazbii_db.replication import (GateConfig, SwitchoverConfig, check_consistency, drop_replication_slot,
                                   planned_switchover, require_lag_gate, verify_streaming)
from bazbii_plan.models import StackState

from ..services import DB_ALIAS
from .base import CheckFailed, Context, StepRefused


class DatabaseReconciler:
    concern = "database"

    def _gate(self, new: StackState, ctx: Context, primary: str, replica: str, slot: str) -> None:
        svc = ctx.services
        lag = new.database.lag_gate
        config = GateConfig(max_lag_bytes=lag.max_bytes, window_seconds=lag.window_seconds,
                            timeout_seconds=min(lag.timeout_seconds, ctx.gate_timeout))
        started = time.monotonic()
        try:
            report = require_lag_gate(svc.pg[primary].dsn(), slot, replica_dsn=svc.pg[replica].dsn(), config=config)
        except Exception as exc:
            ctx.act(f"database: lag gate FAILED for {replica}: {str(exc).splitlines()[0]}")
            raise StepRefused(f"lag gate failed for replica {replica}") from None
        ctx.timings["lag_gate_s"] = round(time.monotonic() - started, 2)
        ctx.act(f"database: lag gate passed ({report.reason})")

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        db_old, db_new = old.database, new.database
        for name, replica in db_new.replicas.items():
            if name in db_old.replicas:
                continue
            svc.start_replica(name, db_new.primary, replica.slot)
            status = verify_streaming(svc.pg[db_new.primary].dsn(), replica.slot, timeout=30)
            ctx.act(f"database: replica on {name} built with replica_setup_script (pg_basebackup -R -C -S "
                    f"{replica.slot}), streaming after {status.waited_seconds:.2f} s")
            if replica.lag_gate:
                self._gate(new, ctx, db_new.primary, name, replica.slot)
            if replica.consistency_check:
                # Under live writes a table can change during every attempt ("unverified"): retry more.
                report = check_consistency(svc.pg[db_new.primary].dsn(), svc.pg[name].dsn(), attempts=8)
                if not report.passed:
                    bad = [f"{t.table} {t.status}" for t in report.differing + report.unverified]
                    raise CheckFailed(f"consistency check failed after {report.attempts} attempts: {', '.join(bad)}")
                ctx.act(f"database: consistency check passed, {report.tables_compared} tables equal at "
                        f"{report.checked_lsn}")
        if db_new.primary != db_old.primary:
            self._switchover(old, new, ctx)

    def _switchover(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        source, target = old.database.primary, new.database.primary
        replica = old.database.replicas[target]
        ctx.faults.before_switchover(svc, source, target, ctx)
        self._gate(old, ctx, source, target, replica.slot)
        pooler = new.database.pooler
        config = SwitchoverConfig(database_alias=DB_ALIAS, pgbouncer_ini_path=str(svc.bouncer.ini),
                                  new_host=svc.pg[target].host, new_port=svc.pg[target].port, new_dbname="bazbii",
                                  pause_timeout=pooler.pause_timeout_seconds,
                                  max_lag_bytes=new.database.lag_gate.max_bytes)
        report = planned_switchover(svc.pg[source].dsn(), svc.pg[target].dsn(), svc.bouncer.admin_dsn(), config,
                                    stop_old_primary=lambda: svc.pg[source].stop("fast"))
        ctx.timings["switchover_window_ms"] = round(report.window_ms or 0, 1)
        ctx.timings["switchover_window"] = (report.window_started_at, report.window_ended_at)
        ctx.timings["switchover_steps_ms"] = {k: round(v, 1) for k, v in report.steps_ms.items()}
        ctx.act(f"database: switchover {source} -> {target} through PgBouncer completed, window "
                f"{report.window_ms:.1f} ms (" + ", ".join(f"{k} {v:.1f}" for k, v in report.steps_ms.items()) + ")")
        svc.stop_pg_exporter(source)

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        db_old, db_new = old.database, new.database
        for name, replica in db_old.replicas.items():
            if name in db_new.replicas or name == db_new.primary:
                continue
            svc.stop_pg_exporter(name)
            svc.pg[name].stop("fast")
            dropped = drop_replication_slot(svc.pg[db_new.primary].dsn(), replica.slot)
            del svc.pg[name]
            ctx.act(f"database: replica on {name} stopped, slot {replica.slot} "
                    f"{'dropped' if dropped else 'was absent'} on {db_new.primary}")
        for name in set(db_new.retired) - set(db_old.retired):
            svc.pg[name].retire()
            ctx.act(f"database: {name} retired with retire_primary_script (stopped, data directory kept)")
        for name in set(db_old.retired) - set(db_new.retired):
            ctx.act(f"database: {name} no longer marked retired (its data directory was kept; nothing started)")
