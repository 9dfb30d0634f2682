"""The applied record's provider stamps the times when a step is really applied (create/update)."""

from datetime import datetime, timezone

import pytest

import bazbii_plan.record as record_module
from bazbii_plan.judging import judged_by
from bazbii_plan.record import parse_time, plan_digests, target_record
from components.applied_record import RECORD_MARKER, AppliedRecordProvider


def inputs(config, previous=None):
    """The record resource's inputs as the program registers them."""
    target = target_record(config.current, config.state().to_config(), plan_digests(config.plan),
                           judged_by(config.plan, config.metrics))
    return {"record": RECORD_MARKER, "applied": target, "previous": previous}


def exported_before_judging(record):
    """A record as a program before gate digests and judgedBy exported it."""
    old = {k: v for k, v in record.items() if k != "judgedBy"}
    old["history"] = {track: [{k: v for k, v in e.items() if k != "gateDigest"} for e in entries]
                      for track, entries in record["history"].items()}
    return old


@pytest.fixture
def clock(monkeypatch):
    box = {"now": "2026-11-01T00:00:00+00:00"}
    monkeypatch.setattr("components.applied_record.now_iso", lambda: box["now"])
    return box


def test_create_stamps_every_applied_step_now_without_a_previous_record(prod, clock):
    config = prod.with_steps(infra="traffic-10", dns="ttl-lowered")
    outs = AppliedRecordProvider().create(inputs(config)).outs["applied"]
    assert outs["steps"] == config.current
    assert {e["appliedAt"] for entries in outs["history"].values() for e in entries} == {clock["now"]}
    assert outs["dnsTtl"]["direct"] == {"ttl": 300, "since": clock["now"], "previousTtl": None}


def test_update_keeps_the_times_of_what_was_applied_and_stamps_the_new_step(prod, clock):
    provider = AppliedRecordProvider()
    lowered = provider.create(inputs(prod.with_steps(infra="traffic-10", dns="baseline"))).outs
    clock["now"] = "2026-11-02T00:00:00+00:00"
    lowered = provider.update("id", lowered, inputs(prod.with_steps(infra="traffic-10", dns="ttl-lowered"))).outs
    clock["now"] = "2026-11-03T00:00:00+00:00"
    after = provider.update("id", lowered, inputs(prod.with_steps(infra="traffic-50", dns="ttl-lowered"))).outs["applied"]
    assert after["since"] == {"infra": "2026-11-03T00:00:00+00:00", "dns": "2026-11-02T00:00:00+00:00",
                              "release": "2026-11-01T00:00:00+00:00", "schema": "2026-11-01T00:00:00+00:00",
                              "flags": "2026-11-01T00:00:00+00:00"}
    assert after["history"]["infra"][-1] == {"step": "traffic-50", "digest": after["history"]["infra"][-1]["digest"],
                                             "gateDigest": after["history"]["infra"][-1]["gateDigest"],
                                             "appliedAt": "2026-11-03T00:00:00+00:00"}
    assert after["history"]["infra"][-2]["appliedAt"] == "2026-11-01T00:00:00+00:00"
    assert after["dnsTtl"]["direct"] == {"ttl": 300, "since": "2026-11-02T00:00:00+00:00", "previousTtl": 3600}


def test_create_carries_the_times_of_the_record_exported_before(prod, clock):
    # First update after the split: the old phase gate's exported record has the real times.
    provider = AppliedRecordProvider()
    old = provider.create(inputs(prod)).outs["applied"]
    clock["now"] = "2026-11-05T00:00:00+00:00"
    outs = provider.create(inputs(prod, previous=old)).outs["applied"]
    assert outs["since"] == old["since"] and outs["dnsTtl"] == old["dnsTtl"]


def test_diff_ignores_the_stamped_times_and_sees_a_step_change(prod, clock):
    provider = AppliedRecordProvider()
    outs = provider.create(inputs(prod)).outs
    assert provider.diff("id", outs, inputs(prod)).changes is False
    assert provider.diff("id", outs, inputs(prod.with_steps(infra="traffic-50"))).changes is True


def test_stamped_times_are_real_times():
    stamped = record_module.now_iso()
    assert abs((datetime.now(timezone.utc) - parse_time(stamped)).total_seconds()) < 5
    assert parse_time("2026-11-28T10:00Z") == datetime(2026, 11, 28, 10, tzinfo=timezone.utc)


def test_a_record_exported_before_gate_digests_keeps_its_times(prod, clock):
    # The first update after the program learnt gateDigest/judgedBy: what was applied keeps its time
    # (a soak must not restart because the record format grew); the new record has every field.
    provider = AppliedRecordProvider()
    old = exported_before_judging(provider.create(inputs(prod)).outs["applied"])
    clock["now"] = "2026-11-09T00:00:00+00:00"
    outs = provider.update("id", {"applied": old}, inputs(prod)).outs["applied"]
    assert outs["since"] == old["since"] and outs["dnsTtl"] == old["dnsTtl"]
    assert {e["appliedAt"] for entries in outs["history"].values() for e in entries} == {"2026-11-01T00:00:00+00:00"}
    assert all(e["gateDigest"] for entries in outs["history"].values() for e in entries)
    assert outs["judgedBy"]["criteria"]["infra"]["traffic-50"]["soak"] == "24h"
    assert provider.diff("id", {"applied": old}, inputs(prod)).changes is True  # the new fields are recorded


def test_diff_sees_a_change_of_what_judges_a_step(prod, clock):
    # A pull request that only tightens a gate changes no step, but the record must carry the new gate:
    # the next update is judged by it.
    provider = AppliedRecordProvider()
    outs = provider.create(inputs(prod)).outs
    plan = prod.plan.model_copy(deep=True)
    infra = plan.tracks["infra"]
    step = infra.steps[infra.index("traffic-50")]
    infra.steps[infra.index("traffic-50")] = step.model_copy(
        update={"criteria": step.criteria.model_copy(update={"soak": "48h"})})
    tightened = type(prod)(plan, prod.base, prod.current, prod.override, prod.metrics)
    assert provider.diff("id", outs, inputs(tightened)).changes is True
