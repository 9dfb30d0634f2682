"""The flags track in the program: typed flags with key-named errors, a cohort rule, pods that roll on a change."""

from __future__ import annotations

import copy

import pytest

from bazbii_plan.errors import ConfigError
from bazbii_plan.flags import flags_document, in_cohort, schema_reached
from bazbii_plan.stackconfig import load_stack_config
from bazbii_plan.workloads import running_images
from tests.program.flag_steps import FLAGS_ANNOTATION, flags_map
from tests.program.helpers import DEPLOYMENT

FLAG = "new_category_ui"


def flag_steps(values):
    return values["plan"]["flags"]["steps"]


def declared(values) -> dict:
    """The flag as the new-category-ui-0 step declares it (mutable)."""
    return flag_steps(values)[1]["changes"]["flags"][FLAG]


def problems(program, edit) -> list[str]:
    values = program.values_for()
    edit(values)
    with pytest.raises(ConfigError) as exc:
        load_stack_config(values, program.secret_keys)
    return exc.value.problems


# --------------------------------------------------------------------------- config errors name the key
def test_a_rollout_out_of_range_names_its_key(program):
    lines = problems(program, lambda v: flag_steps(v)[2]["changes"]["flags"][FLAG].update(rollout=150))
    assert "bazbii:plan.flags.steps[2].changes.flags.new_category_ui.rollout: must be 0..100" in lines


def test_an_unknown_flag_key_names_it(program):
    lines = problems(program, lambda v: declared(v).update(rolout=10))
    assert "bazbii:plan.flags.steps[1].changes.flags.new_category_ui.rolout: unknown key (check the spelling; keys " \
           "are camelCase)" in lines


def test_a_flag_needs_a_semver_minimum_version(program):
    lines = problems(program, lambda v: declared(v).update(minAppVersion="2.0"))
    assert "bazbii:plan.flags.steps[1].changes.flags.new_category_ui.minAppVersion: must be a version " \
           "MAJOR.MINOR.PATCH, e.g. 2.0.0 (got '2.0')" in lines, lines


def test_needs_schema_names_a_stage(program):
    lines = problems(program, lambda v: declared(v)["needsSchema"].update(stage="backfill"))
    assert "bazbii:plan.flags.steps[1].changes.flags.new_category_ui.needsSchema.stage: must be one of " \
           "'expand', 'migrate' or 'contract'" in lines


def test_removing_the_old_path_below_100_is_a_config_error(program):
    def edit(values):
        flag_steps(values)[5]["changes"]["flags"][FLAG]["rollout"] = 50
    lines = problems(program, edit)
    assert any(line.startswith("bazbii:plan.flags.steps[5].changes.flags.new_category_ui: oldPath.removed needs "
                               "rollout 100") for line in lines), lines


def test_a_bad_flag_name_is_refused(program):
    def edit(values):
        changes = flag_steps(values)[1]["changes"]["flags"]
        changes["New-Category"] = changes.pop(FLAG)
    lines = problems(program, edit)
    assert any("flag name 'New-Category' must be a flag name of lowercase letters, digits and '_'" in line
               for line in lines), lines


def test_the_flags_pointer_is_checked(program):
    lines = problems(program, lambda v: v.update(flagsPhase="new-category-ui-75"))
    assert any(line.startswith("bazbii:flagsPhase: unknown step 'new-category-ui-75'") for line in lines), lines


def test_the_plan_requires_the_release_before_the_flag_goes_on(program):
    lines = problems(program, lambda v: v.update(flagsPhase="new-category-ui-10"))  # the stack file is at canary-10
    assert "bazbii:flagsPhase: step 'new-category-ui-10' requires track 'release' at 'canary-100' or later " \
           "(bazbii:releasePhase is 'canary-10')" in lines


# --------------------------------------------------------------------------- the cohort and the facts the rules use
def test_the_cohort_is_id_mod_100_below_the_rollout_and_only_grows():
    ids = range(10_000)
    for rollout in (0, 10, 50, 100):
        assert sum(in_cohort(i, rollout) for i in ids) == rollout * 100
    assert {i for i in ids if in_cohort(i, 10)} <= {i for i in ids if in_cohort(i, 50)}
    assert in_cohort(1209, 10) and not in_cohort(1210, 10)


def test_the_document_is_stable_and_ignores_protobuf_floats():
    a = flags_document({"b": {"rollout": 10, "oldPath": {"removed": False}}, "a": {"rollout": 100.0}})
    assert a == '{"a":{"oldPathRemoved":false,"rollout":100},"b":{"oldPathRemoved":false,"rollout":10}}'


