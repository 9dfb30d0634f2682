"""PgBouncer admin console and the ``[databases]`` ini rewrite.

PgBouncer has no ``RECONFIGURE``: a database is moved by editing the ini and
issuing ``RELOAD``; changed connection parameters apply to new server
connections, and idle ones to the old host are closed.

The one rule this module enforces: **never RELOAD a new host without PAUSE.**
Clients connecting while the old host is gone fail once, and PgBouncer then
rejects every login for ``server_login_retry`` (15 s by default, and RELOAD does
not reset it). :func:`repoint_database` refuses to run unless the database is
paused.

PAUSE waits for every in-flight transaction. A long transaction therefore
blocks it — and a PAUSE that was overtaken by a RESUME never returns. So
:meth:`PgBouncerAdmin.pause` sends the command without blocking, waits at most
``timeout`` seconds (or until a stop is requested), and then the caller RESUMEs
from a *second* admin connection and discards the first (:func:`pause_or_resume`).
PAUSE also closes server connections still logging in, which PgBouncer takes for
failed logins (see :mod:`.prepause`, which waits for them before PAUSE).
"""

from __future__ import annotations

import os
import re
import select
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Event

import psycopg
from psycopg import pq

from bazbii_db.stopping import stop_reason

from ._conn import connect, dsn_target
from .errors import IniPermissionError, ReplicationError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(name: str) -> str:
    # The admin console takes bare names; refusing anything else keeps commands injection-free.
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid PgBouncer database name {name!r} (letters, digits, underscore)")
    return name


class PgBouncerError(ReplicationError):
    pass


class PauseNotDone(PgBouncerError):
    """PAUSE was given up before it completed (the connection it was sent on is unusable)."""


class PauseTimeout(PauseNotDone):
    pass


class PauseStopped(PauseNotDone):
    """A stop was requested while PAUSE waited for in-flight transactions."""


class NotPaused(PgBouncerError):
    pass


