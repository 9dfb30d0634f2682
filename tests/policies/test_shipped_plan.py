"""The shipped prod plan, checked statically: every step in apply order, and the one-step rollback of each.

The applied record of each step is rebuilt by walking the plan (origin
"plan-walk": no times, so time rules check structure only). The only rollback
that must be refused is setting the step before db-switchover again: the old
primary was never a gated replica of the new one; the way back is a new switchover.
"""

import pytest

from .helpers import Stack, plan_walk_records, preview

PROD = Stack.prod()
WALK = plan_walk_records(PROD)
# Steps the plan declares irreversible (reversible: false): their one-step rollback must be refused.
IRREVERSIBLE = {(t, s.name) for t, track in PROD.config().plan.tracks.items() for s in track.steps if not s.reversible}
REFUSING_RULE = {("infra", "db-switchover"): "db-promote-only-gated-replica"}


def test_irreversible_steps_are_the_documented_ones():
    assert IRREVERSIBLE == set(REFUSING_RULE)


def _label(steps_before, steps_after):
    moved = [f"{t}: {steps_before[t]} -> {steps_after[t]}" for t in steps_after if steps_before[t] != steps_after[t]]
    return ", ".join(moved)


def test_the_walk_covers_every_step_of_every_track():
    config = PROD.config()
    seen = {(t, s) for steps, _ in WALK for t, s in steps.items()}
    assert seen == {(t, s) for t, track in config.plan.tracks.items() for s in track.names()}


def test_first_deployment_passes():
    steps, _ = WALK[0]
    result = preview(PROD.at(**steps), None)
    assert not result.mandatory, result.explain()


@pytest.mark.parametrize("index", range(1, len(WALK)), ids=[_label(WALK[i - 1][0], WALK[i][0]) for i in range(1, len(WALK))])
def test_every_forward_step_passes(index):
    (_, before), (after_steps, _) = WALK[index - 1], WALK[index]
    result = preview(PROD.at(**after_steps), before)
    assert result.gate().inputs["previousSource"] == "plan-walk"
    assert not result.mandatory, result.explain()


@pytest.mark.parametrize("index", range(1, len(WALK)), ids=["rollback " + _label(WALK[i][0], WALK[i - 1][0]) for i in range(1, len(WALK))])
def test_every_one_step_rollback_passes_except_after_the_switchover(index):
    (before_steps, _), (after_steps, after_record) = WALK[index - 1], WALK[index]
    moved = next((t, s) for t, s in after_steps.items() if before_steps[t] != s)
    result = preview(PROD.at(**before_steps), after_record)
    if moved in IRREVERSIBLE:
        assert REFUSING_RULE[moved] in result.names(), result.explain()
        assert any("new switchover" in m or "pg_rewind" in m for m in result.messages(REFUSING_RULE[moved]))
    else:
        assert not result.mandatory, result.explain()
