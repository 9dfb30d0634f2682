"""The transition check's provider: the engine-side check that runs before anything it guards.

``check(olds, news)`` judges the move from the applied record (``news["previous"]``,
read back through the self StackReference) to the target, the applied history and
every time gate, taking the current time itself.
"""

from datetime import datetime, timedelta, timezone

import dill
import pytest

import components.transition_check as transition_check
from bazbii_plan.judging import judged_by
from bazbii_plan.record import plan_digests, target_record
from bazbii_plan.walk import record_by_walking
from components.phase_gate import PhaseGateProvider
from components.transition_check import GATE_MARKER, TransitionCheckProvider

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


def check_inputs(config, previous, *, source="stack-output", override=None):
    digests = plan_digests(config.plan)
    return {
        "gate": GATE_MARKER,
        "stepNames": {name: track.names() for name, track in config.plan.tracks.items()},
        "trackKeys": {name: track.key for name, track in config.plan.tracks.items()},
        "target": target_record(config.current, config.state().to_config(), digests,
                                judged_by(config.plan, config.metrics)),
        "previous": previous,
        "previousSource": source,
        "override": override,
        "stepDigests": digests,
    }


@pytest.fixture
def clock(monkeypatch):
    """Set the time ``check()`` reads (it takes ``datetime.now`` itself; no input carries a time)."""
    box = {"now": T0}

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return box["now"]

    monkeypatch.setattr(transition_check, "datetime", Clock)
    return box


def failures(inputs, olds=None, live_gate=False):
    """The check's failures; its live gate (which needs metrics, tests/analysis) only with ``live_gate``."""
    if live_gate:
        return [f.reason for f in TransitionCheckProvider().check(olds or {}, inputs).failures]
    return [f.reason for f in transition_check.check_failures(inputs, transition_check.datetime.now(timezone.utc),
                                                              live_gate=False)]


def test_check_allows_one_step_from_the_applied_record(prod, clock):
    applied = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    assert failures(check_inputs(prod.with_steps(infra="traffic-50"), applied)) == []


def test_check_denies_a_jump_even_without_a_policy_pack(prod, clock):
    applied = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    result = TransitionCheckProvider().check({}, check_inputs(prod.with_steps(infra="traffic-100"), applied))
    assert len(result.failures) == 1
    assert result.failures[0].property == ""  # the engine then prints the reason alone, not the record first
    assert "skipping ['traffic-50']" in result.failures[0].reason


def test_check_judges_the_applied_record_not_its_own_old_inputs(prod, clock):
    # This resource is applied first; after a failed update its old inputs name a target that was
    # never fully applied. The record (stack output of the last successful update) decides.
    applied = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    half_applied = check_inputs(prod.with_steps(infra="traffic-50"), applied)
    assert failures(check_inputs(prod.with_steps(infra="traffic-50"), applied), olds=half_applied) == []
    assert failures(check_inputs(prod.with_steps(infra="traffic-100"), applied), olds=half_applied)


def test_check_fails_closed_on_a_never_deployed_stack(prod, clock):
    first = prod.with_steps(**prod.plan.first_steps())
    assert failures(check_inputs(first, None, source="none")) == []
    (failure,) = failures(check_inputs(prod, None, source="none"))
    assert "only the first step" in failure
    assert failures(check_inputs(prod, None, source="none", override="stack adopted from before the gate")) == []


def test_dns_time_gate_runs_inside_check_at_the_current_time(prod, clock):
    lowered = prod.with_steps(infra="traffic-10", dns="ttl-lowered")
    applied = record_by_walking(lowered, T0.isoformat())
    switch = check_inputs(prod.with_steps(infra="traffic-10", dns="switched"), applied)
    clock["now"] = T0 + timedelta(minutes=20)
    (failure,) = failures(switch)
    assert "record 'direct' switches A 203.0.113.11 -> A 203.0.113.12 only 20 min after" in failure
    assert "wait another 40 min" in failure
    clock["now"] = T0 + timedelta(hours=1, seconds=1)
    assert failures(switch) == []  # the very same inputs, judged later


def test_urgent_dns_rollback_minutes_after_the_switch_passes(prod, clock):
    switched = prod.with_steps(infra="traffic-10", dns="switched")
    # The TTL was lowered and the switch applied only five minutes ago.
    applied = record_by_walking(switched, (T0 - timedelta(minutes=5)).isoformat())
    clock["now"] = T0
    assert failures(check_inputs(prod.with_steps(infra="traffic-10", dns="ttl-lowered"), applied)) == []
    # Moving forward again that soon is still held back.
    relapse = record_by_walking(prod.with_steps(infra="traffic-10", dns="ttl-lowered"), (T0 - timedelta(minutes=5)).isoformat())
    assert any("only 5 min after" in f for f in failures(check_inputs(switched, relapse)))


def _edited(prod, track, step, **fields):
    plan = prod.plan.model_copy(deep=True)
    index = plan.tracks[track].index(step)
    plan.tracks[track].steps[index] = plan.tracks[track].steps[index].model_copy(update=fields)
    return type(prod)(plan, prod.base, prod.current, prod.override, prod.metrics)


def test_editing_an_applied_step_is_denied_naming_it(prod, clock):
    applied = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    edited = _edited(prod, "infra", "replica-streaming", reversible=False)
    (failure,) = failures(check_inputs(edited.with_steps(infra="traffic-10"), applied))
    assert "applied step 'replica-streaming' of track 'infra' was edited after it was applied" in failure
    assert failures(check_inputs(edited.with_steps(infra="traffic-10"), applied, override="history rewritten by hand, see incident 42")) == []
    # Editing a step that was not applied yet is a plan change like any other.
    later = _edited(prod, "infra", "traffic-100", summary="all traffic on server2")
    assert failures(check_inputs(later.with_steps(infra="traffic-10"), applied)) == []


