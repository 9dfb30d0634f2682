"""Latency-aware backfill throttle: hold the application's p99 at or under a budget.

The lag and lock-wait throttles in ``backfill.py`` stop the backfill outright when a replica falls
behind or sessions queue on locks. This one works continuously, between those two extremes: while
the backfill runs it reads the application's latency from one or more *latency sources* and adapts
the batch size and the pause between batches so the worst reading stays within its budget.

Sources (:class:`LatencySource`):

* :class:`PoolerProbe`: a light query (``SELECT 1`` by default, ideally one of the application's
  own point reads) sent through the same pooler as the application, on a fixed schedule from a
  background thread, so it is measured *while* batches run, not only between them. Its reading is
  the p99 of the samples taken since the last change of setting (it keeps the last
  ``max(window_s, 10 s)``; ``Backfill`` passes ``baseline_s`` + 5 s, enough for the baseline); a
  probe stuck for longer than its interval counts with its elapsed time (a stall is latency too).
* :class:`PrometheusLatency`: the application's own p99 from Prometheus (``prometheus_query``,
  read with the ``bazbii_analysis`` client from the endpoint the run is given).

The budget of each source is ``budget_ratio`` (default 1.5) times its baseline, measured before the
first batch as that source's p99 over the whole ``baseline_s`` (pooled, like the p99 the budget
holds; the p99 of one short window is far noisier); or ``budget_ms`` when set.

The controller (:func:`decide`, a pure function) is AIMD on the backfill's rate, in *cycles*: one
batch, then a pause that fills the rest of ``cycle_ms`` (40 ms). Measured on a 2-core machine
(``bench/bench_backfill.py``, docs/schema-migrations.md), the load's p99 answers to two things: how
long each batch keeps the database busy (the delay of a request that lands in it) and the share of
time batches run (how many requests land in one). Back to back, even 200-row batches raised it
2-3x; 1000-row batches, 5 ms each, did so even with 40 ms pauses; 100 to 500 rows with a pause of
ten times their duration stayed near the baseline. Within a fixed cycle, the batch size sets both
at once, and the rate:

* over budget: shrink the batch in proportion to the breach (x 0.8 at 125 % of the budget), by at
  most ``decrease`` (half) at once; the pause grows to keep the cycle. At the smallest batch, the
  cycle itself lengthens: the pause grows by the same factor (at least to ``pause_step_ms``);
* under ``headroom`` x budget: a stretched cycle shortens first (the pause by ``increase``, 15 %);
  then the batch grows by ``increase``, its pause shrinking to keep the cycle, down to none once a
  batch takes the whole cycle;
* in between: hold;
* on every batch, a batch that held its row locks longer than ``max_hold_ms`` caps the next one
  proportionally (lock hold is a target of its own, independent of latency).

:class:`LatencyThrottle` judges each setting once it has been watched for a whole ``window_s``, on
the samples taken since it began, at most every ``control_interval_s``; a gross breach (one that
halves the batch) after a quarter window. It aims each window's p99 at ``target`` (80 %) of the
budget, not at the budget itself: one window's p99 scatters around the true level, and a backfill
held right at the budget window by window ended over it for the whole run (measured: 2.03x
against a 1.5x budget). The first batch runs with a full cycle's pause, and its hold cuts the
batch to at most ``start_duty`` (25 %) of the cycle (the configured size is a guess made without
this machine's row cost).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Iterable, Protocol

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
    pause_step_ms: float = 5.0  # the first pause after running back to back, and the shortest one
    decrease: float = 0.5  # the smallest rate multiplier of one budget breach (the batch halved at most)
    increase: float = 0.15  # the rate's growth per decision with headroom
    headroom: float = 0.8  # speed up only while usage is under this share of the budget
    max_hold_ms: float = 40.0  # cap on one batch's row-lock hold
    cycle_ms: float = 40.0  # one batch and its pause; 0: pause only at the smallest batch


@dataclass(frozen=True)
class Measurement:
    usage: float | None  # worst source reading / its budget (1.0 = at budget); None: no new reading
    hold_ms: float | None = None  # the last batch's row-lock hold


def clamp_setting(setting: Setting, bounds: ControlBounds) -> Setting:
    batch = min(bounds.max_batch_size, max(bounds.min_batch_size, int(setting.batch_size)))
    pause = min(bounds.max_pause_ms, max(0.0, float(setting.pause_ms)))
    return Setting(batch, pause)


def cycle_pause(batch: float, m: Measurement, last_batch: int, bounds: ControlBounds) -> float:
    """The pause that fills the rest of the cycle after ``batch`` rows, which take about as long per
    row as the last batch (``last_batch`` rows in ``m.hold_ms``; unknown: the whole cycle)."""
    took = m.hold_ms * batch / last_batch if m.hold_ms is not None and last_batch > 0 else 0.0
    return max(0.0, bounds.cycle_ms - took)


def decide(setting: Setting, m: Measurement, bounds: ControlBounds) -> Setting:
    """The next (batch size, pause) from the current one and the latest measurement."""
    current = clamp_setting(setting, bounds)
    batch, pause = float(current.batch_size), current.pause_ms

    def fill(rows: float) -> float:
        return cycle_pause(rows, m, current.batch_size, bounds)

    if m.usage is not None and m.usage > 1.0:
        # slow down in proportion to the breach, aiming back at the budget, by at most ``decrease``
        # (a mild breach, a mild slow-down: the p99 of a window is noisy, and a harsher answer to it
        # than to a window with headroom would ratchet the backfill down to a crawl)
        factor = max(bounds.decrease, 1.0 / m.usage)
        if current.batch_size > bounds.min_batch_size:  # always by at least one row
            batch = max(bounds.min_batch_size, int(min(batch * factor, current.batch_size - 1)))
            pause = max(pause, fill(batch))
        else:  # the smallest batch is still too much: a longer cycle
            pause = max(bounds.pause_step_ms, pause / factor, fill(batch))
    elif m.usage is not None and m.usage < bounds.headroom:
        # a stretched cycle first (at the largest batch, whatever pause is left); stretched by at
        # least one pause step, or one batch's jitter in duration would pass for a stretched cycle
        # and spend the decision on a trim of the pause instead of a bigger batch
        at_largest = current.batch_size >= bounds.max_batch_size
        if pause > 0 and (pause >= fill(batch) + bounds.pause_step_ms or at_largest):
            floor = 0.0 if at_largest else fill(batch)
            pause = max(floor, pause / (1.0 + bounds.increase))
            pause = pause if pause >= bounds.pause_step_ms else 0.0
        else:
            batch = batch + max(1.0, math.ceil(batch * bounds.increase))
            pause = min(pause, fill(batch))
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
    baseline_s: float = 10.0  # long enough for a p99 to see the rare slow request (3 s read 7-29 % low)
    probe: bool = True  # measure through the pooler with probe_query
    probe_query: str = "SELECT 1"
    probe_interval_ms: float = 10.0
    prometheus_query: str | None = None  # PromQL giving the app's p99 in seconds; used where an endpoint is given
    prometheus_interval_s: float = 15.0  # read it at most this often: its scrape interval
    window_s: float = 2.0  # each setting is watched this long before it is judged, on the samples
    # taken since it began
    min_samples: int = 50  # a probe reading needs this many samples
    control_interval_s: float = 0.25  # at most one latency decision per interval
    max_pause_ms: float = 1000.0
    pause_step_ms: float = 5.0
    decrease: float = 0.5
    increase: float = 0.15
    headroom: float = 0.8
    target: float = 0.8  # aim each window's p99 at this share of the budget (see LatencyThrottle)
    max_hold_ms: float = 40.0
    cycle_ms: float = 40.0
    start_duty: float = 0.25  # the first batch is cut to take at most this share of the cycle

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
        need("cycle_ms", 0 <= self.cycle_ms <= self.max_pause_ms, "between 0 and max_pause_ms")
        need("start_duty", 0 < self.start_duty <= 1, "in (0, 1]")
        need("decrease", 0 < self.decrease < 1, "between 0 and 1 (exclusive)")
        need("increase", self.increase > 0, "positive")
        need("headroom", 0 < self.headroom <= 1, "in (0, 1]")
        need("target", 0 < self.target <= 1, "in (0, 1]")

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
                             max_hold_ms=self.max_hold_ms, cycle_ms=self.cycle_ms)


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


def p99_since(samples: Iterable[tuple[float, float]], since: float, min_samples: int) -> float | None:
    """The p99 of the (finished at, ms) samples from ``since`` on; None with fewer than ``min_samples``."""
    recent = [ms for t, ms in samples if t >= since]
    return percentile(recent, 99) if len(recent) >= min_samples else None


class PoolerProbe:
    """Times ``query`` every ``interval_ms`` from a background thread on its own autocommit connection."""

    name = "probe"

    def __init__(self, dsn: str, query: str = "SELECT 1", interval_ms: float = 10.0, window_s: float = 1.0,
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

    def _execute(self) -> None:
        cur = self._conn.execute(self.query)
        if cur.description is not None:  # a write probe (UPDATE ... without RETURNING) has no rows
            cur.fetchall()

    def start(self) -> None:
        self._conn = self._connect()
        self._execute()  # fail here, on a bad query, not in the thread
        self._thread = threading.Thread(target=self._run, name="backfill-latency-probe", daemon=True)
        self._thread.start()

    def _probe_once(self) -> bool:
        """One timed query; a lost connection is retried until it works, the whole time counting as
        one probe in flight (the application cannot reach the database either). False: stopped."""
        while not self._stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                self._execute()
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
        with self._lock:
            p99 = p99_since(self.samples, since, self.min_samples)
            inflight = self._inflight_since
        stalled = (now - inflight) * 1000.0 if inflight is not None and now - inflight > self.interval_s else None
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
    _sized: bool = False  # the first batch's hold has sized the start

    def __post_init__(self) -> None:
        self.setting = clamp_setting(self.setting, self.bounds)

    def _size_the_start(self, hold_ms: float | None, now: float) -> bool:
        """After the first batch: cut the batch so one takes at most ``start_duty`` of the cycle (the
        configured size is a guess made without this machine's row cost); it grows on evidence."""
        if self._sized or hold_ms is None or hold_ms <= 0 or not self.bounds.cycle_ms:
            return False
        self._sized = True
        rows = int(self.setting.batch_size * self.budget.start_duty * self.bounds.cycle_ms / hold_ms)
        if rows >= self.setting.batch_size:
            return False
        measured = Measurement(None, hold_ms)
        batch = max(self.bounds.min_batch_size, rows)
        self.setting = clamp_setting(Setting(batch, max(self.setting.pause_ms, cycle_pause(
            batch, measured, self.setting.batch_size, self.bounds))), self.bounds)
        self._last_change = now
        return True

    def measure_baseline(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Each source's p99 over the whole ``baseline_s``, pooled, like the p99 a budget is held to;
        for a source without a reading that far back (Prometheus computes over its own range), the
        median of its readings, one per ``window_s``."""
        readings: dict[str, list[float]] = {s.name: [] for s in self.sources}
        end = time.monotonic() + self.budget.baseline_s
        window_start = started = time.monotonic()
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
            pooled = source.read(started)
            baseline = pooled if pooled is not None and math.isfinite(pooled) else statistics.median(values)
            self.baseline_ms[source.name] = baseline
            self.budget_ms[source.name] = self.budget.budget_ms or self.budget.budget_ratio * baseline
            if self.budget_ms[source.name] <= 0:
                raise LatencyProbeFailed(f"latency source {source.name}: baseline 0 ms gives no budget to hold; "
                                         "set latency.budget_ms")
        self._started = self._last_change = self._last_decision = time.monotonic()

    def after_batch(self, hold_ms: float | None) -> Setting:
        """The setting for the next batch; a latency decision at most every ``control_interval_s``."""
        now = time.monotonic()
        if self._size_the_start(hold_ms, now):
            return self.setting
        usage = reading = None
        # a setting is judged on a whole window of its own: the budget is a p99 over such windows,
        # and a p99 of fewer samples (their maximum) reads high and would throttle for nothing; but
        # a gross breach (one that halves the batch) is plain after a quarter window, and waiting
        # out the rest would spend it over budget
        watched = now - self._last_change
        if now - self._last_decision >= self.budget.control_interval_s and watched >= self.budget.window_s / 4:
            readings = {s.name: s.read(self._last_change) for s in self.sources}
            readings = {k: v for k, v in readings.items() if v is not None}
            worst = max((v / self.budget_ms[k] for k, v in readings.items()), default=None)
            if worst is not None and watched < self.budget.window_s and \
                    worst < self.budget.target / self.budget.decrease:
                worst = None  # not a whole window yet, and no gross breach: wait for the window
            if worst is not None:
                self.readings_ms.update(readings)  # a source without a new reading shows its last one
                reading = worst
                self.usage = reading
                self.max_usage = max(self.max_usage, reading)
                self._last_decision = now
                usage = reading / self.budget.target
        new = decide(self.setting, Measurement(usage, hold_ms), self.bounds)
        if reading is not None:
            self.log.append(ControlStep(now - self._started, dict(self.readings_ms), reading, new))
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
