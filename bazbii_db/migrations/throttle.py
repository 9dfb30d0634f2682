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
  It also counts its samples slower than the budget (``count_slow``), a stuck probe as every probe
  its schedule would have sent meanwhile.
* :class:`PrometheusLatency`: the application's own p99 from Prometheus (``prometheus_query``,
  read with the ``bazbii_analysis`` client from the endpoint the run is given).

The budget of each source is ``budget_ratio`` (default 1.5) times its baseline, measured before the
first batch as that source's p99 over the whole ``baseline_s`` (pooled, like the p99 the budget
holds; the p99 of one short window is far noisier); or ``budget_ms`` when set. A *proxy* (the
probe times the database's part of a request) is budgeted with the application's slack in ms where
a source of the application's own latency gives it: the milliseconds a backfill adds to the one, it
adds to the other, and 1.5 x a 0.3 ms probe is under a busy machine's scheduling jitter.

The controller (:func:`decide`, a pure function) is AIMD on the backfill's rate. Measured on a
2-core machine (``bench/bench_backfill.py``, docs/schema-migrations.md), the load's p99 answers
more to how many batches run than to how many rows they hold, up to ~5 ms a batch: 200-row batches
every 40 ms (4,700 rows/s) raised it 1.6x where 1000-row batches every 160 ms (6,000 rows/s) raised
it 1.15x. So the batch is sized to hold its locks about ``batch_ms`` (5 ms), and the rate is set
mostly by the pause:

* over budget: the cycle (one batch and its pause) lengthens in proportion to the breach (x 1.25 at
  125 % of the budget), by at most 1/``decrease`` (twice) at once; a batch that ran longer than
  ``batch_ms`` is cut toward it by as much; at ``max_pause_ms`` the batch makes up the rest;
* under ``headroom`` x budget: a batch shorter than ``batch_ms`` grows first (by ``increase``, 15 %;
  ``start_increase``, 50 %, until the first breach: a slow start), then the cycle shortens by as
  much, down to no pause;
* in between: hold;
* on every batch, a batch that held its row locks longer than ``max_hold_ms`` caps the next one
  proportionally (lock hold is a target of its own, independent of latency).

:class:`LatencyThrottle` judges the current setting on every source, at most every
``control_interval_s``, not before a quarter ``window_s`` nor before a whole one since the first
batch (the start's own transients), and aims at ``target`` (80 %) of the
budget. A source that keeps its samples (the probe; the benchmark's load) is judged on the *share*
of its requests since the setting began (its last ``EVIDENCE_WINDOWS`` windows at most) that were
slower than the budget, against the 1 % a p99 allows (usage 1.0 = at the budget). The counts add
up over the time a setting runs; a
breach is acted on once it is plain: the share is ``evidence_z`` (2) standard errors over the aim,
the error taken from the spread between quarter-window bins (the load's slow requests come in
bursts, so they are not independent; never under the Poisson error). A setting watched for a whole
``window_s`` without a plain breach, and under ``headroom`` x the aim on its count so far, speeds
up (additive increase); so does a plain headroom earlier. One window's p99 cannot do this: a short
window that holds a burst reads far over the p99 of the whole run, one that holds none reads
under, and a backfill answering every window sank to its smallest batch while the run's p99 had
room to spare (measured: 0.20x the throughput of the best fixed setting, at 1.01x the baseline).
A source that gives a p99 only (Prometheus, over its own range) is judged on a whole window, or
after a quarter window on a gross breach. Any source's plain breach slows down; speeding up needs
one source's headroom, none holding, and every undecided one under the aim (a probe's few hundred
samples are rarely plain either way). The first batch sizes the start: ``batch_ms``
batches taking ``start_duty`` (5 %) of the time (the configured size is a guess made without this
machine's row cost).

**What a batch costs** (``batchcost``) takes over from those verdicts once it is plain. A source
that can tell which of its requests overlapped a batch (``count_overlap``: the probe; the
benchmark's load) counts the slow requests the batches add: those among the overlapping requests
beyond the share of the others in the same quarter window, per second of batches, pooled over
``horizon_s`` (30 s). Measured, the requests that overlapped no batch were slow at the baseline's
own share at every fixed setting, and the backfill's whole effect was on the ones that did; the
share of slow requests in a window swings with the batches' own impact, their cost per second of
batches much less. With the cost plainly above none (``evidence_z`` errors), batches run the
share of the time that keeps the share of slow requests at the aim: (aim - the share slow during
the baseline) x requests a second / cost (:func:`retime`; at most 1 + ``start_increase`` times
faster, or ``decrease`` times slower, a decision). The application's own source decides over a
proxy's. The counted sources' plain breaches still slow down (a burst, or a load that changed;
the cost then leads the way back), but their hold band no longer holds a speed-up back; a p99-only
source (Prometheus) keeps its full say.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Protocol, Sequence

import psycopg

from bazbii_analysis.prometheus import EmptyResult, MetricsError, PrometheusClient
from bazbii_db.migrations.batchcost import BUSY, IDLE, SLOW_BUSY, SLOW_IDLE, BatchCost, CostLedger, spread_error
from bazbii_db.migrations.dsn import redact, with_params


QUANTILE = 0.99  # the budget holds the application's p99 ...
ALLOWED_SLOW_SHARE = 1.0 - QUANTILE  # ... so at most this share of requests may be slower than it
OVER, UNDER, HOLD = "over", "under", "hold"  # a source's verdict on the current setting
EVIDENCE_WINDOWS = 4  # a count covers the current setting's last this many window_s, at most
RECENT_BATCHES = 20  # a cycle is timed with the mean of this many batches' durations


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
    decrease: float = 0.5  # the smallest rate multiplier of one budget breach (the rate halved at most)
    increase: float = 0.15  # the rate's growth per decision with headroom
    headroom: float = 0.8  # speed up only while usage is under this share of the budget
    max_hold_ms: float = 40.0  # cap on one batch's row-lock hold
    batch_ms: float = 5.0  # a batch grows only while it holds its row locks shorter than this


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
    took = m.hold_ms if m.hold_ms is not None and m.hold_ms > 0 else 0.0  # one batch, one cycle = took + pause

    if m.usage is not None and m.usage > 1.0:
        # slow down in proportion to the breach, aiming back at the budget, by at most ``decrease``
        # (a mild breach, a mild slow-down): the cycle lengthens by 1/factor, the batch keeps its
        # size; a batch over batch_ms is also cut toward it, and at the longest pause it is the batch
        factor = max(bounds.decrease, 1.0 / m.usage)
        pause = max(bounds.pause_step_ms, (pause + took) / factor - took)
        if pause <= current.pause_ms:  # (a breach a rounding error over the budget)
            pause = current.pause_ms + bounds.pause_step_ms
        if took > bounds.batch_ms > 0:
            batch = max(batch * factor, batch * bounds.batch_ms / took)
        if pause > bounds.max_pause_ms:  # the longest pause: the batch makes up the rest of the factor
            batch = batch * factor * (bounds.max_pause_ms + took) / (current.pause_ms + took) \
                if current.pause_ms + took > 0 else batch * factor
            pause = bounds.max_pause_ms
        if current.pause_ms >= bounds.max_pause_ms:  # always by at least one row
            batch = min(batch, current.batch_size - 1)
    elif m.usage is not None and m.usage < bounds.headroom:
        # speed up: a batch shorter than batch_ms grows first (fewer, larger batches: measured, the
        # load's p99 answered more to how many batches ran than to how many rows they held, up to
        # ~5 ms a batch); then the cycle shortens, the pause by as much, down to none
        grown = batch + max(1.0, math.ceil(batch * bounds.increase))
        fits = took * grown / batch <= bounds.batch_ms if m.hold_ms is not None else pause == 0
        if (fits or pause == 0) and current.batch_size < bounds.max_batch_size:
            batch = grown
        else:
            pause = (pause + took) / (1.0 + bounds.increase) - took
            pause = pause if pause >= bounds.pause_step_ms else 0.0
    return cap_hold(Setting(int(batch), pause), current, m.hold_ms, bounds)


def cap_hold(setting: Setting, current: Setting, hold_ms: float | None, bounds: ControlBounds) -> Setting:
    """A batch that held its row locks longer than ``max_hold_ms`` caps the next one proportionally."""
    if hold_ms is not None and hold_ms > bounds.max_hold_ms:
        setting = replace(setting, batch_size=int(min(setting.batch_size,
                                                      current.batch_size * bounds.max_hold_ms / hold_ms)))
    return clamp_setting(setting, bounds)


def retime(setting: Setting, duty: float, took_ms: float, hold_ms: float | None, bounds: ControlBounds,
           increase: float, faster: bool = True) -> Setting:
    """Toward batches running ``duty`` of the time (what their cost allows), from batches that take
    ``took_ms``: at most 1 + ``increase`` times the current share or ``decrease`` times it at once
    (the cost is an estimate that firms up as batches run), and no more without ``faster``. The
    cost is per second of batches, so a batch shorter than ``batch_ms`` grows toward it first (fewer,
    larger batches: less overhead per row); the pause sets the share; at ``max_pause_ms`` the batch
    makes up the rest. A change of the pause under half a pause step is not made."""
    current = clamp_setting(setting, bounds)
    took = max(0.0, took_ms)
    if took <= 0:
        return cap_hold(current, current, hold_ms, bounds)
    now = took / (took + current.pause_ms)
    share = min(1.0, max(duty, now * bounds.decrease), now * (1.0 + increase) if faster else now)
    grow = min(1.0 + increase, bounds.batch_ms / took) if took < bounds.batch_ms else 1.0
    batch = float(min(bounds.max_batch_size, int(current.batch_size * grow)))
    took *= batch / current.batch_size
    pause = took / share - took if share > 0 else math.inf
    if pause < bounds.pause_step_ms:
        pause = 0.0 if share > now else bounds.pause_step_ms
    if pause > bounds.max_pause_ms:  # the longest pause: smaller batches make up the rest
        batch *= share * bounds.max_pause_ms / (1.0 - share) / took if share < 1 else 1.0
        pause = bounds.max_pause_ms
    if int(batch) == current.batch_size and 0 < pause and abs(pause - current.pause_ms) < bounds.pause_step_ms / 2:
        # Each change restarts the other sources' evidence: a change under half a pause step is not made, unless
        # the current pause is more than 5 % off the share (at short pauses half a step is a large share).
        if abs(took / (took + current.pause_ms) - share) <= 0.05 * share:
            pause = current.pause_ms
    return cap_hold(Setting(int(batch), pause), current, hold_ms, bounds)


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
    window_s: float = 2.0  # a setting is judged after a quarter of this at the earliest (counts in
    # quarter-window bins), a p99-only source's reading after a whole one; and with no plain breach
    # for a whole one, a setting under headroom speeds up
    min_samples: int = 50  # a probe's p99 (the baseline, the display) needs this many samples
    control_interval_s: float = 0.25  # at most one latency decision per interval
    max_pause_ms: float = 1000.0
    pause_step_ms: float = 5.0
    decrease: float = 0.5
    increase: float = 0.15
    start_increase: float = 0.5  # the growth per decision with headroom until the first breach
    headroom: float = 0.8
    target: float = 0.8  # aim at this share of the budget (see LatencyThrottle)
    evidence_z: float = 2.0  # a count of slow requests is plain this many standard deviations off the aim
    max_hold_ms: float = 40.0
    batch_ms: float = 5.0  # a batch grows only while it holds its row locks shorter than this
    start_duty: float = 0.05  # the first batch sizes the start: batch_ms batches, this share of the time
    horizon_s: float = 30.0  # a batch's cost (slow requests it adds) is pooled over this long (batchcost)

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
                    "prometheus_interval_s", "evidence_z", "horizon_s"):
            need(key, getattr(self, key) > 0, "positive")
        need("control_interval_s", self.control_interval_s >= 0, "0 or more")
        need("max_pause_ms", self.max_pause_ms >= self.pause_step_ms, "at least pause_step_ms")
        need("batch_ms", 0 < self.batch_ms <= self.max_hold_ms, "positive and at most max_hold_ms")
        need("start_duty", 0 < self.start_duty <= 1, "in (0, 1]")
        need("decrease", 0 < self.decrease < 1, "between 0 and 1 (exclusive)")
        need("increase", self.increase > 0, "positive")
        need("start_increase", self.start_increase >= self.increase, "at least increase")
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
                             max_hold_ms=self.max_hold_ms, batch_ms=self.batch_ms)


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

    # optional: ``proxy = True``, the source times a stand-in for the application's requests (the
    # probe): with a source that is not, it is budgeted with that one's slack in ms (LatencyThrottle)
    # optional: ``count_slow(since, limit_ms, bin_s) -> [[slow, all], ...]``, per ``bin_s`` from
    # ``since`` on, the requests finished that were slower than ``limit_ms``, and all of them; a
    # source that has it is judged on that share (see LatencyThrottle)
    # optional: ``count_overlap(since, limit_ms, bin_s, spans) -> [[slow busy, busy, slow idle, idle],
    # ...]``, the same split by whether the request overlapped one of the batches' (start, end)
    # ``spans`` (``overlap_by_bin``): the batches' cost is counted from it (batchcost)


def is_proxy(source: LatencySource) -> bool:
    """The source times a stand-in for the application's requests (``proxy = True``: the probe)."""
    return getattr(source, "proxy", False) is True


def attributes(source: LatencySource) -> bool:
    """The source can tell the requests that overlapped a batch (``count_overlap``): the batches'
    cost is counted from it."""
    return getattr(source, "count_overlap", None) is not None


def counts_slow(source: LatencySource) -> bool:
    """The source counts its slow requests (``count_slow``): judged on that share, not on a p99."""
    return getattr(source, "count_slow", None) is not None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


def samples_since(samples: Sequence[tuple[float, float]], since: float) -> list[tuple[float, float]]:
    """The (finished at, ms) samples from ``since`` on, of samples kept in time order: walked from the
    newest back, so a judgement costs the samples it counts, not every sample kept (the throttle
    runs in the process whose probe thread waits for the GIL meanwhile)."""
    out = []
    for sample in reversed(samples):
        if sample[0] < since:
            break
        out.append(sample)
    out.reverse()
    return out


def p99_since(samples: Sequence[tuple[float, float]], since: float, min_samples: int) -> float | None:
    """The p99 of the time-ordered (finished at, ms) samples from ``since`` on; None with fewer than
    ``min_samples``."""
    recent = [ms for _, ms in samples_since(samples, since)]
    return percentile(recent, QUANTILE * 100) if len(recent) >= min_samples else None


def slow_by_bin(samples: Sequence[tuple[float, float]], since: float, limit_ms: float,
                bin_s: float) -> list[list[int]]:
    """[slow, all] per ``bin_s`` bin, from ``since`` on, of the time-ordered (finished at, ms) samples
    slower than ``limit_ms``; every bin up to the last sample's (``overlap_by_bin`` with no batch)."""
    return [[b[SLOW_IDLE], b[IDLE]] for b in overlap_by_bin(samples, since, limit_ms, bin_s, ())]


def overlap_by_bin(samples: Sequence[tuple[float, float]], since: float, limit_ms: float, bin_s: float,
                   spans: Sequence[tuple[float, float]]) -> list[list[int]]:
    """[slow busy, busy, slow idle, idle] per ``bin_s`` bin (``batchcost``'s columns), from ``since``
    on, of the time-ordered (finished at, ms) samples: a *busy* request ran while a batch did (its
    interval met one of the time-ordered, disjoint (start, end) ``spans``), a *slow* one took longer
    than ``limit_ms``; every bin up to the last sample's."""
    starts = [start for start, _ in spans]
    bins: list[list[int]] = []
    for t, ms in samples_since(samples, since):
        k = int((t - since) / bin_s)
        while len(bins) <= k:
            bins.append([0, 0, 0, 0])
        # the spans are disjoint: the last to start before the request ended is the last to end
        i = bisect_left(starts, t) - 1
        busy = i >= 0 and spans[i][1] > t - ms / 1000.0
        bins[k][BUSY if busy else IDLE] += 1
        bins[k][SLOW_BUSY if busy else SLOW_IDLE] += ms > limit_ms
    return bins


def share_over(bins: list[list[int]], allowed: float) -> tuple[float, float]:
    """The share of slow samples over all bins, and its standard error: from the spread between the
    bins (slow requests come in bursts, so they are not independent), never under the Poisson error
    of a count at the ``allowed`` share (a few quiet bins prove little)."""
    slow, total = sum(b[0] for b in bins), sum(b[1] for b in bins)
    if total == 0:
        return 0.0, math.inf
    share = slow / total
    poisson = math.sqrt(max(total * allowed, 1.0)) / total
    spread = spread_error([(b[0], b[1]) for b in bins if b[1]], share)
    return share, poisson if spread is None else max(spread, poisson)


class PoolerProbe:
    """Times ``query`` every ``interval_ms`` from a background thread on its own autocommit connection."""

    name = "probe"
    proxy = True  # a stand-in for the application's requests: budgeted with its slack where it is known

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

    def count_slow(self, since: float, limit_ms: float, bin_s: float) -> list[list[int]]:
        """[probes slower than ``limit_ms``, all probes] per ``bin_s`` from ``since`` on. A probe in
        flight for longer than the limit counts as every probe its schedule would have sent
        meanwhile, all slow: the application's requests wait behind the same stall."""
        if self.error is not None:
            raise LatencyProbeFailed(f"latency probe failed: {self.error}")
        now = time.monotonic()
        with self._lock:
            bins = slow_by_bin(self.samples, since, limit_ms, bin_s)
            inflight = self._inflight_since
        if inflight is not None and (now - inflight) * 1000.0 > limit_ms:
            missed = int((now - max(inflight, since)) / self.interval_s) + 1
            bins = bins or [[0, 0]]
            bins[-1] = [bins[-1][0] + missed, bins[-1][1] + missed]
        return bins

    def count_overlap(self, since: float, limit_ms: float, bin_s: float,
                      spans: Sequence[tuple[float, float]]) -> list[list[int]]:
        """[slow busy, busy, slow idle, idle] probes per ``bin_s`` from ``since`` on (``overlap_by_bin``);
        a probe in flight counts once it returns."""
        if self.error is not None:
            raise LatencyProbeFailed(f"latency probe failed: {self.error}")
        with self._lock:
            return overlap_by_bin(self.samples, since, limit_ms, bin_s, spans)

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
    again. No traffic in the range (an empty or NaN result) is no reading; an unreachable or
    failing Prometheus reads as infinitely slow, so the backfill backs off rather than speeding up
    blind (like an unreachable replica for the lag throttle)."""

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
    allowed_duty: float | None = None  # the share of the time batches may run, by their cost; None: not known


@dataclass
class LatencyThrottle:
    budget: LatencyBudget
    sources: list[LatencySource]
    setting: Setting
    bounds: ControlBounds
    baseline_ms: dict[str, float] = field(default_factory=dict)
    budget_ms: dict[str, float] = field(default_factory=dict)
    baseline_share: dict[str, float] = field(default_factory=dict)  # of a counted source's, slower than its budget
    readings_ms: dict[str, float] = field(default_factory=dict)
    usage: float | None = None
    max_usage: float = 0.0
    log: list[ControlStep] = field(default_factory=list)
    _started: float = 0.0
    _last_change: float = 0.0
    _last_decision: float = 0.0
    _sized: bool = False  # the first batch's hold has sized the start
    _breached: bool = False  # a plain breach ended the slow start
    _shown_at: float = 0.0  # the counted sources' p99 was last read for the display
    costs: dict[str, BatchCost] = field(default_factory=dict)  # per source that attributes (batchcost)
    allowed_duty: float | None = None  # the share of the time the batches' cost allowed at the last decision
    _ledgers: dict[str, CostLedger] = field(default_factory=dict)
    _spans: list[tuple[float, float]] = field(default_factory=list)  # the batches' (start, end) lately

    def __post_init__(self) -> None:
        self.setting = clamp_setting(self.setting, self.bounds)

    def _size_the_start(self, hold_ms: float | None, now: float) -> bool:
        """After the first batch: size the batch to hold its locks about ``batch_ms`` and the pause
        so batches take ``start_duty`` of the time (the configured size is a guess made without this
        machine's row cost); from there the controller moves on evidence."""
        if self._sized or hold_ms is None or hold_ms <= 0:
            return False
        self._sized = True
        rows = self.setting.batch_size * self.bounds.batch_ms / hold_ms
        batch = clamp_setting(Setting(int(rows), 0), self.bounds).batch_size
        took = hold_ms * batch / self.setting.batch_size
        sized = clamp_setting(Setting(batch, took * (1.0 / self.budget.start_duty - 1.0)), self.bounds)
        if sized == self.setting:
            return False
        self.setting, self._last_change = sized, now
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
        # a proxy (the probe) measures the database's part of a request: the milliseconds a backfill
        # adds to it, it adds to the application's requests too. With the application's own latency
        # at hand, the proxy may spend the application's slack in ms, not budget_ratio x its own
        # baseline (measured: 1.5 x a 0.3 ms probe left 0.15 ms, under a busy 2-core machine's
        # scheduling jitter, and 5-13 % of probes broke it while the load's p99 stayed in budget)
        slack = [self.budget_ms[s.name] - self.baseline_ms[s.name] for s in self.sources if not is_proxy(s)]
        for source in self.sources:
            if is_proxy(source) and slack and not self.budget.budget_ms:
                self.budget_ms[source.name] = self.baseline_ms[source.name] + min(slack)
            if self.budget_ms[source.name] <= 0:
                raise LatencyProbeFailed(f"latency source {source.name}: baseline 0 ms gives no budget to hold; "
                                         "set latency.budget_ms")
        # the share of requests that are slow with no backfill running: what the batches may add to it
        # is the aim less this (measured: the requests that overlapped no batch were slow at this
        # share at every fixed setting; a share measured during the run would carry its bursts)
        for source in self.sources:
            if counts_slow(source):
                counted = source.count_slow(started, self.budget_ms[source.name], self.budget.baseline_s)
                self.baseline_share[source.name] = share_over(counted, ALLOWED_SLOW_SHARE)[0]
        self._started = self._last_change = self._last_decision = time.monotonic()

    def _verdict(self, source: LatencySource, watched: float, now: float) -> tuple[float, str | None] | None:
        """One source's usage (1.0: at its budget) and verdict on the current setting, watched for
        ``watched`` seconds: OVER the aim, UNDER ``headroom`` x the aim, HOLD in between, or None:
        not plain yet. None for both: no reading."""
        aim, budget_ms = self.budget.target, self.budget_ms[source.name]
        if counts_slow(source):
            # the share of requests slower than the budget, against the share a p99 allows: a
            # count adds up over the time the setting ran, where one window's p99 is at the mercy
            # of a burst; plain once it differs from the aim by evidence_z standard errors, so a
            # setting near the aim is held on until the evidence is in (over the last
            # EVIDENCE_WINDOWS windows: the load may have changed since, and each judgement walks
            # every sample it counts, in the process whose probe thread waits for the GIL meanwhile)
            since = max(self._last_change, now - EVIDENCE_WINDOWS * self.budget.window_s)
            bins = source.count_slow(since, budget_ms, self.budget.window_s / 4)
            if not any(n for _, n in bins):
                return None
            share, error = share_over(bins, ALLOWED_SLOW_SHARE)
            usage = share / ALLOWED_SLOW_SHARE
            expected = ALLOWED_SLOW_SHARE * aim
            low = expected * self.bounds.headroom
            if share - expected >= self.budget.evidence_z * error:
                return usage, OVER
            if low - share >= self.budget.evidence_z * error:
                return usage, UNDER
            # additive increase: a setting watched a whole window without a plain breach, and under
            # headroom on the count so far, speeds up; only a breach must be plain to slow down
            # (measured: speeding up under the aim itself, the backfill broke it plainly, cut by a
            # third and climbed back, for less throughput at a higher p99)
            return usage, (UNDER if watched >= self.budget.window_s and share < low else None)
        reading = source.read(self._last_change)
        if reading is None:
            return None
        self.readings_ms[source.name] = reading
        usage = reading / budget_ms
        # a p99 (Prometheus's) is judged on a whole window of the setting's own: a p99 of fewer
        # samples (their maximum) reads high and would throttle for nothing; but a gross breach
        # (one that halves the rate) is plain after a quarter window
        if watched < self.budget.window_s and usage < aim / self.budget.decrease:
            return usage, None
        return usage, (OVER if usage > aim else UNDER if usage < aim * self.bounds.headroom else HOLD)

    def after_batch(self, hold_ms: float | None) -> Setting:
        """The setting for the next batch; a latency decision at most every ``control_interval_s``."""
        now = time.monotonic()
        if hold_ms is not None and hold_ms > 0:
            self._spans.append((now - hold_ms / 1000.0, now))
        if self._size_the_start(hold_ms, now):
            return self.setting
        usage = reading = allowed = new = None
        watched = now - self._last_change
        # the first judgement waits a whole window: the start's own transients (new connections,
        # the first batch at the configured size) broke the budget in the first quarter window of
        # most benchmark runs, and halved a start that then ran clean
        judged = watched >= self.budget.window_s / 4 and now - self._started >= self.budget.window_s
        if now - self._last_decision >= self.budget.control_interval_s and judged:
            verdicts = {}
            for source in self.sources:
                found = self._verdict(source, watched, now)
                if found is not None:
                    verdicts[source.name] = found
            if verdicts:
                self.usage = max(u for u, _ in verdicts.values())
                self.max_usage = max(self.max_usage, self.usage)
            over = [u for u, v in verdicts.values() if v == OVER]
            allowed = self.allowed_duty = self._allowed_duty(now)
            if allowed is not None:  # the batches' cost is known: the sources that count it hold no
                # speed-up back (it is theirs: a held band under the aim kept v12 at half the frontier);
                # a plain breach of theirs still slows down
                verdicts = {s.name: verdicts[s.name] for s in self.sources if s.name in verdicts and not attributes(s)}
            # slow down on any source's plain breach; speed up once one source has headroom and no
            # other holds, the undecided ones under the aim (a probe of a few hundred samples rarely
            # is plain, and would hold back what the application's own latencies show); hold once
            # every source is plain
            undecided = [u for u, v in verdicts.values() if v is None]
            under = [u for u, v in verdicts.values() if v == UNDER]
            holding = HOLD in (v for _, v in verdicts.values()) or any(u > self.budget.target for u in undecided)
            if over:  # in proportion to the worst breach (measured: a cut of only what a count
                # proves, its share less its margin of error, kept the backfill far over the budget
                # through plain breaches; see docs/schema-migrations.md, versions v13 and v14)
                reading, usage = max(over), max(over) / self.budget.target
            elif allowed is not None:  # batches as much of the time as their cost allows; faster
                # only if no other source holds
                reading = self.usage if self.usage is not None else 0.0
                new = retime(self.setting, allowed, self._took_ms(), hold_ms, self.bounds,
                             self.budget.start_increase, faster=not holding)
            elif under and not holding:
                reading, usage = max(under), 0.0  # the verdicts found headroom: usage 0 speeds up
            elif verdicts and not undecided:
                reading = self.usage
            if reading is not None:
                self._last_decision = now
        if reading is not None or now - self._shown_at >= self.budget.window_s:
            self._show_p99(now)
        # slow start: until the first breach (or the batches' cost is known), headroom grows the
        # rate by start_increase, not increase (the start is a guess; the climb to the frontier at
        # 15 % a window took most of a 20 s run), then by increase around the frontier the breach found
        self._breached = self._breached or (usage is not None and usage > 1.0) or allowed is not None
        bounds = self.bounds if self._breached else replace(self.bounds, increase=self.budget.start_increase)
        if new is None:
            new = decide(self.setting, Measurement(usage, hold_ms), bounds)
        if reading is not None:
            self.log.append(ControlStep(now - self._started, dict(self.readings_ms), reading, new, allowed))
        if new != self.setting:
            self._last_change = now
            self.setting = new
        return new

    def _allowed_duty(self, now: float) -> float | None:
        """The share of the time batches may run and keep the share of slow requests at the aim,
        given what a second of batches costs (``batchcost``): the strictest source's, of the sources
        that count it, the application's own over a proxy's (a probe's hundred samples a second are
        noisier); None: no cost is plain yet. Each source's bins are taken once, as they complete,
        and pooled over ``horizon_s``."""
        horizon = self.budget.horizon_s
        del self._spans[:bisect_left(self._spans, now - horizon, key=lambda span: span[1])]
        counting = [s for s in self.sources if attributes(s)]
        duties = {}
        for source in counting:
            bin_s, limit_ms = self.budget.window_s / 4, self.budget_ms[source.name]
            # (from the end of the first window on: the start's own transients are no batch's cost)
            ledger = self._ledgers.setdefault(source.name, CostLedger(self._started + self.budget.window_s, bin_s,
                                                                      horizon))
            ledger.account(lambda since: source.count_overlap(since, limit_ms, bin_s, self._spans), self._spans, now)
            cost = ledger.cost()
            if cost is None:
                continue
            self.costs[source.name] = cost
            if cost.plain(self.budget.evidence_z):
                duties[source.name] = cost.duty(ALLOWED_SLOW_SHARE * self.budget.target,
                                                self.baseline_share.get(source.name, cost.background))
        own = [duties[s.name] for s in counting if s.name in duties and not is_proxy(s)]
        return min(own or duties.values(), default=None)

    def _took_ms(self) -> float:
        """How long the current setting's batches ran, on average (one batch's time jitters); the
        last batch's before one of them ends."""
        recent = [end - start for start, end in self._spans[-RECENT_BATCHES:] if start >= self._last_change]
        recent = recent or [end - start for start, end in self._spans[-1:]]
        return 1000.0 * sum(recent) / len(recent) if recent else 0.0

    def _show_p99(self, now: float) -> None:
        """The counted sources' p99 for the display and the log (a source without a new reading
        shows its last one); once per window, as it sorts every sample since the change of setting."""
        self._shown_at = now
        for source in self.sources:
            if counts_slow(source):
                value = source.read(self._last_change)
                if value is not None:
                    self.readings_ms[source.name] = value

    def force_batch_size(self, batch_size: int) -> None:
        """A lock-timeout retry shrank the batch outside the controller."""
        self.setting = clamp_setting(replace(self.setting, batch_size=batch_size), self.bounds)
        self._last_change = time.monotonic()

    def status(self) -> str:
        """One line for the progress display: how much of the budget is in use."""
        s = self.setting
        if self.usage is None:
            return f"latency budget {_fmt_ms(self.budget_ms)}, batch {s.batch_size}, pause {s.pause_ms:g} ms"
        # usage: a counted source's share of requests over its budget against the 1 % a p99 allows,
        # a p99-only source's reading against its budget; either way 100 % is at the budget
        allowed = "" if self.allowed_duty is None else f" (cost allows batches {self.allowed_duty:.1%} of the time)"
        return (f"latency p99 {_fmt_ms(self.readings_ms)}, budget {_fmt_ms(self.budget_ms)}: {self.usage:.0%} of "
                f"budget in use, batch {s.batch_size}, pause {s.pause_ms:g} ms{allowed}")

    def close(self) -> None:
        for source in self.sources:
            source.close()


def _fmt_ms(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} ms" for k, v in values.items()) if len(values) > 1 else \
        next((f"{v:.2f} ms" for v in values.values()), "-")
