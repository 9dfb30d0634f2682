"""Child processes of the twin's Kubernetes: free loopback ports, start with a log file, stop without orphans.

Every component runs in its own session (process group), so a stop reaches everything it forked:
SIGTERM to the group, a bounded wait, then SIGKILL. A child started from the main thread also gets
``PR_SET_PDEATHSIG`` (SIGKILL): if the Python process that started it dies without stopping it
(SIGKILL, a crash), the kernel kills it. Not from other threads: the kernel sends that signal when
the *thread* that forked exits, which would kill a component started from a short-lived thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn``: the kernel SIGKILLs this child when the thread that started it exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def preexec_for_this_thread() -> Optional[Callable[[], None]]:
    """:func:`die_with_parent` when called from the main thread (see the module docstring), else None."""
    return die_with_parent if threading.current_thread() is threading.main_thread() else None


class PortReservation:
    """Free TCP ports on one address, held bound until released.

    A port found free and closed again may be handed to someone else before our child binds it. A
    socket that stays bound (not listening) keeps the kernel from giving the port to anyone asking
    for an ephemeral one, and with SO_REUSEADDR on both sides (Go's and asyncio's listeners set it)
    the child can still bind and listen on it. :meth:`release` once the children listen.
    """

    def __init__(self, address: str):
        self.address = address
        self._sockets: list[socket.socket] = []

    def take(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, 0))
        self._sockets.append(sock)
        return sock.getsockname()[1]

    def release(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


@dataclass
class Component:
    """One running child process and the file its output goes to."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start(name: str, argv: Sequence[str], log_path: Path, *, env: Optional[dict] = None,
          cwd: Optional[Path] = None) -> Component:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=True, preexec_fn=preexec_for_this_thread())
    return Component(name, popen, log_path)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(component: Component, timeout: float = 10.0) -> Optional[int]:
    """SIGTERM the component's process group, SIGKILL it after ``timeout``; returns the exit code."""
    if component.alive():
        signal_group(component.popen.pid, signal.SIGTERM)
        try:
            component.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while something it forked still runs in its group.
    signal_group(component.popen.pid, signal.SIGKILL)
    try:
        component.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    return component.popen.returncode


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *, interval: float = 0.1,
               check: Optional[Callable[[], None]] = None) -> float:
    """Poll ``condition`` until true; ``check`` may raise (a dead component). Returns the seconds waited."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if check is not None:
            check()
        if condition():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)
