"""Planned switchover through PgBouncer with zero failed transactions.

Sequence (each step timed into :class:`SwitchoverReport`):

Outside the window (pre-checks, nothing changed yet):
  the old primary is a writable primary, the new one is in recovery, streaming,
  from the same cluster (system identifier), replay lag under ``max_lag_bytes``;
  PgBouncer knows the alias, it is not already paused, the ini entry exists and
  is writable; all four connections (old, new, two admin) are opened now.

Right before the window, *without* pausing (``prepause``): wait until no transaction on the old
primary has been open longer than ``long_transaction_seconds`` and PgBouncer is logging no server
connection in, for at most ``long_transaction_wait``; if one still is, abort naming the sessions.
Nothing was changed, and nobody stalled: a transaction held open across the switchover would
otherwise make every client wait out the PAUSE timeout.

The window:
  1. ``PAUSE alias`` with a short timeout (a transaction begun after the check above holds it at
     most that long). On timeout: RESUME from the second admin connection, discard the first,
     abort. Nothing else was touched.
  2. Fence the old primary: ``ALTER SYSTEM SET default_transaction_read_only =
     on`` + ``pg_reload_conf()`` (waits until the setting is visible).
  3. ``L = pg_current_wal_insert_lsn()`` on the old primary (the insert position
     covers asynchronous commits too), and wait until it is flushed.
  4. Poll ``pg_last_wal_replay_lsn() >= L`` on the replica every ~1 ms, bounded.
  5. ``pg_promote(wait => false)``, then poll ``pg_is_in_recovery()`` every ~1 ms.
  6. Rewrite the ini ``[databases]`` host (atomic rename) + ``RELOAD``, verified
     with ``SHOW DATABASES``.
  7. ``RESUME alias``.

Abort paths: every failure before ``pg_promote`` un-fences the old primary
(``ALTER SYSTEM RESET`` + reload) and RESUMEs, so traffic continues on the old
primary exactly as before. From ``pg_promote`` on there is no way back (the new
timeline exists): failures roll *forward* and never un-fence the old primary —
with two writable primaries acknowledged commits could be lost. If promotion
cannot be confirmed, PgBouncer is resumed onto the still-fenced old primary
(reads work, writes fail read-only) and the error says so.

A stop request (``stop``, set by the CLI on SIGINT/SIGTERM/SIGHUP: ``bazbii_db.stopping``) is
honoured at the next safe point up to ``pg_promote``: during the wait for long transactions (nothing
changed yet), during PAUSE (RESUME) and between the steps of the window (un-fence, RESUME): the same
abort path, so no committed transaction is lost and PgBouncer is never left paused. After the
promotion request the window is finished (rolling forward is the only safe way) and the report notes
the request.

After the window the old primary is stopped by ``stop_old_primary`` when given
(the local test/bench helpers pass ``LocalCluster.stop``; in production the
retirement step does it). Until then it stays fenced and its remaining client
sessions are terminated. It holds no WAL the new primary lacks, but its
shutdown checkpoint diverges it: re-attach it as a standby with ``pg_rewind``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from threading import Event
from typing import Callable, TypeVar

import psycopg

from bazbii_db.rows import one_row, one_value
from bazbii_db.stopping import stop_reason
from bazbii_plan.facts import (DEFAULT_LONG_TRANSACTION_SECONDS, DEFAULT_LONG_TRANSACTION_WAIT_SECONDS,
                               DEFAULT_MAX_LAG_BYTES, DEFAULT_PAUSE_TIMEOUT_SECONDS)

from ._conn import connect, dsn_target, scrub
from .errors import CatchUpFailed, ReplicationError, SettingNotApplied
from .lag import primary_lsn, replay_lsn, wait_for_replay
from .lsn import format_lsn
from .pgbouncer import (IniChange, PauseNotDone, PauseStopped, PgBouncerAdmin, StagedIniChange, pause_or_resume,
                        read_database_entry, repoint_database, stage_database_host)
from .prepause import LongTransaction, Obstacles, long_transactions, wait_until_clear, with_pooler_clients

log = logging.getLogger("bazbii_db.replication.switchover")
T = TypeVar("T")
# How an abort at the pre-check begins (nothing was paused or fenced): what a rehearsal's fault waits for.
PRECHECK_FAILED = "pre-check failed"


@dataclass
class SwitchoverConfig:
    database_alias: str
    pgbouncer_ini_path: str
    new_host: str
    new_port: int
    new_dbname: str | None = None
    pause_timeout: float = DEFAULT_PAUSE_TIMEOUT_SECONDS
    long_transaction_seconds: float = DEFAULT_LONG_TRANSACTION_SECONDS
    long_transaction_wait: float = DEFAULT_LONG_TRANSACTION_WAIT_SECONDS  # 0: abort at once if any
    max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES
    catchup_timeout: float = 3.0
    promote_timeout: float = 30.0
    poll_interval: float = 0.001
    fence_timeout: float = 2.0


@dataclass
class SwitchoverReport:
    completed: bool = False
    promoted: bool = False
    aborted: bool = False
    stage: str = "precheck"            # last stage reached
    error: str = ""
    already_done: bool = False
    stopped_by: str = ""               # the stop request (a signal's name) that ended or marked the run
    precheck_lag_bytes: int | None = None
    fenced_lsn: str | None = None
    replica_replay_lsn: str | None = None
    old_primary: str = ""
    new_primary: str = ""
    old_primary_state: str = "serving"
    steps_ms: dict[str, float] = field(default_factory=dict)
    window_ms: float | None = None
    total_ms: float | None = None
    # time.monotonic() at PAUSE sent and at RESUME done, to line the window up with client-side timings
    window_started_at: float | None = None
    window_ended_at: float | None = None
    ini_change: dict | None = None
    events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        if self.completed:
            head = ("switchover already done" if self.already_done else "switchover COMPLETED")
        elif self.aborted and self.stopped_by:
            head = f"switchover STOPPED by {self.stopped_by} at {self.stage}; old primary {self.old_primary_state}"
        elif self.aborted:
            head = f"switchover ABORTED at {self.stage}; old primary {self.old_primary_state}"
        else:
            head = f"switchover FAILED at {self.stage}"
        lines = [f"{head}: {self.old_primary} -> {self.new_primary}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.steps_ms:
            lines.append("  steps ms: " + ", ".join(f"{k} {v:.1f}" for k, v in self.steps_ms.items()))
        if self.window_ms is not None:
            lines.append(f"  window {self.window_ms:.1f} ms; fenced LSN {self.fenced_lsn}, "
                         f"replica replayed {self.replica_replay_lsn}")
        lines.extend(f"  - {e}" for e in self.events)
        return "\n".join(lines)


# The report's steps between PAUSE and RESUME, in the order ``run`` takes them: what PgBouncer holds clients for.
WINDOW_STEPS = ("pause", "fence", "lsn", "catchup", "promote", "reload", "resume")


class SwitchoverError(ReplicationError):
    def __init__(self, report: SwitchoverReport):
        super().__init__(report.to_text())
        self.report = report


class SwitchoverAborted(SwitchoverError):
    """Aborted before promotion: the old primary was left (or put back) serving writes."""


class PromoteNotSignalled(ReplicationError):
    """``pg_promote`` returned false: the postmaster was not signalled (nothing changed on the replica)."""


class ResumeFailed(ReplicationError):
    """RESUME failed on both admin connections: PgBouncer still holds the clients."""


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000.0


def _system_identifier(conn: psycopg.Connection) -> int:
    return one_value(conn, "SELECT system_identifier FROM pg_control_system()")


def fence(conn: psycopg.Connection, timeout: float = 2.0) -> None:
    """Make new transactions on this server read-only (persisted with ALTER SYSTEM, applied by reload)."""
    conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    conn.execute("SELECT pg_reload_conf()")
    _wait_setting(conn, "on", timeout)


def flush_wal(conn: psycopg.Connection) -> None:
    """Flush the server's WAL now, even though the fence made new transactions read-only by default.

    Under PAUSE no commit follows the fence. A WAL writer that had nothing to do
    (every commit flushed itself) hibernates, and then leaves a last non-commit
    record (a page prune by a read, ...) unflushed for up to 25 x
    ``wal_writer_delay``: longer than the switchover may wait, so it aborted. A
    transactional logical message committed synchronously flushes all WAL before it
    (``pg_logical_emit_message`` is executable by PUBLIC and works at
    ``wal_level = replica``); the replica replays it as an empty transaction.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION READ WRITE")
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("SELECT pg_logical_emit_message(true, 'bazbii', 'switchover: flush the fenced WAL')")


