"""A gate verdict and the numbers that produced it.

Each signal carries its value, the bound it was held to, the window, how many
requests the window held, and pass / fail / inconclusive. Inconclusive means
"cannot tell" (metrics unreachable, too few samples, the previous step's
apply time unknown) and denies the step, like a failure: gates fail closed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from bazbii_plan.gates import format_duration

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def _number(value: Optional[float], kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "errorRatio":
        return f"{value * 100:.2f} %"
    if kind == "latencyQuantile":
        return f"{value * 1000:.0f} ms"
    if kind in ("soak",):
        return format_duration(value)
    if float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.4g}"


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
        head = f"{self.status.upper():<12} {self.name} [{self.scope}]: {_number(self.value, self.kind)} (threshold {self.threshold()})"
        if self.kind != "soak":
            head += f" over {format_duration(self.window_seconds)}"
            if self.samples is not None:
                head += f", {self.samples:.0f} requests"
        return head + (f"; {self.reason}" if self.reason else "")


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
        text = f"live gate of {self.track} step {self.step!r} {word}"
        if not self.passed and self.override:
            text += f"; let through by bazbii:phaseOverride: {self.override}"
        return text + (f" ({self.note})" if self.note else "")

    def lines(self) -> list[str]:
        return [self.headline()] + [f"  {s.line()}" for s in self.signals]

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
