"""Data-consistency rollback triggers for ``watch``: pluggable checks over the existing database tools.

A trigger is anything with a ``name`` and a ``run() -> SignalResult``; the two
shipped here call the existing functions (nothing is reimplemented):

- :class:`ReplicaConsistency`: ``bazbii_db.replication.check_consistency``
  (row counts and checksums at a fixed LSN); a differing table is a breach,
  an unverified table or an error is inconclusive.
- :class:`MigrationJournal`: ``bazbii_db.migrations.journal.Journal``; a step
  recorded as ``failed`` is a breach.

DSNs must not carry passwords (they would show in process listings and logs):
use ``~/.pgpass`` or ``PGPASSFILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .verdict import FAIL, INCONCLUSIVE, PASS, SignalResult


class DataTrigger(Protocol):
    name: str

    def run(self) -> SignalResult: ...


def refuse_password(option: str, dsn: str) -> None:
    """Raise ValueError when a DSN given on the command line carries a password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg raises ProgrammingError for malformed strings
        raise ValueError(f"{option}: not a valid PostgreSQL DSN ({exc})") from None
    if parts.get("password"):
        raise ValueError(f"{option}: must not contain a password (put it in ~/.pgpass or PGPASSFILE)")


@dataclass
class ReplicaConsistency:
    primary_dsn: str
    replica_dsn: str
    name: str = "replica-consistency"

    def run(self) -> SignalResult:
        from bazbii_db.replication import check_consistency, redact_dsn

        result = SignalResult(self.name, "data", f"{redact_dsn(self.primary_dsn)} vs {redact_dsn(self.replica_dsn)}",
                              INCONCLUSIVE, max=0.0)
        try:
            report = check_consistency(self.primary_dsn, self.replica_dsn, attempts=2, catchup_timeout=10.0)
        except Exception as exc:  # unreachable server, auth failure: cannot tell
            result.reason = f"consistency check could not run: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            return result
        result.value = float(len(report.differing))
        result.reason = report.to_text().splitlines()[0]
        if report.differing:
            result.status = FAIL
            result.reason += "; differing: " + ", ".join(t.table for t in report.differing)
        elif report.passed:
            result.status = PASS
        return result


@dataclass
class MigrationJournal:
    dsn: str
    name: str = "migration-journal"

    def run(self) -> SignalResult:
        import psycopg

        from bazbii_db.migrations.journal import Journal
        from bazbii_db.replication import redact_dsn

        result = SignalResult(self.name, "data", redact_dsn(self.dsn), INCONCLUSIVE, max=0.0)
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                entries = Journal(conn).entries()
        except psycopg.Error as exc:
            result.reason = f"journal could not be read: {str(exc).splitlines()[0]}"
            return result
        failed = [e for e in entries if e.status == "failed"]
        result.value = float(len(failed))
        result.status = FAIL if failed else PASS
        result.reason = ("; ".join(f"{e.migration_id} {e.step} failed: {(e.last_error or '').splitlines()[0] if e.last_error else 'no error text'}"
                                   for e in failed)
                         or f"{len(entries)} journal entries, none failed")
        return result
