"""The migration runner: analysis, contract gate, single-runner lock, journal, execution.

``MigrationRunner.apply(migration_id, stage, app_versions)``:

1. for ``contract``: refuses unless every reported application version is >= the migration's
   ``contract_min_app_version`` (nothing has connected, nothing has run);
2. loads the migration and analyses the stage's SQL (``bazbii_db.migrations.lint``); any error
   finding stops here: nothing has connected, nothing has run. Errors that only a catalog could
   lift (a DEFAULT whose function's volatility is unknown offline, a type change from an unknown
   type), or with a shadow server (``RunnerConfig.shadow``) only PostgreSQL itself, are judged
   again with the database's catalog and the shadow run (the stage on a scratch database of that
   server, built from the earlier migrations or, ``shadow_from_target``, from a schema-only dump of
   the target) before anything runs; a configured shadow run always runs, and the result says
   which analysis judged (``StepResult.judged_by``);
3. opens its control connection (autocommit) and takes the session-level advisory lock,
   waiting up to ``runner_lock_wait_s`` and then reporting who holds it;
4. creates the journal if needed and reads the step: applied with the same checksum -> no-op;
   applied with another checksum -> error; failed part-way -> resume after the last completed
   unit (if those units are unchanged); earlier stages missing -> error;
5. runs the units one by one: SQL statements on the DDL connection (autocommit, lock_timeout,
   statement_timeout, retries on 55P03, CIC repair), backfills on their own connection;
   every completed unit is journaled.

Applying an earlier stage while a later one is applied first runs the later stage's down step
(``<stage>.down.sql``), if it has one: that is what setting the schema track back one step does.
``MigrationRunner.revert(migration_id, stage)`` runs one down step on its own (CLI ``down``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psycopg

from bazbii_db.migrations.backfill import Backfill, BackfillConfig, BackfillResult
from bazbii_db.migrations.dsn import describe, redact, with_params
from bazbii_db.migrations.errors import (ChecksumMismatch, IrreversibleStage, MigrationError, MigrationStopped,
                                         StageOrderError, StatementFailed)
from bazbii_db.migrations.executor import DdlConfig, DdlExecutor, configure_session
from bazbii_db.migrations.journal import Journal
from bazbii_db.migrations.lock import RunnerLock
from bazbii_db.migrations.lint import Lint, lint_migration
from bazbii_db.migrations.spec import DOWN_SUFFIX, Migration, default_migrations_dir, list_migrations, load_migration
from bazbii_db.migrations.stageplan import Unit, plan_down, plan_stage
from bazbii_db.migrations.versions import check_contract_allowed
from bazbii_db.sql_safety import ERROR, STAGES, Finding, SqlSafetyError, has_errors
from bazbii_db.sql_safety.catalog import PgCatalog
from bazbii_db.sql_safety.findings import CATALOG_DEPENDENT_RULES
from bazbii_db.sql_safety.shadow import SHADOW_JUDGES, ShadowServer, TargetSchema
from bazbii_db.stopping import stop_reason

log = logging.getLogger("bazbii_db.migrations")


@dataclass
class RunnerConfig:
    ddl: DdlConfig = field(default_factory=DdlConfig)  # lock/statement timeouts and 55P03 retries
    runner_lock_wait_s: float = 60.0
    application_name: str | None = None
    # backfill.stop is the run's one stop request: the backfill ends after its batch in flight, and the
    # runner checks it between units too (a statement in flight finishes, and is journaled, first).
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    shadow: ShadowServer | None = None  # a server for shadow runs (never the production database itself)
    shadow_from_target: bool = False  # base the shadow run on a schema-only dump of the target, not the migrations


@dataclass
class StepResult:
    migration_id: str
    stage: str
    status: str  # "applied" | "already-applied" | "reverted" | "not-applied"
    checksum: str
    units_run: int = 0
    units_skipped: int = 0
    duration_s: float = 0.0
    waited_for_lock_s: float = 0.0
    ddl_attempts: int = 0
    lock_timeouts: int = 0
    repaired_indexes: list[str] = field(default_factory=list)
    backfills: list[BackfillResult] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)  # later stages whose down step ran first
    judged_by: str = ""  # which analysis judged the SQL (static rules only, or with a shadow run)


def default_application_name() -> str:
    return f"bazbii-migrate {socket.gethostname()} pid {os.getpid()}"[:63]


class MigrationRunner:
    def __init__(self, dsn: str, migrations_dir: str | os.PathLike | None = None,
                 config: RunnerConfig | None = None):
        self.dsn = dsn
        self.migrations_dir = Path(migrations_dir) if migrations_dir else default_migrations_dir()
        self.config = config or RunnerConfig()
        self.application_name = self.config.application_name or default_application_name()

    # --- helpers -----------------------------------------------------------------------
    def _connect(self, purpose: str) -> psycopg.Connection:
        name = f"{self.application_name} {purpose}"[:63]
        try:
            return psycopg.connect(with_params(self.dsn, application_name=name), autocommit=True)
        except psycopg.OperationalError as exc:
            raise MigrationError(f"cannot connect to {describe(self.dsn)}: {redact(str(exc), self.dsn)}") from None

    def load(self, migration_id: str) -> Migration:
        return load_migration(self.migrations_dir / migration_id)

    def judge(self, migration: Migration, stage: str, down_only: bool = False) -> Lint:
        """The pre-run gate: raises :class:`SqlSafetyError` (nothing has run) unless the stage's SQL, its down
        step included, is safe for the stage.

        The static rules run first, before anything connects; errors that neither the catalog nor (with a
        shadow server) a shadow run could lift stop there. Otherwise, and always when a shadow server is
        configured, the stage is judged again with the database's catalog and the shadow run (of the down step
        alone with ``down_only``, as a revert runs it on the schema the stage left).
        """
        offline = lint_migration(migration.path, stages=(stage,))
        errors = [f for f in offline.findings[stage] if f.severity == ERROR]
        shadow = self.config.shadow
        liftable = CATALOG_DEPENDENT_RULES | (SHADOW_JUDGES if shadow is not None else frozenset())
        if errors and not all(f.rule in liftable for f in errors):
            raise SqlSafetyError(offline.findings[stage], offline.judged_by)
        if not errors and shadow is None:
            return offline
        target = TargetSchema(self.dsn) if shadow is not None and self.config.shadow_from_target else None
        with self._connect("catalog") as catalog_conn:
            judged = lint_migration(migration.path, catalog=PgCatalog(catalog_conn), shadow=shadow, target=target,
                                    stages=(stage,), down_only=down_only)
        log.info("%s/%s judged by %s", migration.id, stage, judged.judged_by)
        if has_errors(judged.findings[stage]):
            raise SqlSafetyError(judged.findings[stage], judged.judged_by)
        return judged

    @contextmanager
    def _locked(self, result: StepResult, started: float) -> Iterator[tuple[psycopg.Connection, Journal]]:
        """The control connection under the single-runner lock, with the journal ready."""
        control = self._connect("control")
        lock = RunnerLock(control)
        try:
            configure_session(control, self.config.ddl.lock_timeout_ms, 60_000)
            result.waited_for_lock_s = lock.acquire(self.config.runner_lock_wait_s)
            journal = Journal(control)
            self._ensure_journal(control, journal)
            yield control, journal
        finally:
            result.duration_s = time.monotonic() - started
            try:
                lock.release()
            finally:
                control.close()

    # --- public API ---------------------------------------------------------------------
    def apply(self, migration_id: str, stage: str, app_versions: list[str] | tuple[str, ...] = ()) -> StepResult:
        """Apply one stage. Later stages of the same migration that are applied and have a down step are
        reverted first (latest first): applying an earlier stage again is how the schema track rolls back."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        started = time.monotonic()
        migration = self.load(migration_id)
        if stage == "contract" and migration.has_content("contract"):
            check_contract_allowed(migration.contract_min_app_version, list(app_versions))  # before connecting
        judged = self.judge(migration, stage)  # raises before anything runs
        checksum = migration.checksum(stage)
        units = plan_stage(migration, stage)
        result = StepResult(migration_id, stage, "applied", checksum, warnings=judged.findings[stage],
                            judged_by=judged.judged_by)
        with self._locked(result, started) as (control, journal):
            for later in reversed(STAGES[STAGES.index(stage) + 1:]):
                later_entry = journal.get(migration_id, later)
                if later_entry is not None and later_entry.status == "applied" and migration.down_file(later):
                    self.judge(migration, later, down_only=True)  # raises before the down step runs
                    self._run_down(migration, later, journal, result, control)
                    result.reverted.append(later)
            entry = journal.get(migration_id, stage)
            if entry is not None and entry.status == "applied":
                if entry.checksum != checksum:
                    raise ChecksumMismatch(
                        f"{migration_id}/{stage} was applied with checksum {entry.checksum[:12]} but its files now "
                        f"give {checksum[:12]}: a migration must not change after it is applied; write a new one")
                log.info("%s/%s already applied (checksum %s); nothing to do", migration_id, stage, checksum[:12])
                result.status = "already-applied"
                result.units_skipped = len(units)
                return result
            self._check_order(journal, migration_id, stage)
            done = list(entry.unit_checksums) if entry is not None else []
            if done != [u.checksum for u in units[:len(done)]]:
                bad = next(i for i, c in enumerate(done) if i >= len(units) or units[i].checksum != c)
                where = units[bad].label if bad < len(units) else f"unit #{bad + 1}"
                raise ChecksumMismatch(
                    f"{migration_id}/{stage} was partly applied ({len(done)} units) and {where} changed since; "
                    "restore the applied part of the file")
            journal.start(migration_id, stage, checksum, self.application_name, list(app_versions))
            result.units_skipped = len(done)

            def journal_unit(unit: Unit) -> None:
                done.append(unit.checksum)
                journal.unit_done(migration_id, stage, done)

            try:
                self._run_units(migration, stage, units[len(done):], result, (control.info.backend_pid,),
                                journal_unit)
            except BaseException as exc:
                try:
                    journal.fail(migration_id, stage, redact(f"{type(exc).__name__}: {exc}", self.dsn))
                except psycopg.Error:
                    log.exception("could not record the failure in the journal")
                raise
            journal.finish(migration_id, stage)
            return result

    def revert(self, migration_id: str, stage: str) -> StepResult:
        """Run a stage's down step (``<stage>.down.sql``) and forget the stage in the journal.

        The stage must be the latest applied stage of the migration. A stage that was never applied
        is a no-op ("not-applied"). A stage without a down step is irreversible: refused, nothing runs.
        Down steps must be idempotent: after a failure part-way the whole down step runs again.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        started = time.monotonic()
        migration = self.load(migration_id)
        if migration.down_file(stage) is None:
            raise IrreversibleStage(f"{migration_id}/{stage} has no down step ({stage}{DOWN_SUFFIX}); it cannot be "
                                    "rolled back by the runner, roll forward with a new migration instead")
        judged = self.judge(migration, stage, down_only=True)  # raises before anything runs
        result = StepResult(migration_id, stage, "reverted", migration.checksum(stage),
                            warnings=judged.findings[stage], judged_by=judged.judged_by)
        with self._locked(result, started) as (control, journal):
            entry = journal.get(migration_id, stage)
            if entry is None or entry.status == "reverted":
                result.status = "not-applied"
                return result
            if entry.status != "applied":
                raise StageOrderError(f"{migration_id}/{stage} is {entry.status}, not applied: apply it completely "
                                      "before reverting it")
            later = [s for s in STAGES[STAGES.index(stage) + 1:] if journal.in_effect(migration_id, s)]
            if later:
                raise StageOrderError(f"{migration_id}/{stage}: revert {', '.join(reversed(later))} first")
            self._run_down(migration, stage, journal, result, control)
            return result

    def _run_down(self, migration: Migration, stage: str, journal: Journal, result: StepResult,
                  control: psycopg.Connection) -> None:
        down = migration.down_file(stage)
        if down is None:  # the callers run only a stage that has one
            raise IrreversibleStage(f"{migration.id}/{stage} has no down step ({stage}{DOWN_SUFFIX})")
        log.info("%s/%s: running the down step %s", migration.id, stage, down.name)
        self._run_units(migration, stage, plan_down(migration, stage), result, (control.info.backend_pid,),
                        lambda unit: None)
        journal.revert(migration.id, stage)

    def status(self) -> list:
        with self._connect("status") as conn:
            return Journal(conn).entries()

    def checkpoints(self) -> list:
        """The backfill checkpoints: where each backfill is (or stopped)."""
        with self._connect("status") as conn:
            return Journal(conn).checkpoints()

    # --- internals ----------------------------------------------------------------------
    def _ensure_journal(self, control: psycopg.Connection, journal: Journal) -> None:
        if journal.exists():
            journal.upgrade()
            return
        journal.ensure()

    def _check_order(self, journal: Journal, migration_id: str, stage: str) -> None:
        idx = STAGES.index(stage)
        if idx > 0:
            previous = STAGES[idx - 1]
            prev = journal.get(migration_id, previous)
            if prev is None or prev.status != "applied":
                raise StageOrderError(f"{migration_id}/{stage} needs {migration_id}/{previous} applied first")
        else:
            earlier = [m for m in list_migrations(self.migrations_dir) if m < migration_id]
            missing = [m for m in earlier if m not in journal.applied_ids("expand")]
            if missing:
                raise StageOrderError(f"{migration_id}/expand needs the expand stage of earlier migrations first: "
                                      + ", ".join(missing))

    def _run_units(self, migration: Migration, stage: str, units: list[Unit], result: StepResult,
                   exclude_pids: tuple[int, ...], on_done: Callable[[Unit], None]) -> None:
        ddl_conn: psycopg.Connection | None = None
        executor: DdlExecutor | None = None
        stop = self.config.backfill.stop
        try:
            for unit in units:
                if stop is not None and stop.is_set():
                    raise MigrationStopped(f"{migration.id}/{stage}: stopped by {stop_reason(stop)} before "
                                           f"{unit.label}; the units before it are journaled, rerun to resume")
                log.info("%s/%s: %s", migration.id, stage, unit.label)
                if unit.kind == "backfill":
                    if unit.backfill is None:  # plan_stage gives every backfill unit its spec
                        raise ValueError(f"{migration.id}/{stage}: backfill unit {unit.label} has no spec")
                    backfill = Backfill(self.dsn, migration.id, unit.backfill, unit.checksum, self.config.backfill,
                                        application_name=f"{self.application_name} backfill"[:63],
                                        exclude_pids=exclude_pids + ((ddl_conn.info.backend_pid,) if ddl_conn else ()))
                    result.backfills.append(backfill.run())
                else:
                    if executor is None:
                        ddl_conn = self._connect("ddl")
                        executor = DdlExecutor(ddl_conn, self.config.ddl)
                    label = f"{migration.path / unit.label.split(':')[0]}:{unit.label.split(':')[1]}" \
                        if unit.kind == "sql" else f"{migration.id}/{stage} {unit.label}"
                    try:
                        stats = executor.execute(unit.sql_text, unit.statement.node if unit.statement else None, label)
                    except StatementFailed as exc:
                        raise StatementFailed(redact(str(exc), self.dsn), exc.sqlstate) from None
                    result.ddl_attempts += stats.attempts
                    result.lock_timeouts += stats.lock_timeouts
                    result.repaired_indexes += stats.repaired_indexes
                on_done(unit)
                result.units_run += 1
        finally:
            if ddl_conn is not None:
                ddl_conn.close()
