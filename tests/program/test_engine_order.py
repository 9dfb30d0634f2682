"""The program under the harness's engine-ordering mode: the check guards everything, before it changes.

Under the real engine a registration returns only after the resource was
applied and a resource is sent only once its dependencies returned; a failed
check or a MANDATORY violation on it rejects the registration and stops the
update. These tests prove the program is built so that this protects every
resource, and that no input carries the time of evaluation (``up --plan``).
"""

from __future__ import annotations

import datetime as dt
import sys
import time

import pytest
from pulumi.output import Unknown

from bazbii_plan.facts import APPLIED_RECORD, TRANSITION_CHECK
from bazbii_plan.walk import record_by_walking
from offline_preview.harness import STACK_REFERENCE_TYPE, config_for_runtime, evaluate_program
from offline_preview.scenarios import CheckAdmission

CHECK, RECORD = TRANSITION_CHECK, APPLIED_RECORD


def run(program, values, previous, *, engine_order=True, preview=True):
    """Evaluate (``preview=False``: as `pulumi up` does); in engine order the check's provider ``check()`` and
    the gate policies admit each registration."""
    outputs = {"appliedRecord": dict(previous, origin="base-file")} if previous else None
    return evaluate_program(config_for_runtime(values), [f"bazbii:{k}" for k in sorted(program.secret_keys)],
                            stack_reference_outputs=outputs, engine_order=engine_order,
                            admit=CheckAdmission(None) if engine_order else None, preview=preview)


def applied_record(program, steps, at="2026-11-01T00:00:00+00:00"):
    return record_by_walking(program.config.with_steps(**steps), at)


def test_an_unsafe_transition_registers_nothing_but_the_check(program):
    previous = applied_record(program, {"infra": "traffic-10"})
    ev = run(program, program.values_for({"infra": "traffic-100"}), previous)
    assert ev.stopped
    assert [r.name for r in ev.resources] == [CHECK]
    assert ev.refused == []  # nothing even reached the engine after the stop: everything waits for the check
    assert [u.rsplit("::", 1)[-1] for u in ev.applied] == ["applied-state"]  # only the self StackReference (a read)
    assert any("skipping ['traffic-50']" in reason for reason in ev.rejected.reasons)


def test_a_mandatory_gate_policy_on_the_check_stops_the_update_too(program):
    # One step forward (the provider check passes) whose edited weights jump past the ladder.
    values = program.values_for({"infra": "traffic-50"})
    step = next(s for s in values["plan"]["infra"]["steps"] if s["name"] == "traffic-50")
    step["changes"]["traffic"]["pools"] = {"server1": {"weight": 0}, "server2": {"weight": 100}}
    previous = record_by_walking(program.config.with_steps(infra="traffic-10"), "2026-11-01T00:00:00+00:00")
    ev = run(program, values, previous)
    assert [r.name for r in ev.resources] == [CHECK]
    assert any(reason.startswith("traffic-weight-ladder:") for reason in ev.rejected.reasons), ev.rejected


def test_a_safe_transition_registers_everything_and_the_record_last(program):
    previous = applied_record(program, {"infra": "traffic-10"})
    ordered = run(program, program.values_for({"infra": "traffic-50"}), previous)
    plain = run(program, program.values_for({"infra": "traffic-50"}), previous, engine_order=False)
    assert not ordered.stopped
    assert ordered.resources[0].name == CHECK and ordered.resources[-1].name == RECORD
    assert [r.urn for r in ordered.resources] == ordered.applied[1:]  # after the StackReference read
    assert {(r.type, r.name) for r in ordered.resources} == {(r.type, r.name) for r in plain.resources}
    (record,) = [r for r in ordered.resources if r.name == RECORD]
    assert record.inputs["applied"]["steps"]["infra"] == "traffic-50"
    # exported once applied (the times are stamped then); a preview leaves it unknown, so a saved plan takes any
    assert isinstance(ordered.outputs["appliedRecord"], Unknown)
    applied = run(program, program.values_for({"infra": "traffic-50"}), previous, preview=False)
    assert applied.outputs["appliedRecord"]["steps"]["infra"] == "traffic-50"


