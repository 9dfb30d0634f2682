"""Right before the switchover PAUSEs: what PAUSE would have to wait for, or would cut short.

PAUSE waits for every transaction in flight through PgBouncer and holds every other client
meanwhile. So one client holding a transaction open would make everyone wait out the whole PAUSE
timeout. The switchover looks first, and waits (without pausing, bounded) while any is open.

What such a transaction looks like in ``pg_stat_activity`` on the primary, in transaction pool
mode: PgBouncer links a server connection to the client from ``BEGIN`` until ``COMMIT``, so it is
a client backend of the pooler (``client_addr`` is PgBouncer's host, ``application_name`` the
client's) whose ``xact_start`` is the BEGIN. While the client thinks between statements it is
``idle in transaction``; while a statement runs it is ``active`` (an autocommit statement is a
transaction too). The pooler's spare server connections are ``idle`` with no ``xact_start``: they
hold nothing. So the test is the transaction's age, ``xact_start``, whatever the state: not
``query_start`` (an idle-in-transaction client that ran its last statement long ago would look
fresh) and not the state (``active`` includes a 1 ms statement). Direct sessions (not through
PgBouncer) count too: they do not hold PAUSE, but a read-write transaction open across the fence
could commit after the fenced LSN, on the old primary only.

PAUSE also closes the server connections PgBouncer is still logging in, and PgBouncer (1.18) takes
such a close for a failed login: it then opens no new server connection for that pool for
``server_login_retry``, and fails new clients fast meanwhile. So the switchover also waits until no
server login is in progress (``SHOW POOLS`` ``sv_login``), and PgBouncer's ``server_login_retry``
is kept short (``PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS``) for the few milliseconds between this look
and PAUSE.

The message names each session by what identifies it, never by its query text (which may hold
data or a password): pid, user, database, application, client address, state and ages, and, for a
session of the pooler, the client behind it (PgBouncer's ``SHOW SERVERS``/``SHOW CLIENTS``).
Seeing other roles' ``xact_start`` needs ``pg_read_all_stats`` (in ``pg_monitor``, see ``grants``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from threading import Event
from typing import Callable

import psycopg

LONG_TRANSACTIONS_SQL = """
SELECT pid, usename, datname, application_name, host(client_addr), client_port, state,
       extract(epoch FROM clock_timestamp() - xact_start)::float8,
       extract(epoch FROM clock_timestamp() - state_change)::float8
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
   AND xact_start < clock_timestamp() - make_interval(secs => %s)
 ORDER BY xact_start
"""


@dataclass(frozen=True)
class LongTransaction:
    pid: int
    user: str | None
    database: str | None
    application: str | None
    client_addr: str | None
    client_port: int | None
    state: str | None
    open_s: float
    in_state_s: float | None
    pooler_client: str | None = None  # "addr:port" of the client behind PgBouncer, when known

    def describe(self) -> str:
        who = [f"user {self.user}", f"database {self.database}"]
        if self.application:
            who.append(f"application {self.application!r}")
        who.append(f"from {self.client_addr}:{self.client_port}" if self.client_addr else "from a local socket")
        if self.pooler_client:
            who.append(f"PgBouncer client {self.pooler_client}")
        if self.state == "active":
            doing = f"running a statement for {self.in_state_s or 0:.1f} s"
        elif self.state and self.state.startswith("idle in transaction"):
            doing = f"{self.state} for {self.in_state_s or 0:.1f} s (its client holds it open)"
        else:
            doing = self.state or "state unknown"
        return f"pid {self.pid} ({', '.join(who)}): {doing}, transaction open {self.open_s:.1f} s"


def long_transactions(conn: psycopg.Connection, older_than: float) -> list[LongTransaction]:
    """Client backends other than ours whose transaction has been open longer than ``older_than`` s."""
    return [LongTransaction(*row) for row in conn.execute(LONG_TRANSACTIONS_SQL, (older_than,)).fetchall()]


def with_pooler_clients(found: list[LongTransaction], servers: list[dict],
                        clients: list[dict]) -> list[LongTransaction]:
    """Name the client behind each session of the pooler: ``SHOW SERVERS`` gives the backend's pid
    (``remote_pid``) and the client it is linked to (``link`` = a client's ``ptr`` in ``SHOW CLIENTS``)."""
    by_ptr = {row.get("ptr"): row for row in clients if row.get("ptr")}
    linked = {}
    for server in servers:
        client = by_ptr.get(server.get("link"))
        if client is not None and server.get("remote_pid"):
            linked[int(server["remote_pid"])] = f"{client.get('addr')}:{client.get('port')}"
    return [replace(t, pooler_client=linked.get(t.pid)) for t in found]


@dataclass(frozen=True)
class Obstacles:
    """What PAUSE would wait for (long transactions) or cut short (PgBouncer server logins)."""

    transactions: list[LongTransaction]
    logins: int

    def __bool__(self) -> bool:
        return bool(self.transactions or self.logins)

    def describe(self, older_than: float) -> str:
        parts = []
        if self.transactions:
            parts.append(f"{len(self.transactions)} transaction(s) open longer than {older_than:g} s on the old "
                         "primary: " + "; ".join(t.describe() for t in self.transactions))
        if self.logins:
            parts.append(f"{self.logins} PgBouncer server login(s) in progress (PAUSE would cut them short, and "
                         "PgBouncer would then open no server connection for server_login_retry)")
        return "; ".join(parts) or "nothing"


@dataclass(frozen=True)
class WaitOutcome:
    still: Obstacles  # false: nothing left, PAUSE now
    first_seen: Obstacles  # what the first look found (false: there was nothing to wait for)
    waited_s: float


def wait_until_clear(look: Callable[[], Obstacles], wait: float, *, poll_interval: float = 0.02,
                     stop: Event | None = None) -> WaitOutcome:
    """Look until ``look()`` finds nothing, for at most ``wait`` s or until ``stop`` is set.

    The caller PAUSEs right after a clear look: a transaction that began in between is younger than
    the bound, and PAUSE's own timeout bounds what it can cost.
    """
    started = time.monotonic()
    deadline = started + wait
    first_seen = None
    while True:
        found = look()
        first_seen = found if first_seen is None else first_seen
        if not found or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return WaitOutcome(found, first_seen, time.monotonic() - started)
        pause = min(poll_interval, max(0.0, deadline - time.monotonic()))
        if stop is not None:
            stop.wait(pause)
        else:
            time.sleep(pause)
