"""Latency-aware backfill throttle: hold the application's p99 at or under a budget.

The lag and lock-wait throttles in ``backfill.py`` stop the backfill outright when a replica falls
behind or sessions queue on locks. This one works continuously, between those two extremes: while
the backfill runs it reads the application's latency from one or more *latency sources* and adapts
the batch size and the pause between batches so the worst reading stays within its budget.

Sources (:class:`LatencySource`):

* :class:`PoolerProbe`: a light query (``SELECT 1`` by default, ideally one of the application's
  own point reads) sent through the same pooler as the application, on a fixed schedule from a
  background thread, so it is measured *while* batches run, not only between them. Its reading is
  the p99 of the samples taken since the last change of setting (at most ``window_s`` back); a
  probe stuck for longer than its interval counts with its elapsed time (a stall is latency too).
* :class:`PrometheusLatency`: the application's own p99 from Prometheus (``prometheus_query``,
  read with the ``bazbii_analysis`` client from the endpoint the run is given).

The budget of each source is ``budget_ratio`` (default 1.5) times its baseline, measured before the
first batch as the median of that source's readings over ``baseline_s``; or ``budget_ms`` when set.

The controller (:func:`decide`, a pure function) is AIMD-like (gentle multiplicative increase,
proportional decrease), and works on the batch size first, because a shared machine's latency
answers to the *size* of each hiccup (rows per batch) more than to their spacing:

* over budget: shrink the batch in proportion to the breach, aiming at ``headroom`` x budget, and
  at most halve it (``decrease``); at the smallest batch, double the pause instead;
* under ``headroom`` x budget: first shorten the pause, then grow the batch by ``increase`` (15 %);
* in between: hold;
* on every batch, a batch that held its row locks longer than ``max_hold_ms`` caps the next one
  proportionally (lock hold is a target of its own, independent of latency).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Protocol

import psycopg

from bazbii_analysis.prometheus import EmptyResult, MetricsError, PrometheusClient
from bazbii_db.migrations.dsn import redact, with_params


class LatencyConfigError(ValueError):
    """A latency-throttle setting is invalid; the message names the key."""


# --------------------------------------------------------------------------------------
# The controller: measurements in, batch size and pause out
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    batch_size: int
    pause_ms: float

    def slower_than(self, other: "Setting") -> bool:
        """Strictly less aggressive: no bigger batches, no shorter pauses, and not the same."""
        return self != other and self.batch_size <= other.batch_size and self.pause_ms >= other.pause_ms


@dataclass(frozen=True)
class ControlBounds:
    min_batch_size: int = 50
    max_batch_size: int = 50_000
    max_pause_ms: float = 1000.0
    pause_step_ms: float = 5.0  # the first pause once batches are at their floor
    decrease: float = 0.5  # the smallest batch multiplier on a budget breach
    increase: float = 0.15  # batch growth per interval with headroom
    headroom: float = 0.8  # grow only while usage is under this share of the budget
    max_hold_ms: float = 40.0  # cap on one batch's row-lock hold


@dataclass(frozen=True)
class Measurement:
    usage: float | None  # worst source reading / its budget (1.0 = at budget); None: no new reading
    hold_ms: float | None = None  # the last batch's row-lock hold


def clamp_setting(setting: Setting, bounds: ControlBounds) -> Setting:
    batch = min(bounds.max_batch_size, max(bounds.min_batch_size, int(setting.batch_size)))
    pause = min(bounds.max_pause_ms, max(0.0, float(setting.pause_ms)))
    return Setting(batch, pause)


def decide(setting: Setting, m: Measurement, bounds: ControlBounds) -> Setting:
    """The next (batch size, pause) from the current one and the latest measurement."""
    current = clamp_setting(setting, bounds)
    batch, pause = float(current.batch_size), current.pause_ms
    if m.usage is not None and m.usage > 1.0:
        if current.batch_size > bounds.min_batch_size:
            # shrink in proportion to the breach, aiming at headroom x budget (latency grows with the
            # rows per batch), by at most ``decrease``; always by at least one row
            factor = max(bounds.decrease, bounds.headroom / m.usage)
            batch = min(batch * factor, current.batch_size - 1)
        else:
            pause = max(pause * 2.0, bounds.pause_step_ms)
    elif m.usage is not None and m.usage < bounds.headroom:
        if pause > 0:
            pause = pause / 2.0 if pause / 2.0 >= bounds.pause_step_ms else 0.0
        else:
            batch = batch + max(1.0, math.ceil(batch * bounds.increase))
    if m.hold_ms is not None and m.hold_ms > bounds.max_hold_ms:
        batch = min(batch, current.batch_size * bounds.max_hold_ms / m.hold_ms)
    return clamp_setting(Setting(int(batch), pause), bounds)


# --------------------------------------------------------------------------------------
# Configuration (BackfillConfig.latency or the migration's [[backfill]] latency table)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyBudget:
    budget_ratio: float = 1.5  # budget = ratio x baseline measured before the first batch
    budget_ms: float | None = None  # an absolute budget instead (every source)
    baseline_s: float = 3.0
    probe: bool = True  # measure through the pooler with probe_query
    probe_query: str = "SELECT 1"
    probe_interval_ms: float = 20.0
    prometheus_query: str | None = None  # PromQL giving the app's p99 in seconds; used where an endpoint is given
    prometheus_interval_s: float = 15.0  # read it at most this often: its scrape interval
    window_s: float = 1.0  # a probe reading covers at most this much of the recent past
    min_samples: int = 10  # a probe reading needs this many samples since the last change
    control_interval_s: float = 0.25  # at most one latency decision per interval
    max_pause_ms: float = 1000.0
    pause_step_ms: float = 5.0
    decrease: float = 0.5
    increase: float = 0.15
    headroom: float = 0.8
    max_hold_ms: float = 40.0

    def __post_init__(self) -> None:
        def need(key: str, ok: bool, what: str) -> None:
            if not ok:
                raise LatencyConfigError(f"latency.{key}: must be {what}, got {getattr(self, key)!r}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "probe_query":
                need(f.name, isinstance(value, str) and value.strip() != "", "a non-empty SQL query")
            elif f.name == "prometheus_query":
                need(f.name, value is None or (isinstance(value, str) and value.strip() != ""), "a PromQL query")
            elif f.name == "probe":
                need(f.name, isinstance(value, bool), "true or false")
            elif f.name == "budget_ms":
                need(f.name, value is None or (_is_number(value) and value > 0), "a positive number of ms")
            elif f.name == "min_samples":
                need(f.name, isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                     "an integer >= 1")
            else:
                need(f.name, _is_number(value) and math.isfinite(value), "a number")
        need("budget_ratio", self.budget_ratio > 1.0, "above 1.0 (a budget at the baseline cannot be met)")
        for key in ("baseline_s", "probe_interval_ms", "window_s", "pause_step_ms", "max_hold_ms",
                    "prometheus_interval_s"):
            need(key, getattr(self, key) > 0, "positive")
        need("control_interval_s", self.control_interval_s >= 0, "0 or more")
        need("max_pause_ms", self.max_pause_ms >= self.pause_step_ms, "at least pause_step_ms")
        need("decrease", 0 < self.decrease < 1, "between 0 and 1 (exclusive)")
        need("increase", self.increase > 0, "positive")
        need("headroom", 0 < self.headroom <= 1, "in (0, 1]")

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

    def bounds(self, min_batch_size: int, max_batch_size: int) -> ControlBounds:
        return ControlBounds(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                             max_pause_ms=self.max_pause_ms, pause_step_ms=self.pause_step_ms,
                             decrease=self.decrease, increase=self.increase, headroom=self.headroom,
                             max_hold_ms=self.max_hold_ms)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------
# Latency sources
# --------------------------------------------------------------------------------------
class LatencySource(Protocol):
    name: str

    def start(self) -> None:
        """Begin measuring (open connections, start sampling)."""

    def read(self, since: float) -> float | None:
        """The application's p99 latency in ms over the recent past, from ``since`` (a
        ``time.monotonic()`` value) at the earliest where the source can tell; None: no reading yet."""

    def close(self) -> None: ...


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


class PoolerProbe:
    """Times ``query`` every ``interval_ms`` from a background thread on its own autocommit connection."""

    name = "probe"

    def __init__(self, dsn: str, query: str = "SELECT 1", interval_ms: float = 20.0, window_s: float = 1.0,
                 min_samples: int = 10, application_name: str = "bazbii-migrate latency probe"):
        self.dsn = with_params(dsn, application_name=application_name)
        self.query = query
        self.interval_s = interval_ms / 1000.0
        self.window_s = window_s
        self.min_samples = min_samples
        self.samples: deque[tuple[float, float]] = deque()  # (finished at, ms)
        self.backend_pid: int | None = None
        self.error: str | None = None  # the query failed: the probe stopped
        self.disconnected: str | None = None  # the connection is lost and being retried
        self._inflight_since: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        # no server-side prepared statements: a transaction pooler (PgBouncer < 1.21) hands the next
        # query to another server connection, where "_pg3_0" does not exist
        conn = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None)
        self.backend_pid = conn.info.backend_pid
        return conn

    def start(self) -> None:
        self._conn = self._connect()
        self._conn.execute(self.query).fetchall()  # fail here, on a bad query, not in the thread
        self._thread = threading.Thread(target=self._run, name="backfill-latency-probe", daemon=True)
        self._thread.start()

    def _probe_once(self) -> bool:
        """One timed query; a lost connection is retried until it works, the whole time counting as
        one probe in flight (the application cannot reach the database either). False: stopped."""
        while not self._stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                self._conn.execute(self.query).fetchall()
                self.disconnected = None
                return True
            except psycopg.OperationalError as exc:
                self.disconnected = redact(str(exc).strip(), self.dsn)
                if self._conn is not None:
                    self._conn.close()
                self._stop.wait(max(self.interval_s, 0.05))
        return False

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                self._inflight_since = t0 = time.monotonic()
            try:
                if not self._probe_once():
                    return
            except psycopg.Error as exc:  # the query itself is wrong (syntax, permissions): no probe
                self.error = redact(str(exc).strip(), self.dsn)
                with self._lock:
                    self._inflight_since = None
                return
            t1 = time.monotonic()
            with self._lock:
                self._inflight_since = None
                self.samples.append((t1, (t1 - t0) * 1000.0))
                while self.samples and self.samples[0][0] < t1 - max(self.window_s, 10.0):
                    self.samples.popleft()
            next_at = max(next_at + self.interval_s, t1)  # behind schedule: probe again at once
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def read(self, since: float) -> float | None:
        if self.error is not None:
            raise LatencyProbeFailed(f"latency probe failed: {self.error}")
        now = time.monotonic()
        since = max(since, now - self.window_s)
        with self._lock:
            recent = [ms for t, ms in self.samples if t >= since]
            inflight = self._inflight_since
        stalled = (now - inflight) * 1000.0 if inflight is not None and now - inflight > self.interval_s else None
        p99 = percentile(recent, 99) if len(recent) >= self.min_samples else None
        readings = [r for r in (p99, stalled) if r is not None]
        return max(readings) if readings else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None and not self._conn.closed:
            if self._thread is not None and self._thread.is_alive():
                self._conn.cancel_safe(timeout=2)
                self._thread.join(timeout=5)
            self._conn.close()


class LatencyProbeFailed(RuntimeError):
    """The probe's own query failed: the backfill cannot see the application's latency."""


class PrometheusLatency:
    """The application's p99 from Prometheus: ``promql`` must give one value in seconds (e.g.
    ``histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[30s])))``).

    Prometheus computes over its own range (the PromQL's ``rate(...[30s])``), so ``since`` is
    ignored: keep that range short, or the throttle reacts late. Its value changes only once per
    scrape, so it is read at most once per ``interval_s`` (set it to the scrape interval); between
    reads there is no new reading, and the controller does not act on one stale value again and
    again. No traffic in the range (an empty or NaN result) is no reading; an unreachable or failing Prometheus reads as infinitely slow, so
    the backfill backs off rather than speeding up blind (like an unreachable replica for the lag
    throttle)."""

    name = "prometheus"

    def __init__(self, client: PrometheusClient, promql: str, interval_s: float = 15.0):
        self.client = client
        self.promql = promql
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._last_read: float | None = None

    @classmethod
    def connect(cls, url: str, promql: str, interval_s: float = 15.0, timeout_s: float = 2.0) -> "PrometheusLatency":
        return cls(PrometheusClient(url, timeout=timeout_s), promql, interval_s)

    def start(self) -> None:
        pass

    def read(self, since: float) -> float | None:
        now = time.monotonic()
        if self._last_read is not None and now - self._last_read < self.interval_s:
            return None
        self._last_read = now
        try:
            value = self.client.scalar(self.promql)
        except EmptyResult:
            return None
        except MetricsError as exc:
            self.last_error = str(exc)
            return math.inf
        self.last_error = None
        return value * 1000.0 if math.isfinite(value) else math.inf

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------------------
# The throttle: baseline, budgets, decisions over time
# --------------------------------------------------------------------------------------
@dataclass
class ControlStep:
    at_s: float  # since the first batch
    readings_ms: dict[str, float]
    usage: float
    setting: Setting  # the setting chosen by this step


@dataclass
class LatencyThrottle:
    budget: LatencyBudget
    sources: list[LatencySource]
    setting: Setting
    bounds: ControlBounds
    baseline_ms: dict[str, float] = field(default_factory=dict)
    budget_ms: dict[str, float] = field(default_factory=dict)
    readings_ms: dict[str, float] = field(default_factory=dict)
    usage: float | None = None
    max_usage: float = 0.0
    log: list[ControlStep] = field(default_factory=list)
    _started: float = 0.0
    _last_change: float = 0.0
    _last_decision: float = 0.0

    def __post_init__(self) -> None:
        self.setting = clamp_setting(self.setting, self.bounds)

    def measure_baseline(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Median of each source's readings over ``baseline_s``, one reading per ``window_s``."""
        readings: dict[str, list[float]] = {s.name: [] for s in self.sources}
        end = time.monotonic() + self.budget.baseline_s
        window_start = time.monotonic()
        while True:
            sleep(min(self.budget.window_s, max(0.0, end - time.monotonic())))
            for source in self.sources:
                value = source.read(window_start)
                if value is not None and math.isfinite(value):
                    readings[source.name].append(value)
            window_start = time.monotonic()
            if window_start >= end:
                break
        for source in self.sources:
            values = readings[source.name]
            if not values:
                error = getattr(source, "last_error", None)
                raise LatencyProbeFailed(f"latency source {source.name}: no reading during the "
                                         f"{self.budget.baseline_s:g}s baseline" + (f" ({error})" if error else "")
                                         + "; cannot set a budget")
            self.baseline_ms[source.name] = statistics.median(values)
            self.budget_ms[source.name] = self.budget.budget_ms or self.budget.budget_ratio * statistics.median(values)
            if self.budget_ms[source.name] <= 0:
                raise LatencyProbeFailed(f"latency source {source.name}: baseline 0 ms gives no budget to hold; "
                                         "set latency.budget_ms")
        self._started = self._last_change = self._last_decision = time.monotonic()

    def after_batch(self, hold_ms: float | None) -> Setting:
        """The setting for the next batch; a latency decision at most every ``control_interval_s``."""
        now = time.monotonic()
        usage = None
        if now - self._last_decision >= self.budget.control_interval_s:
            readings = {s.name: s.read(self._last_change) for s in self.sources}
            readings = {k: v for k, v in readings.items() if v is not None}
            if readings:
                self.readings_ms.update(readings)  # a source without a new reading shows its last one
                usage = max(v / self.budget_ms[k] for k, v in readings.items())
                self.usage = usage
                self.max_usage = max(self.max_usage, usage)
                self._last_decision = now
        new = decide(self.setting, Measurement(usage, hold_ms), self.bounds)
        if usage is not None:
            self.log.append(ControlStep(now - self._started, dict(self.readings_ms), usage, new))
        if new != self.setting:
            self._last_change = now
            self.setting = new
        return new

    def force_batch_size(self, batch_size: int) -> None:
        """A lock-timeout retry shrank the batch outside the controller."""
        self.setting = clamp_setting(replace(self.setting, batch_size=batch_size), self.bounds)
        self._last_change = time.monotonic()

    def status(self) -> str:
        """One line for the progress display: how much of the budget is in use."""
        s = self.setting
        if self.usage is None:
            return f"latency budget {_fmt_ms(self.budget_ms)}, batch {s.batch_size}, pause {s.pause_ms:g} ms"
        return (f"latency {_fmt_ms(self.readings_ms)} = {self.usage:.0%} of budget {_fmt_ms(self.budget_ms)}, "
                f"batch {s.batch_size}, pause {s.pause_ms:g} ms")

    def close(self) -> None:
        for source in self.sources:
            source.close()


def _fmt_ms(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} ms" for k, v in values.items()) if len(values) > 1 else \
        next((f"{v:.2f} ms" for v in values.values()), "-")
