"""Replication lag as the primary sees it, in bytes and in time.

Two measures, read from ``pg_stat_replication`` on the primary:

* **bytes**: ``pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)`` — how much WAL
  the replica still has to replay. This is what the lag gate uses: it is
  defined at every instant, including when the primary is idle.
* **time**: ``replay_lag`` — PostgreSQL's own estimate. It is NULL whenever the
  standby has caught up and nothing new arrived (about 40 % of samples at light
  load), so a NULL means "no measurement", never "zero" and never "infinite".

``now() - pg_last_xact_replay_timestamp()`` is deliberately absent: it grows
while the primary is idle, so it measures the age of the last commit, not lag.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import psycopg

from bazbii_db.rows import one_row, one_value

from .lsn import parse_lsn

# The replica is found by its slot (pg_basebackup -C -S) or by application_name.
_SAMPLE_SQL = """
SELECT r.pid,
       r.application_name,
       r.state,
       r.sync_state,
       pg_current_wal_lsn()::text                               AS current_lsn,
       r.sent_lsn::text, r.write_lsn::text, r.flush_lsn::text, r.replay_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint AS replay_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::bigint  AS flush_bytes,
       extract(epoch FROM r.write_lag)::float8                  AS write_lag_s,
       extract(epoch FROM r.flush_lag)::float8                  AS flush_lag_s,
       extract(epoch FROM r.replay_lag)::float8                 AS replay_lag_s,
       s.slot_name
  FROM pg_stat_replication r
  LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
 WHERE s.slot_name = %(name)s OR r.application_name = %(name)s
 ORDER BY (s.slot_name = %(name)s) DESC NULLS LAST
 LIMIT 1
"""

_SLOT_SQL = """
SELECT slot_type, active, wal_status, restart_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes
  FROM pg_replication_slots WHERE slot_name = %(name)s
"""


@dataclass
class LagSample:
    """One reading. ``streaming`` False means the replica is absent or not in the streaming state."""

    at: float                      # time.monotonic() when the reading came back
    replica: str                   # the slot or application_name asked for
    streaming: bool
    state: str | None              # pg_stat_replication.state (None: no walsender for it)
    current_lsn: str | None
    replay_lsn: str | None
    replay_bytes: int | None       # None when the replica is not connected
    flush_bytes: int | None
    replay_lag_s: float | None     # None is normal when caught up
    write_lag_s: float | None
    flush_lag_s: float | None
    detail: str = ""               # why it is not streaming, in words

    def to_dict(self) -> dict:
        return asdict(self)


def sample_lag(primary: psycopg.Connection, replica: str) -> LagSample:
    """Read the lag of ``replica`` (slot name or application_name) from the primary's views."""
    row = primary.execute(_SAMPLE_SQL, {"name": replica}).fetchone()
    now = time.monotonic()
    if row is None:
        slot = primary.execute(_SLOT_SQL, {"name": replica}).fetchone()
        if slot is None:
            detail = (f"no walsender and no replication slot named {replica!r} on the primary: "
                      "the replica was never attached or is identified differently")
        else:
            slot_type, active, wal_status, restart_lsn, retained = slot
            detail = (f"slot {replica!r} ({slot_type}) exists but has no streaming walsender "
                      f"(active={active}, wal_status={wal_status}, restart_lsn={restart_lsn}, "
                      f"retained {retained} bytes): replica down or disconnected")
        current = one_value(primary, "SELECT pg_current_wal_lsn()::text")
        return LagSample(at=now, replica=replica, streaming=False, state=None, current_lsn=current,
                         replay_lsn=None, replay_bytes=None, flush_bytes=None, replay_lag_s=None,
                         write_lag_s=None, flush_lag_s=None, detail=detail)
    (_pid, _app, state, _sync, current, _sent, _write, _flush, replay, replay_bytes, flush_bytes,
     write_lag, flush_lag, replay_lag, _slot) = row
    streaming = state == "streaming" and replay is not None
    detail = "" if streaming else f"walsender state is {state!r}, not 'streaming'"
    return LagSample(at=now, replica=replica, streaming=streaming, state=state, current_lsn=current,
                     replay_lsn=replay, replay_bytes=replay_bytes, flush_bytes=flush_bytes,
                     replay_lag_s=replay_lag, write_lag_s=write_lag, flush_lag_s=flush_lag, detail=detail)


@dataclass
class ReplicaSideStatus:
    """What the replica itself says: in recovery, WAL receiver streaming, replay position."""

    in_recovery: bool
    receiver_status: str | None
    replay_lsn: str | None
    replay_paused: bool
    detail: str = ""

    @property
    def healthy(self) -> bool:
        return self.in_recovery and self.receiver_status == "streaming" and not self.replay_paused


def replica_side_status(replica: psycopg.Connection) -> ReplicaSideStatus:
    in_recovery = one_value(replica, "SELECT pg_is_in_recovery()")
    if not in_recovery:
        return ReplicaSideStatus(False, None, None, False, "server is not in recovery (it is a primary)")
    status, replay, paused = one_row(
        replica,
        "SELECT (SELECT status FROM pg_stat_wal_receiver), pg_last_wal_replay_lsn()::text,"
        " pg_get_wal_replay_pause_state() <> 'not paused'")
    detail = ""
    if status != "streaming":
        detail = f"WAL receiver status is {status!r}, not 'streaming'"
    elif paused:
        detail = "WAL replay is paused on the replica (pg_wal_replay_pause)"
    return ReplicaSideStatus(True, status, replay, bool(paused), detail)


def replay_lsn(replica: psycopg.Connection) -> int | None:
    """The replica's ``pg_last_wal_replay_lsn()`` as an integer."""
    return parse_lsn(one_value(replica, "SELECT pg_last_wal_replay_lsn()::text"))


# A primary's WAL positions: written (``pg_current_wal_lsn``), inserted (covers asynchronous commits) and flushed.
_PRIMARY_LSN_SQL = {
    "write": "SELECT pg_current_wal_lsn()::text",
    "insert": "SELECT pg_current_wal_insert_lsn()::text",
    "flush": "SELECT pg_current_wal_flush_lsn()::text",
}


def primary_lsn(primary: psycopg.Connection, position: Literal["write", "insert", "flush"]) -> int:
    """A WAL position of a primary as an integer (never NULL there: a server in recovery raises instead)."""
    query = _PRIMARY_LSN_SQL[position]
    lsn = parse_lsn(one_value(primary, query))
    if lsn is None:
        raise RuntimeError(f"{query!r} returned NULL on a primary")
    return lsn


def wait_for_replay(replica: psycopg.Connection, target_lsn: int, *, timeout: float,
                    poll_interval: float = 0.001) -> tuple[bool, int | None, float]:
    """Poll until the replica replayed ``target_lsn``. Returns (reached, last replay LSN, seconds waited)."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        current = replay_lsn(replica)
        if current is not None and current >= target_lsn:
            return True, current, time.monotonic() - start
        if time.monotonic() >= deadline:
            return False, current, time.monotonic() - start
        time.sleep(poll_interval)
