"""Zero-downtime schema migrations (expand -> migrate -> contract) over psycopg 3.

Plain Python: no Pulumi import. The Pulumi dynamic provider in
``components/providers/schema_migration.py`` is a thin wrapper over :class:`MigrationRunner`.
"""

from bazbii_db.migrations.backfill import (Backfill, BackfillConfig, BackfillResult, BackfillStopped, LagWindow,
                                           PrimaryLagProbe, ReplicaLagProbe)
from bazbii_db.migrations.errors import (BackfillError, BackfillThrottled, ChecksumMismatch, LockRetryExhausted,
                                         MigrationError, MigrationStopped, RunnerLockTimeout, StageOrderError,
                                         StatementFailed)
from bazbii_db.migrations.runner import MigrationRunner, RunnerConfig, StepResult
from bazbii_db.migrations.probe import PoolerProbe
from bazbii_db.migrations.throttle import LatencyBudget, LatencyConfigError
from bazbii_db.migrations.spec import (BackfillSpec, DualWriteSpec, Migration, MigrationSpecError,
                                       default_migrations_dir, list_migrations, load_migration, migration_checksum,
                                       read_migration_sql)
from bazbii_db.migrations.versions import ContractRefused, check_contract_allowed, parse_version, version_from_image
from bazbii_db.sql_safety import SqlSafetyError

__all__ = [
    "Backfill", "BackfillConfig", "BackfillError", "BackfillResult", "BackfillSpec", "BackfillStopped", "BackfillThrottled",
    "ChecksumMismatch", "ContractRefused", "DualWriteSpec", "LagWindow", "LatencyBudget", "LatencyConfigError", "LockRetryExhausted", "Migration",
    "MigrationError", "MigrationRunner", "MigrationSpecError", "MigrationStopped", "PoolerProbe", "PrimaryLagProbe",
    "ReplicaLagProbe",
    "RunnerConfig", "RunnerLockTimeout", "SqlSafetyError", "StageOrderError", "StatementFailed", "StepResult",
    "check_contract_allowed", "default_migrations_dir", "list_migrations", "load_migration", "migration_checksum",
    "parse_version", "read_migration_sql", "version_from_image",
]
