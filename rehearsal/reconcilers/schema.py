"""Schema: one migration stage through the runner, workers quiet, contract gate on the state's app versions."""

from __future__ import annotations

from bazbii_db.migrations import MigrationRunner, RunnerConfig
from bazbii_db.migrations.backfill import BackfillConfig
from bazbii_plan.models import StackState

from .base import Context


STAGE_ORDER = (None, "expand", "migrate", "contract")


class SchemaReconciler:
    concern = "schema"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        a, b = old.schema_.migration, new.schema_.migration
        if a == b:
            return
        svc = ctx.services
        if b is not None and (a is None or STAGE_ORDER.index(b.stage) > STAGE_ORDER.index(a.stage)):
            app = new.app
            versions = [app.api.image, app.worker.image] + ([app.canary.image] if app.canary else [])
            worker_versions = [v for _, v in svc.workers]
            stopped = svc.stop_workers()
            ctx.act(f"schema: workers quiet ({stopped} stopped) while {b.id}/{b.stage} runs")
            try:
                runner = MigrationRunner(svc.pg[new.database.primary].dsn(), config=RunnerConfig(
                    runner_lock_wait_s=10, backfill=BackfillConfig(progress_interval_s=3600)))
                result = runner.apply(b.id, b.stage, versions)
                ctx.act(f"schema: {b.id}/{b.stage} {result.status} by the migration runner "
                        f"({result.units_run} units, {result.duration_s:.2f} s"
                        + "".join(f", backfill {r.rows_changed} rows" for r in result.backfills) + ")")
            finally:
                for version in worker_versions:
                    svc.start_worker(version)
                ctx.act(f"schema: {len(worker_versions)} workers back")
        else:
            stage = a.stage if a else None
            if stage == "contract":
                raise RuntimeError("rolling back a contract needs its down step, which the runner does not have yet")
            ctx.act(f"schema: back from {a.id}/{a.stage}: nothing to undo (the plan keeps the column and values)")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass
