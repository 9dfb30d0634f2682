"""What a batch costs the application (``batchcost``), and the throttle that runs batches as much
of the time as that cost allows, without a database.

The requests are plain (finished at, ms) samples and the batches (start, end) spans, as the probe
and the benchmark's load keep them; the sources are in-process objects with scripted counts (no
server is involved or imitated).
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bazbii_db.migrations.batchcost import BatchCost, CostLedger
from bazbii_db.migrations.throttle import (ControlBounds, LatencyBudget, LatencyThrottle, Setting, clamp_setting,
                                           overlap_by_bin, retime)

BOUNDS = ControlBounds(min_batch_size=50, max_batch_size=10_000, max_pause_ms=500, pause_step_ms=5,
                       decrease=0.5, increase=0.15, headroom=0.8, max_hold_ms=40, batch_ms=5)


def test_a_request_is_busy_when_its_interval_met_a_batch():
    spans = [(1.00, 1.01), (1.10, 1.11)]
    samples = [
        (1.005, 1.0),  # inside the first batch
        (1.02, 15.0),  # started 1.005, ended after it: overlapped, and slow (limit 10 ms)
        (1.05, 2.0),  # between the batches
        (1.12, 30.0),  # started 1.09, before the second batch, ended after it: slow and busy
        (1.30, 20.0),  # after every batch: slow, idle
    ]
    assert overlap_by_bin(samples, 1.0, 10.0, 0.1, spans) == [[1, 2, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0],
                                                               [0, 0, 1, 1]]
    assert overlap_by_bin(samples, 1.2, 10.0, 0.1, spans) == [[0, 0, 0, 0], [0, 0, 1, 1]]
    assert overlap_by_bin(samples, 1.0, 10.0, 0.1, []) == [[0, 0, 1, 3], [0, 0, 1, 1], [0, 0, 0, 0],
                                                            [0, 0, 1, 1]]


class Counts:
    """``count(since)`` for a ledger: the bins the test sets, from wherever they were asked."""

    def __init__(self) -> None:
        self.bins: list[list[int]] = []
        self.asked: list[float] = []

    def __call__(self, since: float) -> list[list[int]]:
        self.asked.append(since)
        return [list(b) for b in self.bins]


def test_the_ledger_counts_each_bin_once_and_a_batch_seconds_cost_beyond_the_idle_share():
    ledger, count = CostLedger(since=10.0, bin_s=1.0, horizon_s=5.0), Counts()
    spans = [(10.2, 10.3), (10.6, 10.7), (11.5, 11.6), (12.9, 13.0)]  # 0.2 s of batches in the first bin
    # bin 0: 100 busy requests, 11 slow; 900 idle, 9 slow (1 %): the 100 busy would have had 1 slow
    count.bins = [[11, 100, 9, 900], [6, 50, 0, 950], [0, 0, 0, 0]]
    ledger.account(count, spans, now=13.0)
    assert count.asked == [10.0] and ledger.cursor == 12.0  # the last bin may still fill: left for later
    cost = ledger.cost()
    # (11 - 1) + (6 - 0) slow requests the batches added, over 0.3 s of batches
    assert cost.per_batch_second == pytest.approx(16 / 0.3)
    assert cost.requests_per_s == pytest.approx(1000.0) and cost.background == pytest.approx(9 / 1850)
    count.bins = [[0, 0, 20, 980], [0, 0, 0, 0]]  # the third bin, now complete: a burst with no batch running
    ledger.account(count, spans, now=13.5)
    assert count.asked[-1] == 12.0 and ledger.cursor == 13.0
    cost = ledger.cost()
    assert cost.per_batch_second == pytest.approx(16 / 0.3)  # no batch ran in it: the cost is the same
    assert cost.background == pytest.approx(29 / 2830)
    count.bins = [[0, 0, 0, 0]] * 2 + [[0, 0, 0, 1000]] + [[0, 0, 0, 0]]  # a gap with no samples at all
    ledger.account(count, spans, now=16.1)
    assert ledger.cost().requests_per_s == pytest.approx((980 + 1000) / 2)  # the two bins with requests: no dilution
    count.bins = [[0, 0, 0, 1000]] * 2 + [[0, 0, 0, 0]]
    ledger.account(count, spans, now=18.5)
    assert [start for start, _, _ in ledger.bins] == [14.0, 15.0, 16.0, 17.0]  # horizon_s: 5 s
    assert ledger.cost() is None  # no batch in the horizon: no cost to tell


def test_the_cost_is_plain_only_beyond_its_error_and_sets_the_share_of_time_batches_may_run():
    steady = CostLedger(0.0, 1.0, 60.0)
    steady.account(lambda since: [[11, 100, 2, 900]] * 10 + [[0, 0, 0, 0]], [(k + 0.5, k + 0.6) for k in range(10)],
                   10.0)
    cost = steady.cost()
    assert cost.per_batch_second == pytest.approx((11 - 100 * 2 / 900) / 0.1)
    assert cost.plain(2.0)
    # 0.8 % aimed at, 0.3 % slow anyway: 5 slow requests a second to spend, at 108 a second of batches
    assert cost.duty(0.008, 0.003) == pytest.approx(0.005 * 1000 / cost.per_batch_second)
    assert cost.duty(0.008, 0.009) == 0.0  # the background alone is over the aim: no room for batches
    assert BatchCost(0.0, 1.0, 0.0, 1000.0).duty(0.008, 0.0) == math.inf
    assert not BatchCost(0.0, 1.0, 0.0, 1.0).plain(2)
    # the same slow requests, all in one bin: the spread between bins makes it no evidence
    bursty = CostLedger(0.0, 1.0, 60.0)
    bursty.account(lambda since: [[110, 100, 20, 900]] + [[0, 100, 0, 900]] * 9 + [[0, 0, 0, 0]],
                   [(k + 0.5, k + 0.6) for k in range(10)], 10.0)
    burst = bursty.cost()
    assert burst.per_batch_second == pytest.approx(cost.per_batch_second, rel=0.05) and not burst.plain(2.0)


def within(s: Setting, b: ControlBounds) -> bool:
    return b.min_batch_size <= s.batch_size <= b.max_batch_size and 0 <= s.pause_ms <= b.max_pause_ms


def rows_per_ms(s: Setting, took: float, batch: int) -> float:
    """Rows a ms of a setting whose batches of ``batch`` rows take ``took`` ms (as long per row)."""
    return s.batch_size / (took * s.batch_size / batch + s.pause_ms)


@settings(max_examples=10000, deadline=None)
@given(st.builds(Setting, st.integers(50, 10_000), st.floats(0, 500)), st.floats(0, 2),
       st.floats(0.05, 30), st.booleans())
def test_retime_stays_in_bounds_moves_toward_the_share_and_not_faster_when_held(setting, duty, took, faster):
    new = retime(setting, duty, took, None, BOUNDS, increase=0.5, faster=faster)
    assert within(new, BOUNDS)
    before, after = rows_per_ms(setting, took, setting.batch_size), rows_per_ms(new, took, setting.batch_size)
    current = took / (took + setting.pause_ms)
    if duty > current * 1.05 and faster and setting.pause_ms >= 5:
        assert after > before  # faster, by at most half again
        assert after <= before * 1.5 * 1.0001 or new.pause_ms == 0
    if duty < current * 0.95 and not (setting.pause_ms == 500 and setting.batch_size == 50):
        assert after < before  # slower, by at most half (the first pause after back to back is a whole step)
        assert after >= before * 0.5 * 0.98 or new.batch_size == 50 or new.pause_ms == 5  # (whole rows)
    if not faster:
        assert after <= before * 1.0001


def test_retime_sets_the_pause_for_the_share_and_grows_short_batches_first():
    # 1000 rows in 5 ms (batch_ms), 45 ms pause: 10 % of the time; the cost allows 8 %
    assert retime(Setting(1000, 45), 0.08, 5.0, None, BOUNDS, 0.5) == Setting(1000, pytest.approx(5 / 0.08 - 5))
    # allowed 40 %: half again at most (15 %)
    assert retime(Setting(1000, 45), 0.4, 5.0, None, BOUNDS, 0.5) == Setting(1000, pytest.approx(5 / 0.15 - 5))
    # a 2.5 ms batch grows by half again first; the pause keeps the share with the longer batch
    assert retime(Setting(500, 22.5), 0.1, 2.5, None, BOUNDS, 0.5) == Setting(750, pytest.approx(3.75 / 0.1 - 3.75))
    # no room at all: halves the share at once, down to the longest pause, then smaller batches
    assert retime(Setting(1000, 45), 0.0, 5.0, None, BOUNDS, 0.5) == Setting(1000, 95)
    assert retime(Setting(1000, 495), 0.0, 5.0, None, BOUNDS, 0.5) == Setting(pytest.approx(502, abs=1), 500)
    assert retime(Setting(1000, 45), 0.1 * 1.02, 5.0, None, BOUNDS, 0.5) == Setting(1000, 45)  # under a pause step
    assert retime(Setting(1000, 2), 1.0, 5.0, None, BOUNDS, 0.5) == Setting(1000, 0)  # as fast as it goes
    assert retime(Setting(1000, 45), 0.1, 5.0, 80.0, BOUNDS, 0.5).batch_size == 500  # the hold cap


class Attributing:
    """A source that counts its requests split by whether they overlapped a batch (as the probe and
    the load do): ``bins`` is what it answers, [slow busy, busy, slow idle, idle] per bin."""

    def __init__(self, name: str, proxy: bool = False):
        self.name, self.proxy, self.bins = name, proxy, [[0, 0, 0, 0]]
        self.spans: list = []

    def start(self) -> None:
        pass

    def read(self, since: float) -> float | None:
        return 1.0

    def count_slow(self, since: float, limit_ms: float, bin_s: float) -> list[list[int]]:
        return [[b[0] + b[2], b[1] + b[3]] for b in self.bins]

    def count_overlap(self, since: float, limit_ms: float, bin_s: float, spans) -> list[list[int]]:
        self.spans = list(spans)
        return [list(b) for b in self.bins]

    def close(self) -> None:
        pass


def throttled(sources, window_s: float = 0.4, **kw) -> LatencyThrottle:
    t = LatencyThrottle(LatencyBudget(baseline_s=0.01, window_s=window_s, control_interval_s=0.0, **kw), sources,
                        Setting(1000, 95), BOUNDS)
    t.measure_baseline()
    t._started -= 2 * window_s  # (the first window after the start has passed, and the ledger's first bins)
    t._sized = True
    # a 5 ms batch in each of the ledger's bins (a quarter window each, from the end of the first window)
    first = t._started + window_s
    t._spans = [(first + (k + 0.5) * window_s / 4, first + (k + 0.5) * window_s / 4 + 0.005) for k in range(8)]
    return t


def test_the_throttle_runs_batches_as_much_of_the_time_as_their_cost_allows():
    app = Attributing("app")
    t = throttled([app])
    # 100 busy requests of 1000 a bin, 11 slow; 2 slow of the 900 idle: plainly the batches' cost
    app.bins = [[11, 100, 2, 900]] * 6
    time.sleep(0.11)
    first = t.after_batch(5.0)
    assert app.spans and app.spans[-1][1] - app.spans[-1][0] == pytest.approx(0.005)  # the batch just run
    cost = t.costs["app"]
    duty = cost.duty(0.008, t.baseline_share["app"])
    assert cost.plain(2.0) and t.log[-1].allowed_duty == pytest.approx(duty)
    assert f"cost allows batches {duty:.1%} of the time" in t.status()  # the progress display
    assert first.slower_than(Setting(1000, 95)) or first.pause_ms < 95  # it moved
    for _ in range(8):  # toward the share of time the cost allows, a step at a time
        time.sleep(0.11)
        t.after_batch(5.0)
    took = sum(end - start for start, end in t._spans[-5:]) * 1000 / 5
    assert took / (took + t.setting.pause_ms) == pytest.approx(t.log[-1].allowed_duty, rel=0.25)
    assert 0 < duty < 1


def test_a_p99_source_still_vetoes_what_the_cost_allows_and_the_applications_cost_beats_a_proxys():
    app, probe, prom = Attributing("app"), Attributing("probe", proxy=True), _P99("prometheus")
    t = throttled([app, probe, prom])
    app.bins = [[2, 100, 2, 900]] * 6  # a cheap batch for the application: room to speed up
    probe.bins = [[1, 10, 0, 90]] * 6  # a dear one for the probe (1 % slow: over the aim, not plainly)
    time.sleep(0.11)
    faster = t.after_batch(5.0)
    assert t.costs["probe"].plain(2.0) and t.costs["probe"].duty(0.008, 0.0) < 0.05  # would slow down
    assert faster.pause_ms < 95  # the application's own cost decides, not the proxy's
    prom.value = 1.4  # 93 % of its 1.5 ms budget: over the aim, on a p99 that is not plain yet: no faster
    time.sleep(0.11)
    assert t.after_batch(5.0).pause_ms >= faster.pause_ms
    prom.value = 3.0  # a gross breach: slows down, whatever the cost allows
    time.sleep(0.11)
    assert t.after_batch(5.0).pause_ms > faster.pause_ms


class _P99:
    def __init__(self, name: str):
        self.name, self.value = name, 1.0

    def start(self) -> None:
        pass

    def read(self, since: float) -> float | None:
        return self.value

    def close(self) -> None:
        pass


def test_without_a_plain_cost_the_throttle_judges_the_share_as_before():
    app = Attributing("app")
    t = throttled([app])
    app.bins = [[0, 100, 0, 900]] * 6  # no slow request at all: no cost to tell, plain headroom
    time.sleep(0.11)
    assert t.after_batch(5.0).pause_ms == pytest.approx(100 / 1.5 - 5)  # the slow start's additive increase
    assert t.log[-1].allowed_duty is None and clamp_setting(t.setting, BOUNDS) == t.setting


def test_a_counted_sources_plain_breach_still_slows_down_with_the_cost_known():
    app = Attributing("app")
    t = throttled([app])
    app.bins = [[2, 100, 0, 900]] * 6  # cheap batches: faster
    time.sleep(0.11)
    fast = t.after_batch(5.0)
    assert fast.pause_ms < 95 and t.log[-1].allowed_duty is not None
    app.bins = [[8, 100, 40, 900]] * 6  # 4.8 % slow, most of them with no batch running: a burst
    time.sleep(0.11)
    slowed = t.after_batch(5.0)
    assert t.log[-1].allowed_duty is not None and slowed.pause_ms > fast.pause_ms
