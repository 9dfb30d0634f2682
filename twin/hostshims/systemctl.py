"""``systemctl`` on a twin server, which has no systemd: the units the program's scripts use.

=========================  ===============================================================================
``postgresql@V-C``         ``pg_ctlcluster V C start|stop|restart|reload`` (Debian's unit does the same);
                           active while ``pg_lsclusters`` says online
``pgbouncer``              ``/usr/sbin/pgbouncer -d /etc/pgbouncer/pgbouncer.ini`` as ``postgres`` (Debian's
                           unit's user); reload is SIGHUP, stop SIGINT (PgBouncer's safe shutdown)
``docker``                 nothing to run: the twin's ``docker`` needs no daemon
a unit file under          its ``ExecStart`` (``$VAR`` split into words, ``${VAR}`` one word, as systemd
``/etc/systemd/system``    does) with its ``EnvironmentFile``, as its ``User``, detached, pid under /run;
or a package's, under      ``/etc`` first, as systemd looks (e.g. Debian's prometheus-postgres-exporter)
``/lib/systemd/system``
=========================  ===============================================================================

``enable``/``disable`` keep systemd's ``multi-user.target.wants`` link (nothing boots here), ``--now``
starts or stops too, ``daemon-reload`` rereads nothing (unit files are read at each start). Exit codes
are systemctl's: ``is-active`` 3 when inactive, 5 for a unit that does not exist.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from twin.hostshims.common import STATE, fail, read_pid, running, start_daemon, stop_pid, wait_running

PROGRAM = "systemctl"
UNIT_DIR = Path("/etc/systemd/system")
PACKAGE_UNIT_DIR = Path("/lib/systemd/system")  # the units packages install; /etc overrides them
WANTS = UNIT_DIR / "multi-user.target.wants"
PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"
PG_UNIT = re.compile(r"^postgresql@(\d+)-([\w-]+)$")
EXIT_INACTIVE, EXIT_NO_UNIT = 3, 5


def unit_name(text: str) -> str:
    return text[: -len(".service")] if text.endswith(".service") else text


# ------------------------------------------------------------------------------------- PostgreSQL clusters
def pg_active(version: str, cluster: str) -> bool:
    done = subprocess.run(["pg_lsclusters", "-h", version, cluster], capture_output=True, text=True)
    return done.returncode == 0 and " online" in f" {done.stdout}"


def pg_action(version: str, cluster: str, action: str) -> int:
    if action == "start" and pg_active(version, cluster):
        return 0
    if action == "stop" and not pg_active(version, cluster):
        return 0
    if action == "reload" and not pg_active(version, cluster):
        fail(PROGRAM, f"postgresql@{version}-{cluster}.service is not active, cannot reload.", 1)
    return subprocess.run(["pg_ctlcluster", version, cluster, action]).returncode


# ------------------------------------------------------------------------------------- PgBouncer
def pgbouncer_pidfile() -> Path:
    try:
        text = Path(PGBOUNCER_INI).read_text()
    except OSError:  # not readable by this user, or not written yet: the package's default
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "pidfile" and value.strip():
            return Path(value.strip())
    return Path("/run/postgresql/pgbouncer.pid")


def pgbouncer_action(action: str) -> int:
    pidfile = pgbouncer_pidfile()
    if action == "start":
        if running(pidfile):
            return 0
        code = subprocess.run(["runuser", "-u", "postgres", "--", "/usr/sbin/pgbouncer", "-d", PGBOUNCER_INI]).returncode
        if code == 0 and not wait_running(pidfile):
            fail(PROGRAM, f"pgbouncer.service: no running process in {pidfile} after the daemon started.", 1)
        return code
    if action == "stop":
        stop_pid(read_pid(pidfile), signal.SIGINT)
        return 0
    if action == "reload":
        pid = read_pid(pidfile)
        if pid is None or not running(pidfile):
            fail(PROGRAM, "pgbouncer.service is not active, cannot reload.", 1)
        os.kill(pid, signal.SIGHUP)
        return 0
    if action == "restart":
        pgbouncer_action("stop")
        return pgbouncer_action("start")
    raise AssertionError(action)


# ------------------------------------------------------------------------------------- unit files
def unit_file(unit: str) -> Path:
    local = UNIT_DIR / f"{unit}.service"
    packaged = PACKAGE_UNIT_DIR / f"{unit}.service"
    return local if local.is_file() or not packaged.is_file() else packaged


def service_section(path: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def environment_file(path: str) -> dict[str, str]:
    optional = path.startswith("-")
    path = path.lstrip("-")
    try:
        text = Path(path).read_text()
    except OSError:
        if optional:
            return {}
        fail(PROGRAM, f"failed to load environment file {path}", 1)
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[key.strip()] = value
    return values


VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def command_line(exec_start: str, env: dict[str, str]) -> list[str]:
    """``ExecStart`` as systemd expands it: a word that is exactly ``$VAR`` becomes the value's words (none
    when empty), ``${VAR}`` inside a word is replaced by the value as it is."""
    argv: list[str] = []
    for word in shlex.split(exec_start):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
        else:
            argv.append(VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return argv


def file_unit_action(unit: str, action: str) -> int:
    pidfile = STATE / "units" / f"{unit}.pid"
    if action == "stop":
        stop_pid(read_pid(pidfile))
        pidfile.unlink(missing_ok=True)
        return 0
    if action == "restart":
        file_unit_action(unit, "stop")
        return file_unit_action(unit, "start")
    if action == "reload":
        pid = read_pid(pidfile)
        if pid is None or not running(pidfile):
            fail(PROGRAM, f"{unit}.service is not active, cannot reload.", 1)
        os.kill(pid, signal.SIGHUP)
        return 0
    if running(pidfile):
        return 0
    settings = service_section(unit_file(unit))
    if "ExecStart" not in settings:
        fail(PROGRAM, f"{unit}.service has no ExecStart", 1)
    env = dict(os.environ)
    if "EnvironmentFile" in settings:
        env.update(environment_file(settings["EnvironmentFile"]))
    user = settings.get("User")
    if user:
        env.update(HOME=pwd.getpwnam(user).pw_dir, USER=user, LOGNAME=user)
    start_daemon(command_line(settings["ExecStart"], env), pidfile, STATE / "units" / f"{unit}.log", env,
                 user=user)
    return 0


# ------------------------------------------------------------------------------------- dispatch
def exists(unit: str) -> bool:
    return bool(PG_UNIT.match(unit)) or unit in ("pgbouncer", "docker") or unit_file(unit).is_file()


def act(unit: str, action: str) -> int:
    match = PG_UNIT.match(unit)
    if match:
        return pg_action(match.group(1), match.group(2), action)
    if unit == "pgbouncer":
        return pgbouncer_action(action)
    if unit == "docker":
        return 0
    return file_unit_action(unit, action)


def active(unit: str) -> bool:
    match = PG_UNIT.match(unit)
    if match:
        return pg_active(match.group(1), match.group(2))
    if unit == "pgbouncer":
        return running(pgbouncer_pidfile())
    if unit == "docker":
        return True
    return running(STATE / "units" / f"{unit}.pid")


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("-")}
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        fail(PROGRAM, "this twin systemctl needs a verb (start, stop, restart, reload, enable, disable, "
                      "is-active, daemon-reload)", 1)
    verb, units = words[0], [unit_name(u) for u in words[1:]]
    quiet = bool(flags & {"--quiet", "-q"})
    if verb == "daemon-reload":
        return 0
    if verb in ("--version", "version"):
        print("systemd 252 (bazbii twin)")
        return 0
    if not units:
        fail(PROGRAM, f"{verb} needs a unit", 1)
    status = 0
    for unit in units:
        if verb == "is-active":
            on = exists(unit) and active(unit)
            if not quiet:
                print("active" if on else "inactive")
            status = status or (0 if on else EXIT_INACTIVE)
            continue
        if not exists(unit):
            print(f"Failed to {verb} {unit}.service: Unit {unit}.service not found.", file=sys.stderr)
            return EXIT_NO_UNIT
        if verb in ("start", "stop", "restart", "reload"):
            status = act(unit, verb) or status
        elif verb in ("enable", "disable"):
            link = WANTS / f"{unit}.service"
            if verb == "enable":
                WANTS.mkdir(parents=True, exist_ok=True)
                link.touch()
            else:
                link.unlink(missing_ok=True)
            if "--now" in flags:
                status = act(unit, "start" if verb == "enable" else "stop") or status
        elif verb == "status":
            print(f"{unit}.service - {'active (running)' if active(unit) else 'inactive (dead)'}")
            status = status or (0 if active(unit) else EXIT_INACTIVE)
        else:
            fail(PROGRAM, f"this twin systemctl does not do {verb!r}", 1)
    return status


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:  # e.g. a unit's file not readable by this user: systemctl's "access denied"
        fail(PROGRAM, f"Access denied or unreadable: {exc}", 4)