def test_schema_points_order_by_migration_then_stage():
    def state(mid, stage):
        return {"schema": {"migration": {"id": mid, "stage": stage}}}
    needs = {"migration": "0002_add_category", "stage": "expand"}
    assert schema_reached(state("0002_add_category", "expand"), needs)
    assert schema_reached(state("0002_add_category", "contract"), needs)
    assert schema_reached(state("0003_post_metadata", "expand"), needs)
    assert not schema_reached(state("0001_init", "contract"), needs)
    assert not schema_reached({"schema": {}}, needs)
    assert schema_reached({"schema": {}}, None)


def test_running_images_leave_out_deployments_without_pods():
    app = {"api": {"image": "r/api:1.9.0", "replicas": 10}, "worker": {"image": "r/worker:2.0.0", "replicas": 2},
           "canary": {"image": "r/api:2.0.0", "weight": 100}}
    assert running_images(app) == [("app.canary", "r/api:2.0.0"), ("app.worker", "r/worker:2.0.0")]
    app["canary"]["weight"] = 50
    assert running_images(app)[0] == ("app.api", "r/api:1.9.0")


# --------------------------------------------------------------------------- a flag change rolls every pod
def _templates(ev) -> dict:
    return {d.name: d.inputs["spec"]["template"] for d in ev.by_type(DEPLOYMENT)}


def test_a_flag_change_rolls_the_api_and_the_workers_and_nothing_else(program):
    ten = program.evaluate(program.at("flags", "new-category-ui-10"))
    fifty = program.evaluate(program.at("flags", "new-category-ui-50"))
    before, after = _templates(ten), _templates(fifty)
    assert set(before) == set(after) == {"app-api", "app-worker"}
    for name in before:
        old, new = copy.deepcopy(before[name]), copy.deepcopy(after[name])
        assert old["metadata"]["annotations"][FLAGS_ANNOTATION] != new["metadata"]["annotations"][FLAGS_ANNOTATION]
        for template in (old, new):  # apart from the flags, the pod templates are identical
            del template["metadata"]["annotations"][FLAGS_ANNOTATION]
            for var in template["spec"]["containers"][0]["env"]:
                if var["name"] == "BAZBII_FLAGS":
                    var["valueFrom"]["configMapKeyRef"]["name"] = "-"
        assert old == new, name
    # a new, content-named ConfigMap: the old one is deleted only after the pods moved off it
    assert flags_map(ten).inputs["metadata"]["name"] != flags_map(fifty).inputs["metadata"]["name"]


def test_the_canary_reads_the_flags_too(program):
    ev = program.evaluate(program.at("release", "canary-10"))
    canary = ev.named("app-api-canary").inputs["spec"]["template"]
    assert canary["metadata"]["annotations"][FLAGS_ANNOTATION] == \
        ev.named("app-api").inputs["spec"]["template"]["metadata"]["annotations"][FLAGS_ANNOTATION]
    assert any(v["name"] == "BAZBII_FLAGS" for v in canary["spec"]["containers"][0]["env"])


# --------------------------------------------------------------------------- gates
def _flag_gates(program):
    state = program.config.with_steps(flags=program.config.plan.tracks["flags"].names()[-1]).state()
    soak = state.flags[FLAG].soak_hours
    rollback = state.rollback
    trigger = f"Roll back if the cohort's error rate > {rollback.max_error_rate * 100:g} % or p95 > {rollback.p95_factor:g}x target"
    return soak, trigger, [s for s in program.config.plan.tracks["flags"].steps if s.name not in ("none", "new-category-ui-0")]


def test_every_flag_step_gate_names_its_soak_and_the_rollback_trigger(program):
    soak, trigger, steps = _flag_gates(program)
    assert [s.name for s in steps] == ["new-category-ui-10", "new-category-ui-50", "new-category-ui-100",
                                       "new-category-ui-old-path-removed"]
    for step in steps:
        assert f"{soak:g} h" in step.gate and "soak" in step.gate.lower(), (step.name, step.gate)
        assert trigger in step.gate, (step.name, step.gate)


def test_flag_steps_carry_live_gate_criteria_once_the_plan_has_them(program):
    """Integration guard for the live-metric gates (issue 10): once steps have ``criteria``, flag steps use them."""
    from bazbii_plan.plan import Step

    if "criteria" not in Step.model_fields:
        pytest.skip("steps have no machine-checkable criteria on this branch yet; the gate texts carry soak and trigger")
    soak, _, steps = _flag_gates(program)
    for step in steps[1:]:  # 10 % has nothing before it to soak; 50, 100 and the removal soak the step before
        assert step.criteria is not None, step.name
        assert step.criteria.soak_seconds() == soak * 3600, (step.name, step.criteria.soak)
