"""Stopping a running operation from outside: a signal asks, the operation decides where it stops.

Neither long operation may simply die where a signal lands. A switchover killed inside its window
leaves PgBouncer PAUSED (every client waits for ever) and perhaps the old primary fenced. A backfill
is safe to kill (a batch and its checkpoint commit together) but would then not say where it
stopped. So the CLIs turn the first SIGINT, SIGTERM or SIGHUP into a :class:`StopRequest`, which the
operation checks at its safe points (the backfill between batches, the switchover between its steps
up to ``pg_promote``), and then exit with :func:`bazbii_db.cli.exit_code_stopped` after one line
saying that they stopped and how to resume.

A second signal either ends the process at once (``again="exit"``: the backfill, where that is safe:
the batch in flight commits or rolls back together with its checkpoint) or is only reported (``again="ignore"``: the
switchover, which must reach a safe end; its waits are bounded, so it does soon).

As PID 1 of a container (the migration Job's), a process gets only the signals it has a handler for:
without these handlers, the SIGTERM of ``kubectl delete pod`` would be ignored until the SIGKILL at
the end of the grace period.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest(threading.Event):
    """An event (``set``/``is_set``/``wait``) that also says who asked: ``reason`` and ``signum``."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""
        self.signum: int | None = None

    def request(self, reason: str, signum: int | None = None) -> None:
        """Ask the operation to stop at its next safe point (the first request's reason is kept)."""
        if not self.is_set():
            self.reason, self.signum = reason, signum
        self.set()


def stop_reason(stop: threading.Event | None) -> str:
    """Why ``stop`` was set: the signal's name for a :class:`StopRequest`, "a stop request" for a bare event."""
    return getattr(stop, "reason", "") or "a stop request"


def _say(message: str) -> None:
    # Best effort: after SIGHUP the terminal may be gone, and an exception raised here would surface
    # wherever the main thread happened to be.
    try:
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()
    except Exception:
        pass


@contextmanager
def stop_on_signals(stop: StopRequest, *, first: str, again: str) -> Iterator[StopRequest]:
    """While inside, the first SIGINT/SIGTERM/SIGHUP calls ``stop.request`` and prints ``<SIGNAL>: <first>``.

    ``again`` is ``"exit"`` (a further signal ends the process at once, as if no handler were set) or
    ``"ignore"`` (a further signal is only reported). The previous handlers are restored on exit.
    Must be entered from the main thread (Python runs signal handlers there only).
    """
    if again not in ("exit", "ignore"):
        raise ValueError(f"again must be 'exit' or 'ignore', not {again!r}")

    def handle(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            stop.request(name, signum)
            _say(f"{name}: {first}")
        elif again == "exit":
            _say(f"{name} again: stopping at once")
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            # Still here: we are PID 1 of a container (a Kubernetes Job's), which the kernel protects from
            # its own default-action signals. Exit as the signal would have: the open transaction rolls back.
            os._exit(128 + signum)
        else:
            _say(f"{name} again: already stopping ({stop.reason}); it ends at its next safe point")

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
