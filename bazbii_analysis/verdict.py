"""A gate verdict and the numbers that produced it.

Each signal carries its value, the bound it was held to, the window, how many
requests the window held, and pass / fail / inconclusive. Inconclusive means
"cannot tell" (metrics unreachable, too few samples, the previous step's
apply time unknown) and denies the step, like a failure: gates fail closed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

from bazbii_plan.gates import format_duration, format_value as _number

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
UNWINDOWED = ("soak", "data")  # results that are not computed over a metrics window


@dataclass
class SignalResult:
    name: str
    kind: str
    scope: str
    status: str
    value: Optional[float] = None
    max: Optional[float] = None
    min: Optional[float] = None
    window_seconds: float = 0.0
    samples: Optional[float] = None
    baseline: Optional[float] = None
    reason: str = ""
    query: str = ""

    def shown_value(self) -> str:
        return _number(self.value, self.kind)

    def threshold(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f">= {_number(self.min, self.kind)}")
        if self.max is not None:
            parts.append(f"<= {_number(self.max, self.kind)}")
        text = " and ".join(parts) or "none"
        if self.baseline is not None:
            text += f" (baseline {_number(self.baseline, self.kind)})"
        return text

    def line(self) -> str:
        """``FAIL error-ratio [pool server2]: 3.00 % (threshold <= 1.00 %) over 10m, 4210 requests``."""
        head = f"{self.status.upper():<12} {self.name} [{self.scope}]: {self.shown_value()} (threshold {self.threshold()})"
        if self.kind not in UNWINDOWED:
            head += f" over {format_duration(self.window_seconds)}"
            if self.samples is not None:
                head += f", {self.samples:.0f} requests"
        return head + (f"; {self.reason}" if self.reason else "")


HEADLINE_PREFIX = "live gate of "
SIGNAL_INDENT = "  "
STATUS_WORDS = {status.upper() for status in (PASS, FAIL, INCONCLUSIVE)}  # how a signal line begins


def printed_verdicts(printed: Iterable[str]) -> list[str]:
    """The verdicts (:meth:`Verdict.lines`) among lines a process printed, each line once: a headline and
    the signal lines right after it (the engine may check a resource twice in one update)."""
    out: list[str] = []
    inside = False
    for line in printed:
        text = line.strip()
        if text.startswith(HEADLINE_PREFIX):
            inside = True
        elif not (inside and line.startswith(SIGNAL_INDENT) and text.split(" ", 1)[0] in STATUS_WORDS):
            inside = False
            continue
        out.append(line.rstrip())
    return list(dict.fromkeys(out))


@dataclass
class Verdict:
    """Whether a step's gate passed on live metrics, with every number behind it."""

    track: str
    step: str
    status: str
    evaluated_at: str
    endpoint: Optional[str]
    signals: list[SignalResult] = field(default_factory=list)
    note: str = ""
    override: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def allowed(self) -> bool:
        """Passed, or let through by ``bazbii:phaseOverride`` (which says why)."""
        return self.passed or bool(self.override)

    def failing(self) -> list[SignalResult]:
        return [s for s in self.signals if s.status != PASS]

    def headline(self) -> str:
        word = {PASS: "PASSED", FAIL: "FAILED", INCONCLUSIVE: "INCONCLUSIVE (fails closed)"}[self.status]
        text = f"{HEADLINE_PREFIX}{self.track} step {self.step!r} {word}"
        if not self.passed and self.override:
            text += f"; let through by bazbii:phaseOverride: {self.override}"
        return text + (f" ({self.note})" if self.note else "")

    def lines(self) -> list[str]:
        return [self.headline()] + [f"{SIGNAL_INDENT}{s.line()}" for s in self.signals]

    def problems(self) -> list[str]:
        """One line per signal that denies the step (empty when allowed)."""
        if self.allowed:
            return []
        if not self.signals:
            return [self.headline()]
        return [f"live gate of {self.track} step {self.step!r}: {s.line()}" for s in self.failing()]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["allowed"] = self.allowed
        for signal, result in zip(data["signals"], self.signals):
            signal["threshold"] = result.threshold()
        return data


def overall(results: list[SignalResult]) -> str:
    statuses = {r.status for r in results}
    if FAIL in statuses:
        return FAIL
    if INCONCLUSIVE in statuses:
        return INCONCLUSIVE
    return PASS