def unfence(conn: psycopg.Connection, timeout: float = 2.0) -> None:
    conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
    try:
        conn.execute("SELECT pg_reload_conf()")
    except psycopg.Error:
        # If the fence's own reload never happened, no session is read-only and the file is reset.
        if one_value(conn, "SELECT current_setting('default_transaction_read_only')") == "off":
            return
        raise
    _wait_setting(conn, "off", timeout)


def missing_privileges(old: psycopg.Connection, new: psycopg.Connection) -> list[str]:
    """What the connecting role lacks for the switchover (superusers lack nothing)."""
    missing = []
    fence_ok, reload_ok, terminate_ok = one_row(
        old,
        "SELECT has_parameter_privilege('default_transaction_read_only', 'ALTER SYSTEM'),"
        " has_function_privilege('pg_reload_conf()', 'EXECUTE'),"
        " pg_has_role('pg_signal_backend', 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
    stats_ok = one_value(
        old, "SELECT pg_has_role('pg_read_all_stats', 'MEMBER')"
             " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
    promote_ok = one_value(new, "SELECT has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE')")
    if not fence_ok:
        missing.append("ALTER SYSTEM ON PARAMETER default_transaction_read_only (old primary)")
    if not reload_ok:
        missing.append("EXECUTE ON FUNCTION pg_reload_conf() (old primary, in this database)")
    if not promote_ok:
        missing.append("EXECUTE ON FUNCTION pg_promote(boolean, integer) (new primary, in this database)")
    if not terminate_ok:
        missing.append("pg_signal_backend membership (old primary)")
    if not stats_ok:  # without it other roles' xact_start reads NULL: long transactions would go unseen
        missing.append("pg_read_all_stats membership, e.g. through pg_monitor (old primary)")
    return missing


def _wait_setting(conn: psycopg.Connection, value: str, timeout: float) -> None:
    # The reload is asynchronous; our own backend applies it at its next command like every other one.
    deadline = time.monotonic() + timeout
    while True:
        current = one_value(conn, "SELECT current_setting('default_transaction_read_only')")
        if current == value:
            return
        if time.monotonic() >= deadline:
            raise SettingNotApplied(f"default_transaction_read_only still {current!r} after reload "
                               f"({timeout:g} s); is it overridden on the command line or per database/role?")
        time.sleep(0.001)


def planned_switchover(old_primary_dsn: str, new_primary_dsn: str, pgbouncer_admin_dsn: str,
                       config: SwitchoverConfig, *, stop_old_primary: Callable[[], None] | None = None,
                       on_stage: Callable[[str], None] | None = None, stop: Event | None = None) -> SwitchoverReport:
    """Run the switchover. Returns the report on success; raises :class:`SwitchoverAborted` (old primary
    serving) or :class:`SwitchoverError` (after promotion) with the report attached otherwise.

    ``on_stage(name)`` is called as each stage starts (progress display; tests use it to inject
    faults between the pre-check and the window). Setting ``stop`` (a :class:`bazbii_db.stopping.StopRequest`
    or any event) aborts at the next safe point before ``pg_promote`` (``report.stopped_by`` says so)."""
    return _Switchover(old_primary_dsn, new_primary_dsn, pgbouncer_admin_dsn, config, stop_old_primary,
                       on_stage, stop).run()


class _Switchover:
    """One switchover run: the named steps share the connections, the report and the abort path.

    Steps, in order: :meth:`precheck`, :meth:`wait_until_clear`, then the window :meth:`pause`, :meth:`fence`,
    :meth:`fenced_lsn`, :meth:`catch_up`, :meth:`promote`, :meth:`repoint`, :meth:`resume`; then
    :meth:`retire`. :meth:`roll_forward` replaces the window when the target is already promoted.
    Every step before promotion runs inside :meth:`step` (timed; any error aborts: un-fence, RESUME).
    """

    def __init__(self, old_primary_dsn: str, new_primary_dsn: str, pgbouncer_admin_dsn: str,
                 config: SwitchoverConfig, stop_old_primary: Callable[[], None] | None,
                 on_stage: Callable[[str], None] | None, stop: Event | None):
        self.dsns = (old_primary_dsn, new_primary_dsn, pgbouncer_admin_dsn)
        self.config = config
        self.alias = config.database_alias
        self.stop_old_primary = stop_old_primary
        self.on_stage = on_stage
        self.stop = stop
        self.report = SwitchoverReport(old_primary=dsn_target(old_primary_dsn),
                                       new_primary=dsn_target(new_primary_dsn))
        self.old: psycopg.Connection | None = None
        self.new: psycopg.Connection | None = None
        self.admin: PgBouncerAdmin | None = None
        self.backup: PgBouncerAdmin | None = None
        self.staged: StagedIniChange | None = None
        self.entry: dict = {}
        self.paused = False
        self.fenced = False
        self.fenced_at = 0
        self.window_started = 0.0

    # ------------------------------------------------------------------ what the pre-check opened
    # The connections and the staged ini are None until :meth:`precheck` opens them; every later step reads
    # them through these, so a step run without them fails naming what is missing.
    @property
    def old_conn(self) -> psycopg.Connection:
        return _opened(self.old, "the old primary's connection")

    @property
    def new_conn(self) -> psycopg.Connection:
        return _opened(self.new, "the new primary's connection")

    @property
    def admin_conn(self) -> PgBouncerAdmin:
        return _opened(self.admin, "PgBouncer's admin connection")

    @property
    def backup_conn(self) -> PgBouncerAdmin:
        return _opened(self.backup, "PgBouncer's second admin connection")

    @property
    def staged_ini(self) -> StagedIniChange:
        return _opened(self.staged, "the staged ini change")

    # ------------------------------------------------------------------ shared machinery
    def enter(self, stage: str) -> None:
        self.report.stage = stage
        if self.on_stage is not None:
            self.on_stage(stage)

    def event(self, text: str) -> None:
        self.report.events.append(text)
        log.info("switchover: %s", text)

    def scrub(self, text: str) -> str:
        return scrub(text, *self.dsns)

    @contextmanager
    def step(self, stage: str, failure: str):
        """A timed step before promotion: any error records its time, then aborts (un-fence, RESUME)."""
        self.enter(stage)
        started = time.monotonic()
        try:
            self.stop_if_requested()
            yield
        except SwitchoverError:
            self.report.steps_ms[stage] = _ms(started)
            raise
        except Exception as exc:
            self.report.steps_ms[stage] = _ms(started)
            raise self.abort(f"{failure}: {exc}") from None
        self.report.steps_ms[stage] = _ms(started)

    def stop_if_requested(self) -> None:
        """Abort here if a stop was requested (callers: the safe points before ``pg_promote``)."""
        if self.stop is not None and self.stop.is_set():
            self.report.stopped_by = stop_reason(self.stop)
            raise self.abort(f"stopped by {self.report.stopped_by} before {self.report.stage}")

    def abort(self, reason: str) -> SwitchoverAborted:
        """Undo everything done so far (un-fence, RESUME). Only valid before pg_promote."""
        report = self.report
        if self.staged is not None:
            self.staged.discard()
        report.aborted = True
        report.error = self.scrub(reason)
        if self.fenced:
            try:
                unfence(self.old_conn)
                self.fenced = False
                self.event("abort: old primary un-fenced (default_transaction_read_only reset)")
            except Exception as exc:  # loud: the old primary may be stuck read-only
                report.old_primary_state = "STILL FENCED (read-only): un-fence by hand with ALTER SYSTEM RESET " \
                                           "default_transaction_read_only; SELECT pg_reload_conf();"
                self.event(f"abort: un-fence FAILED: {self.scrub(str(exc))}")
        if self.paused:
            try:
                _resume_quietly(self.backup, self.admin, self.alias, report)
                self.paused = False
                self.event(f"abort: RESUME {self.alias}")
            except ReplicationError as exc:
                self.event(f"abort: {self.scrub(str(exc))}")
            if self.paused:
                report.old_primary_state += "; PgBouncer STILL PAUSED: run RESUME " + self.alias
        if report.old_primary_state == "serving":
            report.old_primary_state = "serving (unchanged)"
        return SwitchoverAborted(report)

    # ------------------------------------------------------------------ the run
    def run(self) -> SwitchoverReport:
        """The steps in order; WINDOW_STEPS are the ones between PAUSE and RESUME."""
        started = time.monotonic()
        try:
            if not self.precheck():
                return self.roll_forward()
            self.wait_until_clear()
            self.pause()
            self.fence()
            self.fenced_lsn()
            self.catch_up()
            self.promote()
            self.repoint()
            self.resume()
            self.retire()
            if self.stop is not None and self.stop.is_set():
                self.report.stopped_by = stop_reason(self.stop)
                self.event(f"stop requested ({self.report.stopped_by}) after pg_promote: the window was finished "
                           "(rolling forward is the only safe way from there)")
            return self.report
        except SwitchoverError:
            raise
        except Exception as exc:
            if self.report.promoted:
                self.report.error = self.report.error or self.scrub(f"{type(exc).__name__}: {exc}")
                raise SwitchoverError(self.report) from None
            raise self.abort(f"unexpected error at {self.report.stage}: {type(exc).__name__}: {exc}") from None
        finally:
            if self.staged is not None and not self.staged.committed:
                self.staged.discard()
            self.report.total_ms = _ms(started)
            for who in (self.admin, self.backup):
                if who is not None:
                    who.discard()
            for conn in (self.old, self.new):
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass

    # ------------------------------------------------------------------ outside the window
    def precheck(self) -> bool:
        """Connections and checks, nothing changed. False: the target is already a primary (roll forward)."""
        config, alias, report = self.config, self.alias, self.report
        old_dsn, new_dsn, admin_dsn = self.dsns
        report.stage = "precheck"
        try:
            self.new = connect(new_dsn, application_name="bazbii-switchover")
            self.admin = PgBouncerAdmin(admin_dsn)
            self.backup = PgBouncerAdmin(admin_dsn)
        except Exception as exc:
            raise self.abort(f"pre-check: {exc}") from None
        old_error = ""
        try:
            self.old = connect(old_dsn, application_name="bazbii-switchover")
        except Exception as exc:
            old_error = str(exc)
        try:
            self.entry = read_database_entry(config.pgbouncer_ini_path, alias)
        except FileNotFoundError:
            raise self.abort(f"pre-check: {config.pgbouncer_ini_path} not found on this machine (the switchover "
                             "rewrites PgBouncer's ini locally: run it on the pooler host)") from None
        except Exception as exc:
            raise self.abort(f"pre-check: {exc}") from None
        old, new, entry = self.old, self.new_conn, self.entry
        if not one_value(new, "SELECT pg_is_in_recovery()"):
            return False
        if old is None:
            raise self.abort(f"pre-check: {old_error}")

        old_recovery, old_ro = one_row(
            old, "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
        problems = []
        if old_recovery:
            problems.append("old primary is in recovery (not a primary)")
        if old_ro == "on":
            problems.append("old primary already has default_transaction_read_only=on (fenced or misconfigured)")
        if _system_identifier(old) != _system_identifier(new):
            problems.append("new primary is not a replica of the old primary (system identifiers differ)")
        receiver = new.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
        if not receiver or receiver[0] != "streaming":
            problems.append(f"replica WAL receiver is {receiver[0] if receiver else 'not running'}, not streaming")
        if one_value(new, "SELECT pg_get_wal_replay_pause_state() <> 'not paused'"):
            problems.append("WAL replay is paused on the replica")
        lacking = missing_privileges(old, new)
        if lacking:
            problems.append("the connecting role lacks: " + "; ".join(lacking) +
                            " (see bazbii_db.replication.grants)")
        current = primary_lsn(old, "write")
        replayed = replay_lsn(new)
        report.precheck_lag_bytes = max(0, current - (replayed or 0))
        if report.precheck_lag_bytes >= config.max_lag_bytes:
            problems.append(f"replay lag {report.precheck_lag_bytes} bytes >= {config.max_lag_bytes}")
        row = self.admin_conn.database(alias)
        if row is None:
            problems.append(f"PgBouncer has no database {alias!r}")
        elif row.get("paused"):
            problems.append(f"PgBouncer database {alias!r} is already paused (another operation in progress?)")
        elif (str(row.get("host")), str(row.get("port"))) != (str(entry.get("host")), str(entry.get("port", 5432))):
            problems.append(f"PgBouncer routes {alias!r} to {row.get('host')}:{row.get('port')} but "
                            f"{config.pgbouncer_ini_path} says {entry.get('host')}:{entry.get('port')}: "
                            "is this the ini PgBouncer was started with?")
        if str(entry.get("host")) == config.new_host and str(entry.get("port")) == str(config.new_port):
            problems.append("the ini already points at the new host while the new host is still a replica")
        if problems:
            raise self.abort(f"{PRECHECK_FAILED}: " + "; ".join(problems))
        try:
            self.staged = stage_database_host(config.pgbouncer_ini_path, alias, host=config.new_host,
                                              port=config.new_port, dbname=config.new_dbname)
        except Exception as exc:
            raise self.abort(f"pre-check: cannot prepare the new {config.pgbouncer_ini_path}: {exc}") from None
        self.event(f"pre-check ok: replay lag {report.precheck_lag_bytes} bytes, replica streaming")
        return True

    def wait_until_clear(self) -> None:
        """Right before PAUSE, unpaused: wait (bounded) until no transaction on the old primary is older than
        the bound and PgBouncer logs no server in; abort naming what is left if it does not clear (nothing was
        changed, nobody stalled). PAUSE follows at once."""
        with self.step("transactions", "looking for long transactions failed"):
            config, alias = self.config, self.alias

            def look() -> Obstacles:
                return Obstacles(long_transactions(self.old_conn, config.long_transaction_seconds),
                                 self.admin_conn.logins_in_progress(alias))

            outcome = wait_until_clear(look, config.long_transaction_wait, stop=self.stop)
            self.stop_if_requested()
            if outcome.still:
                still = Obstacles(self.behind_pooler(outcome.still.transactions), outcome.still.logins)
                raise self.abort(
                    f"after waiting {outcome.waited_s:.1f} s without pausing (nothing was changed), still "
                    f"{still.describe(config.long_transaction_seconds)}. Let them finish or end them "
                    "(SELECT pg_terminate_backend(pid)), then run again")
            if outcome.first_seen:
                self.event(f"waited {outcome.waited_s:.2f} s, unpaused, for "
                           f"{outcome.first_seen.describe(config.long_transaction_seconds)}")

    def behind_pooler(self, found: list[LongTransaction]) -> list[LongTransaction]:
        """``found`` with the client behind PgBouncer named where the admin console tells it."""
        try:
            return with_pooler_clients(found, self.admin_conn.show("servers"), self.admin_conn.show("clients"))
        except Exception:
            return found  # the sessions are still named, without the client behind the pooler

    # ------------------------------------------------------------------ the window
    def pause(self) -> None:
        """PAUSE the alias (bounded); on timeout or a stop the pause-or-resume helper RESUMEs and discards."""
        with self.step("pause", "PAUSE failed"):
            self.window_started = time.monotonic()
            self.report.window_started_at = self.window_started
            self.paused = True  # from the moment PAUSE is sent, PgBouncer holds new transactions
            try:
                pause_or_resume(self.admin_conn, self.backup_conn, self.alias, self.config.pause_timeout, self.stop)
            except PauseNotDone as exc:
                self.paused = False  # the helper RESUMEd from the backup connection
                self.admin = None
                self.event(f"abort: RESUME {self.alias}")
                if isinstance(exc, PauseStopped):
                    self.report.stopped_by = stop_reason(self.stop)
                raise self.abort(str(exc)) from None

    def fence(self) -> None:
        with self.step("fence", "fence failed"):
            self.fenced = True  # set before: a half-applied ALTER SYSTEM must be undone too
            fence(self.old_conn, self.config.fence_timeout)

    def fenced_lsn(self) -> None:
        """The insert position after the fence (covers asynchronous commits), once flushed."""
        with self.step("lsn", "reading the fenced LSN failed"):
            old, config = self.old_conn, self.config
            flush_wal(old)  # everything written before the fence is flushed now, not when the WAL writer wakes
            self.fenced_at = primary_lsn(old, "insert")
            self.report.fenced_lsn = format_lsn(self.fenced_at)
            deadline = time.monotonic() + config.catchup_timeout
            while primary_lsn(old, "flush") < self.fenced_at:
                if time.monotonic() > deadline:
                    raise CatchUpFailed(f"old primary did not flush WAL up to {self.report.fenced_lsn}")
                time.sleep(config.poll_interval)

    def catch_up(self) -> None:
        with self.step("catchup", "catch-up failed"):
            config, fenced, new = self.config, self.fenced_at, self.new_conn
            behind = fenced - (replay_lsn(new) or 0)
            if behind >= config.max_lag_bytes:
                raise CatchUpFailed(f"replica is {behind} bytes behind the fenced LSN "
                                    f"(>= {config.max_lag_bytes}); not waiting inside the window")
            reached, replayed, _ = wait_for_replay(new, fenced, timeout=config.catchup_timeout,
                                                   poll_interval=config.poll_interval)
            self.report.replica_replay_lsn = format_lsn(replayed)
            if not reached:
                raise CatchUpFailed(f"replica replayed only to {format_lsn(replayed)}, not the fenced "
                                    f"{self.report.fenced_lsn}, within {config.catchup_timeout:g} s")

    def promote(self) -> None:
        """``pg_promote(wait => false)`` then poll; from the request on there is no way back."""
        with self.step("promote", "pg_promote failed"):
            signalled = one_value(self.new_conn, "SELECT pg_promote(wait => false)")
            if not signalled:
                raise PromoteNotSignalled("pg_promote returned false (could not signal the postmaster)")
        # Point of no return: a promotion request is out. Never un-fence the old primary from here on.
        report, config = self.report, self.config
        t = time.monotonic()
        deadline = t + config.promote_timeout
        while True:
            try:
                if not one_value(self.new_conn, "SELECT pg_is_in_recovery()"):
                    break
            except psycopg.Error:
                pass
            if time.monotonic() >= deadline:
                report.steps_ms["promote"] += _ms(t)
                report.error = (f"promotion requested but not confirmed within {config.promote_timeout:g} s; "
                                "old primary stays FENCED (read-only); PgBouncer resumed onto it. "
                                "Check the new primary's log, then repoint PgBouncer by re-running.")
                report.old_primary_state = "fenced (read-only)"
                self.staged_ini.discard()
                _resume_quietly(self.admin, self.backup, self.alias, report)
                self.paused = False
                raise SwitchoverError(report)
            time.sleep(config.poll_interval)
        report.steps_ms["promote"] += _ms(t)
        report.promoted = True
        self.fenced = False  # ownership passes to the retirement of the old primary
        report.old_primary_state = "fenced (read-only)"

    def repoint(self) -> None:
        """Commit the staged ini (atomic rename) and RELOAD, verified with SHOW DATABASES."""
        self.enter("reload")
        report, config = self.report, self.config
        t = time.monotonic()
        try:
            change = repoint_database(self.admin_conn, config.pgbouncer_ini_path, self.alias, host=config.new_host,
                                      port=config.new_port, dbname=config.new_dbname, staged=self.staged_ini)
            report.ini_change = _ini_change_dict(change)
        except Exception as exc:
            self.staged_ini.discard()
            report.steps_ms["reload"] = _ms(t)
            report.error = (f"new primary promoted but repointing PgBouncer failed: {self.scrub(str(exc))}. "
                            "PgBouncer stays PAUSED (clients wait rather than write to the fenced old primary): "
                            f"fix the ini, RELOAD, then RESUME {self.alias}; or re-run the switchover, which "
                            "rolls forward.")
            raise SwitchoverError(report) from None
        report.steps_ms["reload"] = _ms(t)

    def resume(self) -> None:
        self.enter("resume")
        report = self.report
        t = time.monotonic()
        _resume_quietly(self.admin, self.backup, self.alias, report)
        self.paused = False
        report.steps_ms["resume"] = _ms(t)
        report.window_ended_at = time.monotonic()
        report.window_ms = (report.window_ended_at - self.window_started) * 1000.0
        self.staged_ini.sync_dir()  # durability of the rename, outside the window
        self.event(f"window {report.window_ms:.1f} ms; fenced at {report.fenced_lsn}, replica at "
                   f"{report.replica_replay_lsn}")

    # ------------------------------------------------------------------ after the window
    def retire(self) -> None:
        self.enter("retire")
        _retire_old(self.report, self.old_conn, self.stop_old_primary, self.dsns)
        self.report.completed = True
        self.report.stage = "done"

    def roll_forward(self) -> SwitchoverReport:
        """The target is already a primary: make sure the old one cannot take writes, then repoint PgBouncer."""
        report, config, old, admin = self.report, self.config, self.old, self.admin_conn
        report.stage = "roll-forward"
        report.promoted = True
        in_recovery, read_only = None, None  # None: the old primary is unreachable (already stopped)
        if old is not None:
            try:
                in_recovery, read_only = one_row(
                    old, "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')")
            except psycopg.Error:
                pass
        if in_recovery is False and read_only != "on":
            report.error = ("the new server is already a primary but the old primary is still writable: "
                            "two primaries. Refusing to touch PgBouncer; fence or stop one of them by hand.")
            raise SwitchoverError(report)
        entry = self.entry
        if str(entry.get("host")) == config.new_host and str(entry.get("port")) == str(config.new_port) \
                and not admin.is_paused(self.alias):
            report.already_done = True
            report.completed = True
            report.stage = "done"
            report.events.append("new primary already promoted and PgBouncer already points at it")
            return report
        t = time.monotonic()
        if not admin.is_paused(self.alias):
            pause_or_resume(admin, self.backup_conn, self.alias, config.pause_timeout)
        change = repoint_database(admin, config.pgbouncer_ini_path, self.alias, host=config.new_host,
                                  port=config.new_port, dbname=config.new_dbname)
        report.ini_change = _ini_change_dict(change)
        _resume_quietly(admin, self.backup, self.alias, report)
        report.steps_ms["roll_forward"] = _ms(t)
        report.events.append("rolled forward: PgBouncer repointed at the already promoted primary")
        if in_recovery is False and old is not None:
            _retire_old(report, old, self.stop_old_primary, self.dsns)
        report.completed = True
        report.stage = "done"
        return report


def _opened(value: T | None, what: str) -> T:
    """``value``, which the pre-check opened: ``None`` here means a step ran without it (a bug), said so."""
    if value is None:
        raise RuntimeError(f"switchover: {what} is used before the pre-check opened it")
    return value


def _ini_change_dict(change: IniChange) -> dict:
    from .pgbouncer import parse_connstr
    # Keep only routing keys: a database definition may carry a password.
    def routing(value: str) -> str:
        return " ".join(f"{k}={v}" for k, v in parse_connstr(value) if k in ("host", "port", "dbname"))
    return {"path": change.path, "alias": change.alias, "old": routing(change.old_value),
            "new": routing(change.new_value)}


def _resume_quietly(admin: PgBouncerAdmin | None, backup: PgBouncerAdmin | None, alias: str,
                    report: SwitchoverReport) -> None:
    last: Exception | None = None
    for who in (admin, backup):
        if who is None:
            continue
        try:
            who.resume_if_paused(alias)
            return
        except Exception as exc:
            last = exc
    raise ResumeFailed(f"RESUME {alias} failed on both admin connections: {last}")


def _retire_old(report: SwitchoverReport, old: psycopg.Connection, stop_old_primary: Callable[[], None] | None,
                secrets: tuple[str, ...]) -> None:
    t = time.monotonic()
    if stop_old_primary is not None:
        try:
            old.close()
        except Exception:
            pass
        try:
            stop_old_primary()
            report.old_primary_state = "stopped (re-attach with pg_rewind)"
        except Exception as exc:
            report.old_primary_state = "fenced (read-only), stop FAILED"
            report.events.append(f"stopping the old primary failed: {scrub(str(exc), *secrets)}")
    else:
        try:
            killed = one_value(old, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
            report.events.append(f"old primary left fenced; {killed} remaining client sessions terminated; "
                                 "stop it with the retirement step")
        except Exception as exc:
            report.events.append(f"terminating old-primary sessions failed: {scrub(str(exc), *secrets)}")
        report.old_primary_state = "fenced (read-only), running: retire it"
    report.steps_ms["retire"] = _ms(t)