def _depends_on(resource, target_urn, by_urn) -> bool:
    seen, todo = set(), list(resource.dependencies)
    while todo:
        urn = todo.pop()
        if urn == target_urn:
            return True
        if urn not in seen and urn in by_urn:
            seen.add(urn)
            todo.extend(by_urn[urn].dependencies)
    return False


def test_every_resource_depends_on_the_check(program):
    for steps in program.sequence:
        ev = program.evaluate(steps)
        by_urn = {r.urn: r for r in ev.resources}
        check = ev.named(CHECK)
        assert ev.resources[0] is check, steps  # registered first
        assert not [d for d in check.dependencies if not d.endswith("::applied-state")], check.dependencies
        unguarded = [r.name for r in ev.resources if r is not check and not _depends_on(r, check.urn, by_urn)]
        assert unguarded == [], (steps, unguarded)
        # Directly, in fact: components' children get the dependency themselves (they do not inherit it).
        indirect = [r.name for r in ev.resources if r.custom and r is not check and check.urn not in r.dependencies]
        assert indirect == [], (steps, indirect)


def test_the_record_is_registered_last_and_depends_on_every_custom_resource(program):
    ev = program.evaluate()
    record = ev.resources[-1]
    assert record.name == RECORD
    assert {r.urn for r in ev.resources if r.custom and r is not record} <= set(record.dependencies)


@pytest.fixture
def shifted_clock(monkeypatch):
    """Move every clock the program's modules can read by ``box["shift"]``."""
    box = {"shift": dt.timedelta(0)}

    class Shifted(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) + box["shift"]

        @classmethod
        def utcnow(cls):
            return dt.datetime.utcnow() + box["shift"]

    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + box["shift"].total_seconds())
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("bazbii_plan", "bazbii_db", "components", "offline_preview", "policies") \
                and getattr(module, "datetime", None) is dt.datetime:
            monkeypatch.setattr(module, "datetime", Shifted)
    return box


def test_two_evaluations_at_different_times_give_identical_inputs(program, shifted_clock):
    values = program.values_for({"infra": "traffic-50"})
    previous = applied_record(program, {"infra": "traffic-10"})
    first = run(program, values, previous, engine_order=False)
    time.sleep(1.1)
    shifted_clock["shift"] = dt.timedelta(days=3, hours=5, seconds=7)
    second = run(program, values, previous, engine_order=False)
    before, after = ({r.urn: r.inputs for r in ev.resources} for ev in (first, second))
    assert before.keys() == after.keys()
    changed = [urn.rsplit("::", 1)[-1] for urn in before if before[urn] != after[urn]]
    assert changed == []
    assert first.outputs == second.outputs


def test_no_input_carries_an_evaluation_time(program):
    ev = program.evaluate()
    for resource in ev.resources:
        assert "evaluatedAt" not in resource.inputs, resource.name
    check = ev.named(CHECK)
    assert set(check.inputs["target"]) == {"version", "steps", "state", "history", "judgedBy"}
    assert "2026" not in str(check.inputs["target"]["judgedBy"])  # what judges the steps is config, not a clock
    assert all("appliedAt" not in entry for entries in check.inputs["target"]["history"].values() for entry in entries)


def test_self_reference_name_defaults_to_the_project_scoped_name_and_is_configurable(program):
    def reference_names(ev):
        return [inputs["name"] for type_, _name, inputs in ev.reads if type_ == STACK_REFERENCE_TYPE]

    assert reference_names(program.evaluate()) == ["organization/bazbii/prod"]
    # A DIY backend in the legacy layout (before CLI 3.61) accepts only the bare stack name.
    legacy = run(program, program.values_for(selfReference="prod"), None, engine_order=False)
    assert reference_names(legacy) == ["prod"]
    assert legacy.named(CHECK).inputs["previousSource"] == "none"
