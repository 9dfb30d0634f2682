"""Backfill progress: rows/s and ETA, as a rich progress bar on a terminal, as sparse lines otherwise.

The sparse lines are what ``kubectl logs`` shows of a Job-runner backfill: one line each, never
wrapped (a log line is read, grepped and followed as one).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskID, TaskProgressColumn, \
    TextColumn, TimeRemainingColumn
from rich.text import Text


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class BackfillProgress:
    """Reports keys scanned out of ``total``; ``rows_changed`` is shown alongside."""

    def __init__(self, label: str, total: int, console: Console | None = None, interval_s: float = 10.0):
        self.label = label
        self.total = max(0, total)
        self.console = console or Console(stderr=True)
        self.interval_s = interval_s
        self.tty = self.console.is_terminal
        self.start = time.monotonic()
        self.done = 0
        self.changed = 0
        self._last_line = 0.0
        self.status = ""  # e.g. the latency throttle's share of its budget in use
        self.outcome = ""  # how the run ended when it ended early without an error (e.g. "stopped by SIGTERM")
        self._bar: tuple[Progress, TaskID] | None = None  # on a terminal: the bar and its one task

    def __enter__(self) -> "BackfillProgress":
        self.start = time.monotonic()
        if self.tty:
            progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                RateColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                console=self.console, transient=False)
            progress.start()
            self._bar = progress, progress.add_task(self.label, total=self.total or None, status=self.status)
        else:
            self._line(f"{self.label}: starting, {self.total:,} keys to scan")
            self._last_line = time.monotonic()
        return self

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        rate = self.rate()
        if rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done:,}/{self.total:,} keys ({pct:.1f}%), {self.changed:,} rows changed, "
                f"{self.rate():,.0f} rows/s, ETA {_fmt_eta(self.eta())}" + (f"; {self.status}" if self.status else ""))

    def update(self, keys: int, changed: int) -> None:
        self.done += keys
        self.changed += changed
        if self._bar is not None:
            progress, task = self._bar
            progress.update(task, advance=keys)
        elif time.monotonic() - self._last_line >= self.interval_s:
            self._line(self.line())
            self._last_line = time.monotonic()

    def set_status(self, text: str) -> None:
        """A short status shown beside the bar (and appended to each sparse line)."""
        self.status = text
        if self._bar is not None:
            progress, task = self._bar
            progress.update(task, status=text)

    def note(self, message: str) -> None:
        self._line(f"{self.label}: {message}")

    def _line(self, text: str) -> None:
        console = self._bar[0].console if self._bar is not None else self.console
        console.print(text, soft_wrap=True, markup=False, highlight=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is not None:
            self._bar[0].stop()
        elapsed = time.monotonic() - self.start
        status = (self.outcome or "done") if exc_type is None else f"stopped ({exc_type.__name__})"
        self._line(f"{self.label}: {status}: {self.done:,} keys, {self.changed:,} rows changed in "
                   f"{elapsed:.1f}s ({self.rate():,.0f} rows/s)" + (f"; {self.status}" if self.status else ""))
