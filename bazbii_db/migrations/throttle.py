"""Latency-aware backfill throttle: one controller, one control variable (docs/backfill-throttle.md).

It paces a backfill so that the application's p99 stays within a budget (the lag and lock-wait
throttles of ``backfill.py`` stop it outright). The **duty** is the share of the time batches run:

* each batch is sized to run about ``chunk_ms`` (pt-online-schema-change's chunk time): a running
  average of the rows a millisecond the batches ran at, times ``chunk_ms``;
* a batch that ran ``t`` ms is followed by a pause of ``t x (1 - duty) / duty`` ms (gh-ost's nice ratio);
* the duty is halved on a significant breach of the budget, raised by ``increase`` after a clean
  ``window_s``, and held after a window that was neither.

The caller gives the latency sources (``LatencySource``: the pooler probe, ``probe.PoolerProbe``, and
Prometheus, ``bazbii_analysis.latency.PrometheusLatency``) and the clock; this module reads no database
and no metrics itself, so its tests run on a scripted clock.

A source's budget is ``budget_ratio`` x its baseline (its p99 over ``baseline_s`` before the first
batch), but at least ``floor_ms`` over it; or ``budget_ms`` for every source. A *proxy* (the probe, which
times the database's part of a request) gets the application source's allowance in ms where there is one.

A **significant breach**: a source that counts its requests (``count_slow``: the probe) had more of
them slower than its budget since the window began than the 1 % a p99 allows, by ``Z`` Poisson errors
(judged after every batch: a stall is acted on at once); a source that gives a p99 only (Prometheus,
once per scrape) read over its budget. A **clean window**: ``window_s`` passed with every source within
its budget (the count at most 1 %, the latest p99 at most the budget).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Protocol

from bazbii_plan.facts import PROMETHEUS_SCRAPE_INTERVAL_S

ALLOWED_SLOW = 0.01  # a p99 within the budget: at most this share of requests slower than it
Z = 2.0  # a count is a significant breach this many Poisson errors over the allowed share
DECREASE = 0.5  # the duty's factor on a significant breach
MIN_DUTY = 0.005  # batches run at least this share of the time (a 5 ms batch about once a second)
SMOOTHING = 0.5  # the weight of the last batch in the rows-per-millisecond average
BREACH, CLEAN, HOLD = "breach", "clean", "hold"


class LatencyConfigError(ValueError):
    """A latency-throttle setting is invalid; the message names the key."""


class LatencyProbeFailed(RuntimeError):
    """A latency source cannot measure: the backfill cannot see the application's latency."""


@dataclass(frozen=True)
class Setting:
    batch_size: int
    pause_ms: float