def test_reordering_or_removing_an_applied_step_is_denied_naming_it(prod, clock):
    applied = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    plan = prod.plan.model_copy(deep=True)
    steps = plan.tracks["infra"].steps
    steps[1], steps[2] = steps[2], steps[1]
    reordered = type(prod)(plan, prod.base, prod.with_steps(infra="traffic-10").current)
    reasons = failures(check_inputs(reordered, applied))
    assert any("applied step 'replica-streaming' of track 'infra' moved from position 3 to 2" in r for r in reasons), reasons

    plan = prod.plan.model_copy(deep=True)
    del plan.tracks["dns"].steps[1]  # ttl-lowered, applied
    removed = type(prod)(plan, prod.base, dict(prod.current, infra="traffic-10", dns="baseline"))
    reasons = failures(check_inputs(removed, record_by_walking(prod.with_steps(infra="traffic-10"), None)))
    assert any("applied step 'ttl-lowered' of track 'dns' was removed from the plan" in r for r in reasons), reasons


def test_diff_follows_the_records_not_the_provider_pickle(prod):
    inputs = check_inputs(prod, None)
    assert TransitionCheckProvider().diff("id", dict(inputs, __provider="old"), dict(inputs, __provider="new")).changes is False
    assert TransitionCheckProvider().diff("id", inputs, check_inputs(prod.with_steps(infra="traffic-50"), None)).changes is True


def test_old_gate_provider_path_still_unpickles():
    # The state of a stack deployed before the split holds a pickle of components.phase_gate.PhaseGateProvider;
    # the engine unpickles it to delete or update that resource.
    provider = dill.loads(dill.dumps(PhaseGateProvider(), recurse=True))
    assert isinstance(provider, TransitionCheckProvider)
    assert type(provider).__module__ == "components.phase_gate"


# --------------------------------------------------------------------------- what judges a step: the applied record
def _with_criteria(config, track, step, criteria):
    return _edited(config, track, step, criteria=criteria)


def _time_only_gate(prod, soak):
    """The shipped plan with traffic-50's gate reduced to its soak (no metric to reach in a unit test)."""
    infra = prod.plan.tracks["infra"]
    criteria = infra.steps[infra.index("traffic-50")].criteria.model_copy(update={"soak": soak, "signals": []})
    return _with_criteria(prod, "infra", "traffic-50", criteria)


def test_the_live_gate_is_the_applied_records_not_the_proposed_one(prod, clock):
    applied_plan = _time_only_gate(prod, "24h")
    applied = record_by_walking(applied_plan.with_steps(infra="traffic-10"), (T0 - timedelta(hours=2)).isoformat())
    # The pull request applies traffic-50 and shortens its soak to nothing in the same change.
    proposed = _time_only_gate(prod, "0s").with_steps(infra="traffic-50")
    reasons = failures(check_inputs(proposed, applied), live_gate=True)
    assert any("live gate of infra step 'traffic-50'" in r and "FAIL         soak [previous step]: 2h" in r
               and "threshold >= 1d" in r for r in reasons), reasons
    assert any("bazbii:plan.infra.steps[5].criteria.soak changes '24h' -> '0s' (applied: '24h')" in r
               for r in reasons), reasons
    # Unchanged, and past its soak: the same move passes the check (the applied gate, met).
    clock["now"] = T0 + timedelta(hours=23)
    assert failures(check_inputs(applied_plan.with_steps(infra="traffic-50"), applied), live_gate=True) == []


def test_a_pointer_move_changes_no_gate_even_with_an_override(prod, clock):
    applied = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    loosened = _time_only_gate(prod, "24h").with_steps(infra="traffic-50")
    (reason,) = failures(check_inputs(loosened, applied, override="incident 42, approved by the lead"))
    assert "bazbii:plan.infra.steps[5].criteria.signals changes" in reason and "(applied: None)" not in reason
    assert "keep bazbii:phase at 'traffic-10'" in reason
    # The same edit with no pointer moving is a safety-parameter change: the policy pack reviews it.
    assert failures(check_inputs(loosened.with_steps(infra="traffic-10"), applied)) == []


def test_a_record_exported_before_judged_by_is_not_refused(prod, clock):
    from tests.gate.test_applied_record import exported_before_judging

    applied = exported_before_judging(
        record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00"))
    assert failures(check_inputs(prod.with_steps(infra="traffic-50"), applied)) == []
    # Its history is still compared, by the definition digest it has.
    edited = _edited(prod, "infra", "replica-streaming", reversible=False)
    (reason,) = failures(check_inputs(edited.with_steps(infra="traffic-10"), applied))
    assert "applied step 'replica-streaming' of track 'infra' was edited" in reason
    # A gate edit of an applied step is history once the record has gate digests, not before.
    criteria = prod.plan.tracks["infra"].steps[4].criteria.model_copy(update={"min_samples": 500})
    regated = _with_criteria(prod, "infra", "traffic-10", criteria).with_steps(infra="traffic-10")
    assert failures(check_inputs(regated, applied)) == []
    current = record_by_walking(prod.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    (reason,) = failures(check_inputs(regated, current))
    assert "what judges applied step 'traffic-10' of track 'infra' (bazbii:plan.infra.steps[4].criteria" in reason
