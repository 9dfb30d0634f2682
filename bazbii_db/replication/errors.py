"""The one error root of :mod:`bazbii_db.replication`; every message is safe to print (no passwords).

Callers (the CLI, the tests) catch :class:`ReplicationError`; the subclasses say which
step failed. Reports (gate, consistency, switchover) ride on the exception that carries them.
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Root of every error this package raises on purpose."""


class UsageError(ReplicationError):
    """Bad arguments or missing input (CLI exit code 2)."""


class ConnectionFailed(ReplicationError):
    """A server could not be reached; the message names the target but never the password."""


class SlotActive(ReplicationError):
    """A replication slot that should be dropped still has a consumer."""


class SettingNotApplied(ReplicationError):
    """A reloaded setting did not become visible in time (overridden elsewhere?)."""


class CatchUpFailed(ReplicationError):
    """The replica did not reach the fenced LSN (or the old primary did not flush it) in time."""


class IniPermissionError(ReplicationError):
    """PgBouncer's ini (or its directory) cannot be read or replaced by this user; nothing was written."""