class PgBouncerAdmin:
    """One connection to the ``pgbouncer`` admin database (simple-query protocol only)."""

    def __init__(self, admin_dsn: str, *, connect_timeout: float = 5.0):
        self.target = dsn_target(admin_dsn)
        self._conn: psycopg.Connection | None = connect(admin_dsn, connect_timeout=connect_timeout,
                                                        application_name="bazbii-switchover")

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None:
            raise PgBouncerError("admin connection was discarded")
        return self._conn

    def command(self, text: str) -> str:
        cur = self.conn.execute(text)
        return cur.statusmessage or ""

    def show(self, what: str) -> list[dict]:
        cur = self.conn.execute(f"SHOW {_check_name(what).upper()}")
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def database(self, alias: str) -> dict | None:
        for row in self.show("databases"):
            if row.get("name") == alias:
                return row
        return None

    def is_paused(self, alias: str) -> bool:
        row = self.database(alias)
        if row is None:
            raise PgBouncerError(f"PgBouncer at {self.target} has no database {alias!r}")
        return bool(row.get("paused"))

    def logins_in_progress(self, alias: str) -> int:
        """Server connections of ``alias``'s pools still logging in (``SHOW POOLS`` ``sv_login``)."""
        return sum(int(row.get("sv_login") or 0) for row in self.show("pools") if row.get("database") == alias)

    def pause(self, alias: str, timeout: float, stop: Event | None = None) -> float:
        """PAUSE ``alias``, waiting at most ``timeout`` s for in-flight transactions. Returns seconds taken.

        On timeout raises :class:`PauseTimeout`, and :class:`PauseStopped` as soon as ``stop`` is set;
        either leaves the connection unusable (a PAUSE that never completed is still pending on it):
        RESUME from another connection, then :meth:`discard`.
        """
        pgconn = self.conn.pgconn
        start = time.monotonic()
        deadline = start + timeout
        pgconn.send_query(f"PAUSE {_check_name(alias)}".encode())
        while pgconn.flush() != 0:
            select.select([], [pgconn.socket], [], max(0.0, deadline - time.monotonic()))
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            if stop is not None and stop.is_set():
                raise PauseStopped(f"PAUSE {alias} given up after {time.monotonic() - start:.2f} s: "
                                   f"stopped by {stop_reason(stop)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PauseTimeout(f"PAUSE {alias} did not complete within {timeout:g} s "
                                   "(a transaction is still running through PgBouncer)")
            select.select([pgconn.socket], [], [], min(remaining, 0.01 if stop is not None else 0.05))
        error = None
        while (res := pgconn.get_result()) is not None:
            if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                error = (res.error_message or b"").decode(errors="replace").strip()
        if error:
            raise PgBouncerError(f"PAUSE {alias} failed: {error}")
        return time.monotonic() - start

    def resume(self, alias: str) -> None:
        self.command(f"RESUME {_check_name(alias)}")

    def resume_if_paused(self, alias: str) -> bool:
        """RESUME when PgBouncer reports the database paused (abort paths use this). True if resumed."""
        try:
            self.resume(alias)
            return True
        except psycopg.Error as exc:
            if "not paused" in str(exc):
                return False
            raise

    def reload(self) -> None:
        self.command("RELOAD")

    def reconnect(self, alias: str) -> None:
        """Close server connections to ``alias`` as they are released (gradual move of a pool)."""
        self.command(f"RECONNECT {_check_name(alias)}")

    def wait_close(self, alias: str) -> None:
        self.command(f"WAIT_CLOSE {_check_name(alias)}")

    def discard(self) -> None:
        """Drop the connection without ceremony (used after a PAUSE that timed out)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    close = discard

    def __enter__(self) -> "PgBouncerAdmin":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def pause_or_resume(admin: PgBouncerAdmin, backup: PgBouncerAdmin, alias: str, timeout: float,
                    stop: Event | None = None) -> float:
    """PAUSE with a timeout; on timeout (or a stop) RESUME from ``backup``, discard ``admin`` and re-raise."""
    try:
        return admin.pause(alias, timeout, stop)
    except PauseNotDone:
        backup.resume_if_paused(alias)
        admin.discard()
        raise


# --- ini rewrite -----------------------------------------------------------

_SECTION_RE = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_ENTRY_RE = re.compile(r"^(\s*)(\"[^\"]+\"|[^=\s;#]+)(\s*=\s*)(.*?)(\s*)$")
_PARAM_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.|'')*'|[^\s']+)")


@dataclass
class IniChange:
    path: str
    alias: str
    old_value: str
    new_value: str


def parse_connstr(value: str) -> list[tuple[str, str]]:
    """PgBouncer ``[databases]`` value -> ordered ``(key, raw_value)`` pairs (quotes preserved)."""
    pairs = _PARAM_RE.findall(value)
    rebuilt = " ".join(f"{k}={v}" for k, v in pairs)
    if re.sub(r"\s+", "", rebuilt) != re.sub(r"\s+", "", re.sub(r"\s*=\s*", "=", value)):
        raise PgBouncerError(f"cannot parse PgBouncer database definition {value!r}")
    return pairs


def _find_entry(lines: list[str], alias: str) -> int | None:
    section = None
    for index, line in enumerate(lines):
        header = _SECTION_RE.match(line)
        if header:
            section = header.group(1).strip().lower()
            continue
        if section != "databases" or not line.strip() or line.lstrip().startswith((";", "#")):
            continue
        match = _ENTRY_RE.match(line.rstrip("\n"))
        if match and match.group(2).strip('"') == alias:
            return index
    return None


def _entry_fields(line: str) -> tuple[str, ...]:
    """(indent, key, ``=``, value, trailing blanks) of a line :func:`_find_entry` found (the line may hold a
    password: never shown)."""
    match = _ENTRY_RE.match(line.rstrip("\n"))
    if match is None:  # _find_entry returns only lines that match
        raise RuntimeError("a line _find_entry returned is not a [databases] entry")
    return match.groups()


@contextmanager
def ini_permissions(path: Path):
    """Turn a ``PermissionError`` on the ini or its directory into one clear line (nothing half-written:
    the new ini is a temporary file until its rename, and the temporary file is removed on failure)."""
    try:
        yield
    except PermissionError as exc:
        where = "" if exc.filename in (None, str(path)) else f" (on {exc.filename})"
        raise IniPermissionError(
            f"{path}: permission denied{where} for uid {os.geteuid()}: replacing PgBouncer's ini needs read "
            f"permission on it and write permission on its directory {path.parent} (temporary file + atomic "
            "rename); run as root or as PgBouncer's service user. The ini was not changed") from None


def read_database_entry(ini_path: str | Path, alias: str) -> dict[str, str]:
    """The alias's definition as a dict (``host``, ``port``, ``dbname`` ...)."""
    with ini_permissions(Path(ini_path)):
        lines = Path(ini_path).read_text().splitlines(keepends=True)
    index = _find_entry(lines, alias)
    if index is None:
        raise PgBouncerError(f"{ini_path}: no [databases] entry {alias!r} (entries in %include files are not supported)")
    value = _entry_fields(lines[index])[3]
    return {k: v.strip("'") for k, v in parse_connstr(value)}


