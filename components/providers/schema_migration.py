"""Schema migration steps as Pulumi resources: a thin dynamic provider over ``bazbii_db.migrations``.

All database work lives in the plain package (no Pulumi there). This module only maps the
resource lifecycle onto :meth:`bazbii_db.migrations.MigrationRunner.apply`:

* ``check``: the stage exists, the migration's files still give the checksum the program
  computed at preview time, and the SQL passes the safety analysis (a failing file is
  reported with file, line and rule, and nothing runs);
* ``create`` / ``update``: apply the stage (the runner takes the single-runner lock, journals
  the step and is a no-op when it was applied before); ``contract`` is refused while any
  reported application version is below the migration's ``contract_min_app_version``;
* ``diff``: a change of migration id, stage, checksum or app versions triggers an update;
* ``delete``: a no-op. Deleting the resource does not un-apply a schema change: schema is
  rolled forward with a new migration, never backwards by removing a resource.

The DSN is a secret input and is never returned in outputs or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

PROPS = ("migrationId", "stage", "sqlChecksum", "appVersions")
DEFAULT_MIGRATIONS_DIR = str(Path(__file__).resolve().parents[2] / "migrations")


def _apply(props: dict[str, Any]) -> dict[str, Any]:
    from bazbii_db.migrations import MigrationError, MigrationRunner, load_migration
    from bazbii_db.migrations.dsn import redact
    from bazbii_db.migrations.versions import ContractRefused
    from bazbii_db.sql_safety import SqlSafetyError

    dsn = props["dsn"]
    migrations_dir = props.get("migrationsDir") or DEFAULT_MIGRATIONS_DIR
    migration_id, stage = props["migrationId"], props["stage"]
    actual = load_migration(Path(migrations_dir) / migration_id).checksum(stage)
    if actual != props["sqlChecksum"]:
        raise RuntimeError(f"{migration_id}/{stage}: the migration files changed since preview "
                           f"(checksum {actual[:12]}, expected {props['sqlChecksum'][:12]}); run preview again")
    try:
        result = MigrationRunner(dsn, migrations_dir).apply(migration_id, stage, list(props.get("appVersions") or []))
    except (MigrationError, ContractRefused, SqlSafetyError) as exc:
        raise RuntimeError(redact(f"{migration_id}/{stage}: {exc}", dsn)) from None
    return {
        "migrationId": migration_id,
        "stage": stage,
        "sqlChecksum": props["sqlChecksum"],
        "appVersions": list(props.get("appVersions") or []),
        "migrationsDir": migrations_dir,
        "status": result.status,
        "unitsRun": result.units_run,
        "backfillRows": sum(b.rows_changed for b in result.backfills),
    }


class SchemaMigrationProvider(ResourceProvider):
    def check(self, _olds: dict, news: dict) -> CheckResult:
        from bazbii_db.migrations import MigrationSpecError, load_migration
        from bazbii_db.migrations.lint import analyse_migration_dir
        from bazbii_db.sql_safety import STAGES

        failures: list[CheckFailure] = []
        stage = news.get("stage")
        if stage not in STAGES:
            return CheckResult(news, [CheckFailure("stage", f"stage must be one of {', '.join(STAGES)}")])
        path = Path(news.get("migrationsDir") or DEFAULT_MIGRATIONS_DIR) / str(news.get("migrationId"))
        try:
            migration = load_migration(path)
        except MigrationSpecError as exc:
            return CheckResult(news, [CheckFailure("migrationId", str(exc))])
        checksum = news.get("sqlChecksum")
        if isinstance(checksum, str) and checksum != migration.checksum(stage):
            failures.append(CheckFailure("sqlChecksum", f"{migration.id}/{stage}: files changed since the checksum "
                                                        "was computed"))
        for finding in analyse_migration_dir(path)[stage]:
            if finding.severity == "error":
                failures.append(CheckFailure("migrationId", finding.format()))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in PROPS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        outs = _apply(props)
        return CreateResult(id_=f"{outs['migrationId']}/{outs['stage']}", outs=outs)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=_apply(news))

    def delete(self, _id: str, _props: dict) -> None:
        # Deliberately nothing: the schema is not un-applied by deleting a resource.
        return None


class SchemaMigrationStep(pulumi.dynamic.Resource):
    """One stage (expand | migrate | contract) of one migration directory, applied to a database."""

    migration_id: pulumi.Output[str]
    stage: pulumi.Output[str]
    status: pulumi.Output[str]

    def __init__(self, name: str, *, dsn: pulumi.Input[str], migration_id: str, stage: str, sql_checksum: str,
                 app_versions: Sequence[pulumi.Input[str]] | pulumi.Input[Sequence[str]],
                 opts: Optional[pulumi.ResourceOptions] = None, migrations_dir: str | None = None):
        props = {
            "dsn": pulumi.Output.secret(dsn),
            "migrationId": migration_id,
            "stage": stage,
            "sqlChecksum": sql_checksum,
            "appVersions": app_versions,
            "migrationsDir": migrations_dir or DEFAULT_MIGRATIONS_DIR,
            "status": None,
            "unitsRun": None,
            "backfillRows": None,
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["dsn"]))
        super().__init__(SchemaMigrationProvider(), name, props, opts)
