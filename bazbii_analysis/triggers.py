"""Data-consistency rollback triggers for ``watch``: pluggable checks over the existing database tools.

A trigger is anything with a ``name`` and a ``run() -> SignalResult``. The two here read what a check of
the database tools reports; the check itself is given by the caller (``watch`` passes
``bazbii_db.replication.check_consistency`` and the ``bazbii_db.migrations.journal.Journal`` entries),
so this module imports no database tool and ``bazbii_db`` imports nothing of this package's:

- :class:`ReplicaConsistency`: row counts and checksums at a fixed LSN; a differing table is a breach,
  an unverified table or an error is inconclusive.
- :class:`MigrationJournal`: a step recorded as ``failed`` is a breach.

DSNs must not carry passwords (they would show in process listings and logs):
use ``~/.pgpass`` or ``PGPASSFILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .verdict import FAIL, INCONCLUSIVE, PASS, SignalResult


class DataTrigger(Protocol):
    name: str

    def run(self) -> SignalResult: ...


def refuse_password(option: str, dsn: str) -> None:
    """Raise ValueError when a DSN given on the command line carries a password."""
    try:
        parts = conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg raises ProgrammingError for malformed strings
        raise ValueError(f"{option}: not a valid PostgreSQL DSN ({exc})") from None
    if parts.get("password"):
        raise ValueError(f"{option}: must not contain a password (put it in ~/.pgpass or PGPASSFILE)")


@dataclass
class ReplicaConsistency:
    check: Callable[[], Any]  # -> a ConsistencyReport (passed, differing, to_text())
    where: str  # "primary vs replica", without passwords
    name: str = "replica-consistency"

    def run(self) -> SignalResult:
        result = SignalResult(self.name, "data", self.where, INCONCLUSIVE, max=0.0)
        try:
            report = self.check()
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
    entries: Callable[[], list]  # -> the journal's entries (migration_id, step, status, last_error)
    where: str  # the database, without passwords
    name: str = "migration-journal"

    def run(self) -> SignalResult:
        result = SignalResult(self.name, "data", self.where, INCONCLUSIVE, max=0.0)
        try:
            entries = self.entries()
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
