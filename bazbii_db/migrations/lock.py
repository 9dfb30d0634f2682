"""The single-runner lock: a session-level advisory lock on the runner's own autocommit connection.

Why session-level and autocommit: ``pg_advisory_xact_lock`` would need an open transaction for
the whole run, and ``CREATE INDEX CONCURRENTLY`` on another connection waits for every open
transaction to finish, i.e. for the lock holder itself. A session lock held by an idle
autocommit connection blocks nothing but other runners. It is released when the connection
closes, including when the runner process is killed (the server sees the socket close).

Not through PgBouncer in transaction pooling mode: a session lock needs a real session.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import psycopg

from bazbii_db.migrations.errors import RunnerLockTimeout
from bazbii_db.rows import one_value

log = logging.getLogger("bazbii_db.migrations")

# A 63-bit key derived from a fixed name: one runner per database.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"bazbii-schema-migrations").digest()[:8], "big") >> 1


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str
    client_addr: str | None
    backend_start: str
    state: str | None

    def describe(self) -> str:
        return (f"pid {self.pid} application_name={self.application_name!r} client={self.client_addr or 'local'} "
                f"connected since {self.backend_start} state={self.state}")


class RunnerLock:
    def __init__(self, conn: psycopg.Connection, key: int = LOCK_KEY):
        if not conn.autocommit:
            raise ValueError("the runner lock needs an autocommit connection (an open transaction blocks CIC)")
        self.conn = conn
        self.key = key
        self.held = False

    def try_acquire(self) -> bool:
        got = one_value(self.conn, "SELECT pg_try_advisory_lock(%s)", (self.key,))
        self.held = bool(got)
        return self.held

    def acquire(self, wait_s: float, poll_s: float = 0.1) -> float:
        """Wait up to ``wait_s`` seconds; return the seconds waited or raise RunnerLockTimeout."""
        start = time.monotonic()
        announced = False
        while True:
            if self.try_acquire():
                return time.monotonic() - start
            if not announced:
                holders = self.holders()
                log.info("another migration runner holds the lock (%s); waiting up to %.0fs",
                         "; ".join(h.describe() for h in holders) or "holder not visible", wait_s)
                announced = True
            if time.monotonic() - start >= wait_s:
                holders = self.holders()
                who = "; ".join(h.describe() for h in holders) or "a session not visible to this user"
                raise RunnerLockTimeout(
                    f"another migration runner has held the migration lock for more than {wait_s:g}s: {who}",
                    holders)
            time.sleep(min(poll_s, max(0.0, wait_s - (time.monotonic() - start))) or poll_s)

    def holders(self) -> list[LockHolder]:
        rows = self.conn.execute(
            """
            SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr), a.backend_start::text, a.state
              FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1
               AND a.pid <> pg_backend_pid()
            """,
            (str(self.key >> 32), str(self.key & 0xFFFFFFFF)),
        ).fetchall()
        return [LockHolder(*row) for row in rows]

    def release(self) -> None:
        if self.held and not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self.held = False
