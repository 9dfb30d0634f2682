"""Schema: one migration stage through the runner, workers quiet, contract gate on the state's app versions.

Forward, the new stage is applied. Back (a rollback), the runner is asked to apply the earlier
stage again, which is how the schema track rolls back when the later stage has a down step; a
contract still applied afterwards means it had none, and the rollback fails loudly.
Back to no migration at all is nothing to undo (the plan keeps the nullable column).
"""

from __future__ import annotations

from bazbii_db.migrations import MigrationRunner, RunnerConfig
from bazbii_db.migrations.backfill import BackfillConfig
from bazbii_plan.models import StackState

from .base import Context

STAGE_ORDER = (None, "expand", "migrate", "contract")
# The plan's rollbacks: a contract is undone by its down step; expand and migrate are kept
# (the nullable column, the backfilled values), so only a contract must be gone afterwards.
MUST_REVERT = ("contract",)


class SchemaReconciler:
    concern = "schema"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        a, b = old.schema_.migration, new.schema_.migration
        if a == b:
            return
        if b is None:
            ctx.act(f"schema: back from {a.id}/{a.stage}: nothing to undo (the plan keeps the nullable column)")
            return
        svc = ctx.services
        app = new.app
        versions = [app.api.image, app.worker.image] + ([app.canary.image] if app.canary else [])
        forward = a is None or STAGE_ORDER.index(b.stage) > STAGE_ORDER.index(a.stage)
        runner = MigrationRunner(svc.pg[new.database.primary].dsn(), config=RunnerConfig(
            runner_lock_wait_s=10, backfill=BackfillConfig(progress_interval_s=3600)))
        worker_versions = [v for _, v in svc.workers]
        stopped = svc.stop_workers()
        ctx.act(f"schema: workers quiet ({stopped} stopped) while {b.id}/{b.stage} runs")
        try:
            result = runner.apply(b.id, b.stage, versions)
            ctx.act(f"schema: {b.id}/{b.stage} {result.status} by the migration runner "
                    f"({result.units_run} units, {result.duration_s:.2f} s"
                    + "".join(f", backfill {r.rows_changed} rows" for r in result.backfills) + ")")
            if not forward:
                later = [e.step for e in runner.status() if e.migration_id == b.id and e.status == "applied"
                         and e.step in MUST_REVERT and STAGE_ORDER.index(e.step) > STAGE_ORDER.index(b.stage)]
                if later:
                    raise RuntimeError(f"{b.id}/{', '.join(later)} is still applied: the runner reverted no down "
                                       "step, so the schema cannot go back by itself")
                ctx.act(f"schema: back from {a.id}/{a.stage} to {b.stage} (what the plan undoes is undone)")
        finally:
            for version in worker_versions:
                svc.start_worker(version)
            ctx.act(f"schema: {len(worker_versions)} workers back")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass
