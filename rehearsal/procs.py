"""Ctrl-C and SIGTERM unwind ``./rehearse`` through its ``finally`` blocks, which stop every process it
started (the twin, the load, the edge)."""

from __future__ import annotations

import signal


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
