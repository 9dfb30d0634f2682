"""The one error root of :mod:`bazbii_db.migrations` and the runner's errors. Messages are safe to log.

A leaf module (imports nothing of the package), so every module can derive its errors from
:class:`MigrationError`: the spec (``MigrationSpecError``), the contract check
(``ContractRefused``) and the runner below. ``SqlSafetyError`` belongs to ``bazbii_db.sql_safety``.
"""

from __future__ import annotations


class MigrationError(Exception):
    """Root of every error this package raises on purpose."""


class ChecksumMismatch(MigrationError):
    """A step's files changed after it was applied (or after part of it was applied)."""


class StageOrderError(MigrationError):
    """A stage was requested before the stages it depends on were applied."""


class IrreversibleStage(MigrationError):
    """A stage without a down step was asked to roll back; nothing ran."""


class RunnerLockTimeout(MigrationError):
    """Another runner held the single-runner lock for longer than we were willing to wait."""

    def __init__(self, message: str, holders: list):
        super().__init__(message)
        self.holders = holders


class LockRetryExhausted(MigrationError):
    """A DDL statement kept hitting lock_timeout (SQLSTATE 55P03) until the retry budget ran out."""

    def __init__(self, message: str, attempts: int, blockers: list):
        super().__init__(message)
        self.attempts = attempts
        self.blockers = blockers


class StatementFailed(MigrationError):
    """A statement of a migration file failed; the message names the file and line."""

    def __init__(self, message: str, sqlstate: str | None):
        super().__init__(message)
        self.sqlstate = sqlstate


class BackfillThrottled(MigrationError):
    """The backfill stayed throttled (replica lag or lock waits) for longer than allowed."""


class BackfillError(MigrationError):
    """The backfill cannot run (bad table or key, spec changed mid-way, ...)."""


class MigrationStopped(MigrationError):
    """A stop was requested (SIGINT/SIGTERM through the CLI): the run ended at a safe point, resumable.

    An error, so that no caller takes a stopped stage for an applied one; the journal keeps the units
    done and the backfill checkpoint keeps the last batch, so running the same stage again resumes."""
