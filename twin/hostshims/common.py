"""What the twin's host programs share: daemons with pid files, the console's spec, the edge's address."""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

STATE = Path("/run/bazbii-twin")
CONSOLE = Path("/etc/bazbii-twin")


def fail(program: str, message: str, code: int = 1) -> "NoReturn":  # noqa: F821 (typing only)
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(code)


def console_spec() -> dict:
    """The VPS as its console declares it (vCPU, memory, disk, OS): what nproc, lsblk and meminfo report."""
    return json.loads((CONSOLE / "console.json").read_text())


def edge() -> dict:
    """Where the services outside the servers are (the Cloudflare API, ...), as the lab wrote them."""
    path = CONSOLE / "edge.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def read_pid(pidfile: Path) -> Optional[int]:
    try:
        text = pidfile.read_text().split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def running(pidfile: Path) -> bool:
    pid = read_pid(pidfile)
    return pid is not None and pid_alive(pid)


def wait_running(pidfile: Path, timeout: float = 15.0) -> bool:
    """Wait until ``pidfile`` names a live process, as systemd does for a forking service with a PIDFile:
    a daemon that forks (``pgbouncer -d``) writes it from the child, after its parent has returned."""
    deadline = time.monotonic() + timeout
    while not running(pidfile):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_daemon(argv: Sequence[str], pidfile: Path, log: Path, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[str] = None, user: Optional[str] = None) -> int:
    """Start ``argv`` detached from the caller's session (it outlives the SSH session that started it),
    as ``user`` (with that user's own groups) when given, as systemd does for a unit's ``User=``."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out, open(os.devnull, "rb") as nothing:
        as_user = {} if user is None else {"user": user, "group": pwd.getpwnam(user).pw_gid,
                                           "extra_groups": [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]}
        process = subprocess.Popen(list(argv), stdin=nothing, stdout=out, stderr=out, env=dict(env or os.environ),
                                   cwd=cwd, start_new_session=True, **as_user)
    pidfile.write_text(f"{process.pid}\n")
    return process.pid


def stop_pid(pid: Optional[int], sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    if pid is None or not pid_alive(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
