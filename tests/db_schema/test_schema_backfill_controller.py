"""The latency throttle's controller and configuration, without a database and without sleeping.

The throttle takes its clock as an argument: every test drives a scripted clock (``Clock``) and
scripted sources (plain objects whose readings the test sets: no server is involved or imitated).
Hypothesis checks the controller's invariants over any sequence of batches and readings.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bazbii_db.migrations.probe import percentile
from bazbii_db.migrations.spec import BackfillSpec, MigrationSpecError
from bazbii_db.migrations.throttle import (BREACH, CLEAN, DECREASE, HOLD, MIN_DUTY, LatencyBudget, LatencyConfigError,
                                           LatencyProbeFailed, LatencyThrottle, Setting)

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class P99:
    """A source giving a p99 only (as Prometheus does); ``value`` None: no new reading."""

    def __init__(self, name: str, value: float | None):
        self.name, self.value, self.closed = name, value, False

    def start(self) -> None:
        pass

    def read(self, since: float) -> float | None:
        return self.value

    def close(self) -> None:
        self.closed = True


class Counted(P99):
    """A source that also counts its requests slower than a limit (as the probe does): ``slow`` of ``total``
    since the window began, whatever the limit (the test sets what the source saw)."""

    def __init__(self, name: str, value: float, proxy: bool = False):
        super().__init__(name, value)
        self.slow, self.total, self.proxy, self.asked = 0, 0, proxy, []

    def count_slow(self, since: float, limit_ms: float) -> tuple[int, int]:
        self.asked.append((since, limit_ms))
        return self.slow, self.total


def started(budget: LatencyBudget, *sources, first: Setting = Setting(1000, 0), **kw) -> tuple[LatencyThrottle, Clock]:
    clock = Clock()
    throttle = LatencyThrottle(budget, list(sources), first, clock=clock, **kw)
    throttle.measure_baseline(sleep=clock.advance)
    return throttle, clock


# --------------------------------------------------------------------------------------
# the budget
# --------------------------------------------------------------------------------------
def test_the_budget_is_a_ratio_of_the_baseline_with_a_floor_in_ms():
    slow_app, fast_app = P99("slow", 8.0), P99("fast", 0.9)
    t, clock = started(LatencyBudget(), slow_app, fast_app)
    assert clock.now == 1010.0  # the baseline waited baseline_s on the given clock
    assert t.baseline_ms == {"slow": 8.0, "fast": 0.9}
    # 1.5 x 8 ms leaves 4 ms; 1.5 x 0.9 ms would leave 0.45 ms, under the 1 ms floor
    assert t.budget_ms == {"slow": 12.0, "fast": pytest.approx(1.9)}
    no_floor, _ = started(LatencyBudget(floor_ms=0), P99("fast", 0.9))
    assert no_floor.budget_ms == {"fast": pytest.approx(1.35)}
    fixed, _ = started(LatencyBudget(budget_ms=2.0), P99("a", 0.3), P99("b", 8.0))
    assert fixed.budget_ms == {"a": 2.0, "b": 2.0}  # an absolute budget holds for every source


def test_a_proxy_gets_the_applications_allowance_in_ms():
    probe, app = Counted("probe", 0.3, proxy=True), P99("prometheus", 8.0)
    t, _ = started(LatencyBudget(), probe, app)
    # the application may lose 4 ms (1.5 x 8 ms); so may the database part of its requests
    assert t.budget_ms == {"probe": pytest.approx(4.3), "prometheus": 12.0}
    alone, _ = started(LatencyBudget(), Counted("probe", 0.3, proxy=True))
    assert alone.budget_ms == {"probe": pytest.approx(1.3)}  # no application source: its own floor


def test_a_source_without_a_baseline_reading_stops_the_throttle_naming_it():
    clock = Clock()
    with pytest.raises(LatencyProbeFailed, match="prometheus: no reading during the 10s baseline"):
        LatencyThrottle(LatencyBudget(), [P99("prometheus", None)], Setting(100, 0), clock=clock).measure_baseline(
            sleep=clock.advance)
    failing = P99("prometheus", math.inf)  # unreachable: reads as infinitely slow, not a baseline
    failing.last_error = "metrics endpoint http://x is unreachable"
    with pytest.raises(LatencyProbeFailed, match=r"\(metrics endpoint http://x is unreachable\)"):
        LatencyThrottle(LatencyBudget(), [failing], Setting(100, 0), clock=clock).measure_baseline(sleep=clock.advance)
    with pytest.raises(LatencyProbeFailed, match="baseline 0 ms gives no budget"):
        LatencyThrottle(LatencyBudget(floor_ms=0), [P99("probe", 0.0)], Setting(100, 0), clock=clock
                        ).measure_baseline(sleep=clock.advance)


def test_a_stop_request_during_the_baseline_ends_it_without_a_budget():
    clock = Clock()
    t = LatencyThrottle(LatencyBudget(), [P99("prometheus", None)], Setting(100, 0), clock=clock)
    # the backfill's sleep returns true when a stop is requested: no reading is asked for, nothing fails
    assert t.measure_baseline(sleep=lambda seconds: True) is False and t.budget_ms == {}
    ready, _ = started(LatencyBudget(), P99("prometheus", 2.0))
    assert ready.budget_ms == {"prometheus": 3.0}


# --------------------------------------------------------------------------------------
# chunk size and pause
# --------------------------------------------------------------------------------------
def test_batches_are_sized_to_the_chunk_time_and_the_pause_follows_from_the_duty():
    probe = Counted("probe", 0.3)
    t, clock = started(LatencyBudget(chunk_ms=5.0, start_duty=0.1), probe)
    # 1000 rows in 8 ms: 125 rows a ms, 625 rows run 5 ms; at 10 % duty an 8 ms batch is followed by 72 ms
    assert t.after_batch(8.0) == Setting(625, pytest.approx(72.0))
    # 625 rows in 2.5 ms (250 a ms): the running average, 187.5 rows a ms, gives 937 rows
    assert t.after_batch(2.5) == Setting(937, pytest.approx(22.5))
    for _ in range(20):
        t.after_batch(5.0 * t.setting.batch_size / 937)
    assert abs(t.setting.batch_size - 937) <= 1  # a steady row cost: a steady batch
    slow = t.after_batch(80.0 * t.setting.batch_size / 937)  # a batch that held its locks 80 ms (16x)
    assert slow.batch_size < 937 / 1.8 and slow.pause_ms == pytest.approx(80.0 * 9)  # a longer pause as well
    small, _ = started(LatencyBudget(), Counted("probe", 0.3), min_batch_size=100, max_batch_size=2000)
    assert small.after_batch(1000.0).batch_size == 100 and small.after_batch(0.001).batch_size == 2000
    assert small.after_batch(0.0).batch_size == 2000  # (a batch timed at 0 ms is no division by zero)
    t.force_batch_size(10)  # a lock-timeout retry halves outside the controller, within the bounds
    assert t.setting.batch_size == 50


# --------------------------------------------------------------------------------------
# the duty: AIMD
# --------------------------------------------------------------------------------------
def test_a_significant_breach_halves_the_duty_at_once_and_a_clean_window_adds_to_it():
    probe = Counted("probe", 0.3)
    budget = LatencyBudget(start_duty=0.2, increase=0.05, window_s=2.0)
    t, clock = started(budget, probe)
    window = clock.now
    probe.slow, probe.total = 2, 100  # 2 % of 100 probes: over 1 %, but within 2 Poisson errors
    clock.advance(0.5)
    t.after_batch(5.0)
    assert t.duty == 0.2 and t.log == [] and probe.asked[-1] == (window, pytest.approx(1.3))
    probe.slow = 4  # 4 of 100: 1 + 2 x 1 exceeded: a significant breach, acted on before the window ends
    clock.advance(0.1)
    assert t.after_batch(5.0).pause_ms == pytest.approx(5.0 * 0.9 / 0.1)
    assert t.duty == pytest.approx(0.1) and t.log[-1].verdict == BREACH and t.log[-1].usage == pytest.approx(4.0)
    probe.slow, probe.total = 0, 150
    clock.advance(1.9)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.1) and probe.asked[-1][0] == clock.now - 1.9  # a new window began
    clock.advance(0.1)  # a whole window within the budget: additive increase
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.15) and t.log[-1].verdict == CLEAN
    probe.slow, probe.total = 3, 200  # 1.5 %: over the 1 % a p99 allows, not significantly: hold
    clock.advance(2.0)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.15) and t.log[-1].verdict == HOLD
    assert "15.0% of the time" in t.status() and "150% of budget in use" in t.status()
    assert [step.verdict for step in t.log] == [BREACH, CLEAN, HOLD] and t.max_usage == pytest.approx(4.0)


def test_the_duty_stays_between_its_floor_and_one():
    probe = Counted("probe", 0.3)
    t, clock = started(LatencyBudget(start_duty=0.5, increase=0.3), probe)
    for _ in range(3):
        clock.advance(2.0)
        t.after_batch(5.0)
    assert t.duty == 1.0 and t.setting.pause_ms == 0.0  # back to back
    probe.slow, probe.total = 50, 50  # a stall: every probe slow
    for _ in range(12):
        clock.advance(0.01)
        t.after_batch(5.0)
    assert t.duty == MIN_DUTY and t.setting.pause_ms == pytest.approx(5.0 * (1 - MIN_DUTY) / MIN_DUTY)


def test_a_p99_source_breaches_on_a_reading_over_its_budget_and_holds_until_a_reading_within():
    prom = P99("prometheus", 4.0)
    t, clock = started(LatencyBudget(start_duty=0.2, increase=0.05), prom)  # budget 6 ms
    prom.value = None  # between scrapes: no reading
    clock.advance(2.0)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.25)  # a clean window: no reading over the budget
    prom.value = 9.0
    clock.advance(0.1)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.125) and t.readings_ms == {"prometheus": 9.0}
    prom.value = None  # its last reading was over: windows hold until a reading within
    clock.advance(2.0)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.125) and t.log[-1].verdict == HOLD
    prom.value = 5.0
    clock.advance(2.0)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.175) and t.log[-1].verdict == CLEAN
    t.close()
    assert prom.closed


def test_any_sources_breach_counts_and_a_clean_window_needs_every_source_within():
    probe, prom = Counted("probe", 0.3, proxy=True), P99("prometheus", 1.0)
    t, clock = started(LatencyBudget(start_duty=0.2, increase=0.05), probe, prom)
    probe.total, prom.value = 200, 1.5  # the probe within, Prometheus at 75 % of its 2 ms budget
    clock.advance(2.0)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.25)
    probe.slow = 3  # 1.5 %: the probe holds the increase back
    clock.advance(2.0)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.25) and t.log[-1].verdict == HOLD
    probe.slow, prom.value = 0, 2.5
    clock.advance(0.1)
    t.after_batch(5.0)
    assert t.duty == pytest.approx(0.125) and t.log[-1].verdict == BREACH


@st.composite
def events(draw):
    """A batch: how long it ran, how long after the previous one it ended, and what the sources saw."""
    total = draw(st.integers(0, 400))
    return (draw(st.floats(0.0, 500.0)), draw(st.floats(0.0, 3.0)), draw(st.integers(0, total)), total,
            draw(st.one_of(st.none(), st.floats(0.0, 50.0))))


@settings(max_examples=10_000, deadline=None)
@given(st.floats(MIN_DUTY, 1.0), st.floats(0.001, 1.0), st.floats(0.1, 50.0), st.integers(1, 5000),
       st.integers(0, 100_000), st.lists(events(), min_size=1, max_size=30))
def test_the_controller_keeps_its_invariants(start_duty, increase, chunk_ms, smallest, span, batches):
    probe, prom = Counted("probe", 0.5, proxy=True), P99("prometheus", 2.0)
    budget = LatencyBudget(start_duty=start_duty, increase=increase, chunk_ms=chunk_ms)
    t, clock = started(budget, probe, prom, min_batch_size=smallest, max_batch_size=smallest + span)
    for took, gap, slow, total, p99 in batches:
        before, logged = t.duty, len(t.log)
        probe.slow, probe.total, prom.value = slow, total, p99
        clock.advance(gap)
        s = t.after_batch(took)
        assert smallest <= s.batch_size <= smallest + span
        assert MIN_DUTY <= t.duty <= 1.0
        # the pause makes the batches run the duty's share of the time (gh-ost's nice ratio)
        ran = max(took, 0.01)
        assert s.pause_ms >= 0 and ran / (ran + s.pause_ms) == pytest.approx(t.duty)
        if len(t.log) == logged:
            assert t.duty == before  # no verdict, no change
            continue
        verdict = t.log[-1].verdict
        if verdict == BREACH:
            assert t.duty == pytest.approx(max(MIN_DUTY, before * DECREASE))
        elif verdict == CLEAN:
            assert t.duty == pytest.approx(min(1.0, before + increase))
            assert slow <= total * 0.01 and (p99 is None or p99 <= t.budget_ms["prometheus"])
        else:
            assert t.duty == before


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, words", [
    ("budget_ratio", 1.0, "above 1.0"),
    ("budget_ratio", "2", "a number"),
    ("floor_ms", -1, "0 or more"),
    ("budget_ms", 0, "positive"),
    ("baseline_s", -1, "positive"),
    ("probe_query", " ", "non-empty"),
    ("prometheus_query", "", "non-empty"),
    ("probe", "yes", "true or false"),
    ("prometheus_interval_s", 0, "positive"),
    ("chunk_ms", 0, "positive"),
    ("chunk_ms", float("nan"), "a number"),
    ("window_s", True, "a number"),
    ("start_duty", 0, "in [0.005, 1]"),
    ("start_duty", 1.5, "in [0.005, 1]"),
    ("increase", 0, "in (0, 1]"),
])
def test_bad_latency_settings_name_the_key(key, value, words):
    with pytest.raises(LatencyConfigError) as exc:
        LatencyBudget(**{key: value})
    assert str(exc.value).startswith(f"latency.{key}: ") and words in str(exc.value)
    assert "\n" not in str(exc.value)


def test_backfill_config_takes_a_latency_table_and_names_bad_keys():
    from bazbii_db.migrations.backfill import BackfillConfig

    assert BackfillConfig(latency={"budget_ratio": 2.0}).latency == LatencyBudget(budget_ratio=2.0)
    assert BackfillConfig(latency=True).latency == LatencyBudget()
    with pytest.raises(LatencyConfigError, match=r"^latency.chunk_ms: must be positive"):
        BackfillConfig(latency={"chunk_ms": -1})
    with pytest.raises(LatencyConfigError, match=r"^latency: must be a table of settings or true, got 'fast'"):
        BackfillConfig(latency="fast")


def test_latency_table_in_the_migration_spec():
    base = dict(name="fill", table="t", set={"c": "1"})
    assert BackfillSpec.from_toml(base, "m.toml").latency is None
    assert BackfillSpec.from_toml(dict(base, latency=True), "m.toml").latency == LatencyBudget()
    spec = BackfillSpec.from_toml(dict(base, latency={"floor_ms": 2.0, "probe_query": "SELECT 1 FROM t"}), "m.toml")
    assert spec.latency.floor_ms == 2.0 and spec.latency.probe_query == "SELECT 1 FROM t"
    # tuning the throttle does not change what the backfill does to the rows
    assert spec.fingerprint() == BackfillSpec.from_toml(base, "m.toml").fingerprint()
    with pytest.raises(MigrationSpecError, match=r"^m.toml:1: backfill fill: latency.budget_ratio: must be above 1.0"):
        BackfillSpec.from_toml(dict(base, latency={"budget_ratio": 0.5}), "m.toml")
    with pytest.raises(MigrationSpecError, match=r"backfill fill: latency: unknown keys \['max_hold_ms'\]"):
        BackfillSpec.from_toml(dict(base, latency={"max_hold_ms": 40}), "m.toml")
    with pytest.raises(MigrationSpecError, match=r"backfill fill: latency: must be a table of settings or true"):
        BackfillSpec.from_toml(dict(base, latency=1.5), "m.toml")
    with pytest.raises(MigrationSpecError, match=r"backfill fill: target_batch_ms and latency both adapt"):
        BackfillSpec.from_toml(dict(base, latency=True, target_batch_ms=20), "m.toml")


def test_percentile_nearest_rank():
    assert percentile([], 99) == 0.0
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([5.0], 99) == 5.0


# --------------------------------------------------------------------------------------
# what imports what
# --------------------------------------------------------------------------------------
def imported(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add(f"{base}.{node.module or ''}".rstrip(".") if node.level else node.module)
    return names


def test_the_throttle_takes_its_sources_from_its_caller():
    """The throttle imports no source of its own: the migration CLI wires them in. (Which modules may import
    across bazbii_db and bazbii_analysis is the house rules' layering check, tests/docs/test_house_rules.py.)"""
    throttle = imported(REPO / "bazbii_db" / "migrations" / "throttle.py")
    assert not [m for m in throttle if m.split(".")[0] in ("psycopg", "httpx", "bazbii_analysis")], throttle
    assert "bazbii_analysis.latency" in imported(REPO / "bazbii_db" / "migrations" / "__main__.py")
    assert "time" not in imported(Path(__file__))  # the controller's tests run on the scripted clock