@dataclass
class StagedIniChange:
    """A rewritten ini already written and fsynced next to the original, waiting for its rename.

    Staging happens before the switchover window so that inside it only the rename (and RELOAD)
    remain; :meth:`commit` refuses if the ini changed since it was staged.
    """

    path: Path
    tmp: Path
    alias: str
    old_value: str
    new_value: str
    original_stat: tuple[int, int, int]
    committed: bool = False

    def commit(self) -> IniChange:
        st = self.path.stat()
        if (st.st_ino, st.st_mtime_ns, st.st_size) != self.original_stat:
            self.discard()
            raise PgBouncerError(f"{self.path} changed after the new version was staged; not overwriting it")
        try:
            with ini_permissions(self.path):
                os.replace(self.tmp, self.path)
        except IniPermissionError:
            self.discard()
            raise
        self.committed = True
        return IniChange(path=str(self.path), alias=self.alias, old_value=self.old_value, new_value=self.new_value)

    def sync_dir(self) -> None:
        """Make the rename durable (may run after the window: PgBouncer already read the new file)."""
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        if not self.committed:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def stage_database_host(ini_path: str | Path, alias: str, *, host: str, port: int,
                        dbname: str | None = None) -> StagedIniChange:
    """Prepare (write + fsync a temp copy of) the ini with ``alias`` pointing at ``host:port``."""
    if not re.match(r"^[A-Za-z0-9_.:\-\[\]]+$", host):
        raise ValueError(f"invalid host {host!r}")
    path = Path(ini_path)
    with ini_permissions(path):
        st = path.stat()
        lines = path.read_text().splitlines(keepends=True)
    index = _find_entry(lines, alias)
    if index is None:
        raise PgBouncerError(f"{path}: no [databases] entry {alias!r} (entries in %include files are not supported)")
    line = lines[index]
    newline = "\n" if line.endswith("\n") else ""
    indent, key, equals, value, _trail = _entry_fields(line)
    wanted = {"host": host, "port": str(int(port))}
    if dbname is not None:
        wanted["dbname"] = dbname
    out, seen = [], set()
    for k, v in parse_connstr(value):
        if k in wanted:
            out.append((k, wanted[k]))
            seen.add(k)
        else:
            out.append((k, v))
    out.extend((k, v) for k, v in wanted.items() if k not in seen)
    new_value = " ".join(f"{k}={v}" for k, v in out)
    lines[index] = f"{indent}{key}{equals}{new_value}{newline}"
    with ini_permissions(path):
        tmp = _write_temp(path, "".join(lines), st)
    return StagedIniChange(path=path, tmp=tmp, alias=alias, old_value=value, new_value=new_value,
                           original_stat=(st.st_ino, st.st_mtime_ns, st.st_size))


def rewrite_database_host(ini_path: str | Path, alias: str, *, host: str, port: int,
                          dbname: str | None = None) -> IniChange:
    """Point ``alias`` at ``host:port`` with an atomic rename; other keys and lines are kept verbatim."""
    staged = stage_database_host(ini_path, alias, host=host, port=port, dbname=dbname)
    change = staged.commit()
    staged.sync_dir()
    return change


def _write_temp(path: Path, text: str, stat: os.stat_result) -> Path:
    """Temp file next to ``path`` with its mode and owner, content fsynced."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, stat.st_uid, stat.st_gid)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return Path(tmp)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def repoint_database(admin: PgBouncerAdmin, ini_path: str | Path, alias: str, *, host: str, port: int,
                     dbname: str | None = None, staged: StagedIniChange | None = None) -> IniChange:
    """Rewrite the ini for ``alias`` (or commit ``staged``) and RELOAD — only while ``alias`` is PAUSEd.

    Verifies with ``SHOW DATABASES`` that PgBouncer now routes ``alias`` to ``host:port``.
    """
    if not admin.is_paused(alias):
        if staged is not None:
            staged.discard()
        raise NotPaused(f"refusing to RELOAD {alias!r} onto {host}:{port} while it is not PAUSEd: clients would "
                        "hit a failed login and be locked out for server_login_retry")
    if staged is not None:
        change = staged.commit()
    else:
        change = rewrite_database_host(ini_path, alias, host=host, port=port, dbname=dbname)
    admin.reload()
    row = admin.database(alias)
    if row is None or str(row.get("host")) != host or int(row.get("port") or 0) != int(port):
        raise PgBouncerError(f"after RELOAD PgBouncer reports {alias!r} at "
                             f"{row and row.get('host')}:{row and row.get('port')}, expected {host}:{port} "
                             f"(is {ini_path} the file this PgBouncer was started with?)")
    return change
