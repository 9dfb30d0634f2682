"""Every process the rehearsal starts, registered so that all of them are stopped.

Processes are started in their own session (so a Ctrl-C at the terminal reaches only the
rehearsal, which then stops them in reverse start order) and stopped with SIGTERM, then SIGKILL
after a bounded wait. ``ProcessRegistry.stop_all`` runs from a ``finally`` and from the SIGTERM
handler installed by :func:`stop_on_signals`; it is idempotent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    log_path: Path | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class ProcessRegistry:
    run_dir: Path
    processes: list[Managed] = field(default_factory=list)
    cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: dict | None = None, cwd: Path | None = None,
              stop_signal: int = signal.SIGTERM, stop_timeout: float = 15.0) -> Managed:
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd, start_new_session=True)
        managed = Managed(name, popen, stop_signal, stop_timeout, log_path)
        self.processes.append(managed)
        return managed

    def add_cleanup(self, name: str, fn: Callable[[], None]) -> None:
        """Something that is not a child process (a pg_ctl-managed cluster) to stop at the end."""
        self.cleanups.append((name, fn))

    def stop(self, managed: Managed, *, timeout: float | None = None) -> int | None:
        if managed.alive():
            try:
                managed.popen.send_signal(managed.stop_signal)
            except ProcessLookupError:
                pass
            try:
                managed.popen.wait(timeout=managed.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                os.killpg(managed.popen.pid, signal.SIGKILL)
                managed.popen.wait(timeout=10)
        if managed in self.processes:
            self.processes.remove(managed)
        return managed.popen.returncode

    def stop_all(self) -> list[str]:
        """Stop everything, newest first; returns the names of what was still running."""
        stopped = []
        for managed in reversed(list(self.processes)):
            if managed.alive():
                stopped.append(managed.name)
            try:
                self.stop(managed, timeout=min(managed.stop_timeout, 10.0))
            except Exception:  # keep stopping the others
                try:
                    os.killpg(managed.popen.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for name, fn in reversed(self.cleanups):
            try:
                fn()
                stopped.append(name)
            except Exception:
                pass
        self.cleanups.clear()
        return stopped

    def log_tail(self, managed: Managed, lines: int = 20) -> str:
        if managed.log_path is None or not managed.log_path.exists():
            return ""
        return "\n".join(managed.log_path.read_text(errors="replace").splitlines()[-lines:])


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived: unwind through ``finally`` blocks so every process is stopped.

    A BaseException (like KeyboardInterrupt), so that no ``except Exception`` swallows it.
    """


def stop_on_signals() -> None:
    """Turn SIGTERM/SIGINT/SIGHUP into an exception in the main thread (then ``finally`` stops all)."""

    def handler(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception:
            pass
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not ready after {timeout:g} s")
        time.sleep(interval)


def child_pids(pid: int) -> set[int]:
    """The live children of ``pid`` (from /proc: e.g. an nginx master's workers)."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(entry))
    return children