@dataclass(frozen=True)
class LatencyBudget:
    budget_ratio: float = 1.5  # budget = ratio x baseline measured before the first batch ...
    floor_ms: float = 1.0  # ... but at least baseline + floor_ms
    budget_ms: float | None = None  # an absolute budget instead (every source)
    baseline_s: float = 10.0  # long enough for a p99 to see the rare slow request
    probe: bool = True  # measure through the pooler with probe_query
    probe_query: str = "SELECT 1"
    prometheus_query: str | None = None  # PromQL giving the app's p99 in seconds; read where an endpoint is given
    prometheus_interval_s: float = PROMETHEUS_SCRAPE_INTERVAL_S  # read it at most this often
    chunk_ms: float = 5.0  # each batch is sized to run about this long
    window_s: float = 2.0  # a clean window this long raises the duty
    start_duty: float = 0.05  # the share of the time batches run at first
    increase: float = 0.02  # added to the duty after a clean window

    def __post_init__(self) -> None:
        def need(key: str, ok: bool, what: str) -> None:
            if not ok:
                raise LatencyConfigError(f"latency.{key}: must be {what}, got {getattr(self, key)!r}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("probe_query", "prometheus_query"):
                need(f.name, (value is None and f.name == "prometheus_query")
                     or (isinstance(value, str) and value.strip() != ""), "a non-empty query")
            elif f.name == "probe":
                need(f.name, isinstance(value, bool), "true or false")
            elif not (f.name == "budget_ms" and value is None):
                need(f.name, isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                     "a number")
        need("budget_ratio", self.budget_ratio > 1.0, "above 1.0 (a budget at the baseline cannot be met)")
        need("floor_ms", self.floor_ms >= 0, "0 or more")
        need("budget_ms", self.budget_ms is None or self.budget_ms > 0, "a positive number of ms")
        for key in ("baseline_s", "prometheus_interval_s", "chunk_ms", "window_s"):
            need(key, getattr(self, key) > 0, "positive")
        need("start_duty", MIN_DUTY <= self.start_duty <= 1, f"in [{MIN_DUTY}, 1]")
        need("increase", 0 < self.increase <= 1, "in (0, 1]")

    def limit_ms(self, baseline_ms: float) -> float:
        """The budget of a source whose baseline p99 is ``baseline_ms``."""
        return self.budget_ms or max(self.budget_ratio * baseline_ms, baseline_ms + self.floor_ms)

    @classmethod
    def from_mapping(cls, data: object, where: str = "latency") -> "LatencyBudget":
        """From a TOML table (``latency = { budget_ratio = 1.5 }``) or ``latency = true``."""
        if data is True:
            return cls()
        if not isinstance(data, dict):
            raise LatencyConfigError(f"{where}: must be a table of settings or true, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LatencyConfigError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
        try:
            return cls(**data)
        except LatencyConfigError as exc:
            raise LatencyConfigError(str(exc).replace("latency.", f"{where}.", 1)) from None


class LatencySource(Protocol):
    name: str

    def start(self) -> None: ...

    def read(self, since: float) -> float | None:
        """The p99 in ms from ``since`` (a monotonic time) on, where the source can tell; None: no reading."""

    def close(self) -> None: ...

    # optional: ``count_slow(since, limit_ms) -> (slow, all)``, the requests finished from ``since`` on that
    # were slower than ``limit_ms``, and all of them; optional: ``proxy = True`` (see the module's doc)


@dataclass
class ControlStep:
    at_s: float  # since the first batch
    verdict: str  # BREACH, CLEAN or HOLD: what the window ended with
    duty: float  # the duty chosen
    setting: Setting  # the setting chosen
    usage: float  # worst source's reading / its budget (1.0: at the budget)
    readings_ms: dict[str, float]


@dataclass
class LatencyThrottle:
    budget: LatencyBudget
    sources: list[LatencySource]
    setting: Setting
    min_batch_size: int = 50
    max_batch_size: int = 50_000
    clock: Callable[[], float] = time.monotonic
    baseline_ms: dict[str, float] = field(default_factory=dict)
    budget_ms: dict[str, float] = field(default_factory=dict)
    readings_ms: dict[str, float] = field(default_factory=dict)
    usage: float | None = None  # at the last verdict
    max_usage: float = 0.0
    log: list[ControlStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.setting = Setting(self._clamp(self.setting.batch_size), max(0.0, self.setting.pause_ms))
        self.duty = self.budget.start_duty
        self._rows_per_ms: float | None = None
        self._started = self._window = self.clock()
        self._p99_over: dict[str, bool] = {}  # a p99-only source's latest reading was over its budget

    def _clamp(self, rows: float) -> int:
        return int(min(self.max_batch_size, max(self.min_batch_size, rows)))

    def measure_baseline(self, sleep: Callable[[float], object] = time.sleep) -> bool:
        """Each source's p99 over ``baseline_s`` before the first batch, and its budget from it. ``sleep``
        returning true (a stop request) ends it early with no budget: False."""
        started = self.clock()
        if sleep(self.budget.baseline_s):
            return False
        for source in self.sources:
            value = source.read(started)
            if value is None or not math.isfinite(value):
                error = getattr(source, "last_error", None)
                raise LatencyProbeFailed(f"latency source {source.name}: no reading during the {self.budget.baseline_s:g}s "
                                         "baseline" + (f" ({error})" if error else "") + "; cannot set a budget")
            self.baseline_ms[source.name], self.budget_ms[source.name] = value, self.budget.limit_ms(value)
        allowance = [self.budget_ms[s.name] - self.baseline_ms[s.name] for s in self.sources if not is_proxy(s)]
        for source in self.sources:
            if is_proxy(source) and allowance and not self.budget.budget_ms:
                self.budget_ms[source.name] = self.baseline_ms[source.name] + min(allowance)
            if self.budget_ms[source.name] <= 0:
                raise LatencyProbeFailed(f"latency source {source.name}: baseline 0 ms gives no budget to hold; "
                                         "set latency.floor_ms or latency.budget_ms")
        self._started = self._window = self.clock()
        return True

    def after_batch(self, took_ms: float) -> Setting:
        """The setting for the next batch, from the time the last one ran (its rows: the current size)."""
        now = self.clock()
        took = max(took_ms, 0.01)
        rate = self.setting.batch_size / took
        self._rows_per_ms = rate if self._rows_per_ms is None else (1 - SMOOTHING) * self._rows_per_ms + SMOOTHING * rate
        verdict = self._verdict(now)
        if verdict == BREACH:
            self.duty = max(MIN_DUTY, self.duty * DECREASE)
        elif verdict == CLEAN:
            self.duty = min(1.0, self.duty + self.budget.increase)
        self.setting = Setting(self._clamp(self._rows_per_ms * self.budget.chunk_ms), took * (1 - self.duty) / self.duty)
        if verdict is not None:
            self._window = now
            self.log.append(ControlStep(now - self._started, verdict, self.duty, self.setting, self.usage or 0.0,
                                        dict(self.readings_ms)))
        return self.setting

    def _verdict(self, now: float) -> str | None:
        """BREACH as soon as one source breaches significantly; at the end of a window CLEAN or HOLD."""
        breach, within, usages = False, True, []
        for source in self.sources:
            limit = self.budget_ms[source.name]
            count_slow = getattr(source, "count_slow", None)
            if count_slow is not None:
                slow, total = count_slow(self._window, limit)
                allowed = total * ALLOWED_SLOW
                breach = breach or slow > allowed + Z * math.sqrt(max(allowed, 1.0))
                within = within and slow <= allowed
                usages.append(slow / allowed if allowed else float(slow > 0))
                continue
            reading = source.read(self._window)
            if reading is not None:
                self.readings_ms[source.name] = reading
                self._p99_over[source.name] = reading > limit
                breach = breach or reading > limit
                usages.append(reading / limit)
            within = within and not self._p99_over.get(source.name, False)
        if not breach and now - self._window < self.budget.window_s:
            return None
        for source in (s for s in self.sources if hasattr(s, "count_slow")):  # the display's p99, once a window
            if (value := source.read(self._window)) is not None:
                self.readings_ms[source.name] = value
        if usages:
            self.usage = max(usages)
            self.max_usage = max(self.max_usage, self.usage)
        return BREACH if breach else CLEAN if within else HOLD

    def force_batch_size(self, batch_size: int) -> None:
        """A lock-timeout retry shrank the batch outside the controller."""
        self.setting = Setting(self._clamp(batch_size), self.setting.pause_ms)

    def status(self) -> str:
        """One line for the progress display."""
        s = self.setting
        pace = f"batches {self.duty:.1%} of the time, batch {s.batch_size}, pause {s.pause_ms:.0f} ms"
        if self.usage is None:
            return f"latency budget {_fmt_ms(self.budget_ms)}, {pace}"
        return f"latency p99 {_fmt_ms(self.readings_ms)}, budget {_fmt_ms(self.budget_ms)}: " \
               f"{self.usage:.0%} of budget in use, {pace}"

    def close(self) -> None:
        for source in self.sources:
            source.close()


def is_proxy(source: LatencySource) -> bool:
    """The source times a stand-in for the application's requests (``proxy = True``: the probe)."""
    return getattr(source, "proxy", False) is True


def _fmt_ms(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} ms" for k, v in values.items()) if len(values) > 1 else \
        next((f"{v:.2f} ms" for v in values.values()), "-")
