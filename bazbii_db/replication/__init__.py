"""PostgreSQL streaming replica, lag gate, consistency check and planned switchover (psycopg 3, no Pulumi).

Modules:
  lsn          pg_lsn parsing/formatting
  lag          lag readings (bytes and replay_lag) from pg_stat_replication
  gate         the windowed lag gate (fails closed)
  consistency  per-table row counts + checksums, primary vs replica, at a known LSN
  pgbouncer    admin console (PAUSE with timeout, RESUME, RELOAD) and atomic ini rewrite
  switchover   PAUSE -> fence -> catch-up -> promote -> repoint -> RESUME, with abort paths
  prepause     right before PAUSE: the long transactions and PgBouncer logins the switchover waits for
  replica      replica setup script (pg_basebackup -R -C -S) and verify_streaming
  retire       retirement script for the old primary
  errors       the package's one error root (ReplicationError) and its subclasses
"""

from .consistency import ConsistencyReport, check_consistency
from .gate import GateConfig, GateReport, LagGateFailed, require_lag_gate, run_lag_gate
from .grants import apply_ops_grants, ops_grants_sql
from .lag import LagSample, replica_side_status, sample_lag, wait_for_replay
from .lsn import format_lsn, lsn_diff, parse_lsn
from .pgbouncer import (NotPaused, PauseTimeout, PgBouncerAdmin, read_database_entry, repoint_database,
                        rewrite_database_host)
from .replica import (ReplicaNotStreaming, StreamingStatus, drop_replication_slot, replica_setup_script,
                      verify_streaming)
from .retire import reattach_standby_script, retire_primary_script
from .switchover import (SwitchoverAborted, SwitchoverConfig, SwitchoverError, SwitchoverReport,
                         planned_switchover)
from ._conn import redact_dsn
from .errors import ConnectionFailed, ReplicationError, UsageError

__all__ = [
    "ConsistencyReport", "check_consistency",
    "GateConfig", "GateReport", "LagGateFailed", "require_lag_gate", "run_lag_gate",
    "apply_ops_grants", "ops_grants_sql",
    "LagSample", "replica_side_status", "sample_lag", "wait_for_replay",
    "format_lsn", "lsn_diff", "parse_lsn",
    "NotPaused", "PauseTimeout", "PgBouncerAdmin", "read_database_entry", "repoint_database",
    "rewrite_database_host",
    "ReplicaNotStreaming", "StreamingStatus", "drop_replication_slot", "replica_setup_script", "verify_streaming",
    "reattach_standby_script", "retire_primary_script",
    "SwitchoverAborted", "SwitchoverConfig", "SwitchoverError", "SwitchoverReport", "planned_switchover",
    "redact_dsn", "ConnectionFailed", "ReplicationError", "UsageError",
]
