"""plan-*: one track, one step per update; fail closed when the applied state is unknown."""


from .helpers import Stack, preview

PROD = Stack.prod()  # infra traffic-10, dns ttl-lowered, release canary-10, schema 0002-migrate


def test_one_step_forward_passes():
    result = preview(PROD.at(infra="traffic-50"), PROD)
    assert not result.mandatory, result.explain()


def test_skipping_a_step_is_denied_with_the_step_to_apply_first():
    result = preview(PROD.at(infra="traffic-100"), PROD)
    assert "plan-one-step-at-a-time" in result.names()
    [message] = result.messages("plan-one-step-at-a-time")
    assert message.startswith("plan-one-step-at-a-time: track 'infra' jumps traffic-10 -> traffic-100, skipping ['traffic-50']")
    assert "apply 'traffic-50' first" in message and "Fix:" in message


def test_two_tracks_in_one_update_are_denied():
    result = preview(PROD.at(infra="traffic-50", release="canary-50"), PROD)
    [message] = result.messages("plan-one-step-at-a-time")
    assert "more than one track moves" in message and "one update per track" in message


def test_rollback_by_one_step_passes():
    applied = PROD.at(infra="traffic-50")
    result = preview(PROD, applied)  # back to traffic-10
    assert not result.mandatory, result.explain()


def test_rollback_by_two_steps_is_denied():
    applied = PROD.at(infra="traffic-100")
    result = preview(PROD, applied)
    [message] = result.messages("plan-one-step-at-a-time")
    assert "goes back 2 steps" in message and "to 'traffic-50' first" in message


def test_applied_step_removed_from_the_plan_is_denied():
    applied = PROD.record()
    applied["steps"]["infra"] = "traffic-25"
    result = preview(PROD, applied)
    assert any("no longer in the plan" in m for m in result.messages("plan-one-step-at-a-time"))


# --------------------------------------------------------------------------- fail closed
def test_never_deployed_stack_may_only_apply_first_steps():
    result = preview(PROD, None)
    assert result.gate().inputs["previousSource"] == "none"
    assert "previous" not in result.gate().inputs
    [message] = result.messages("plan-fail-closed")
    assert "only the first step of each track may be applied" in message
    assert "bazbii:phaseOverride" in message


def test_never_deployed_stack_at_first_steps_passes():
    first = PROD.at(infra="mvp", dns="baseline", release="api-1.9", schema="none")
    result = preview(first, None)
    assert not result.mandatory, result.explain()


def test_malformed_applied_record_fails_closed():
    result = preview(PROD, {"version": 99, "steps": "everything"})
    assert result.gate().inputs["previousSource"] == "malformed"
    [message] = result.messages("plan-fail-closed")
    assert "not a valid applied record" in message


def test_unknown_previous_with_a_logged_override_passes():
    reason = "stack adopted from the pre-gate deployment; verified by hand on 2026-11-20"
    target = PROD.copy()
    target.values["phaseOverride"] = reason
    result = preview(target, None)
    assert result.gate().inputs["override"] == reason
    assert "plan-fail-closed" not in result.names(), result.explain()
    assert any(level == "warning" and reason in text for level, text in result.evaluation.logs)


def test_override_does_not_allow_skipping_when_the_applied_state_is_known():
    target = PROD.at(infra="traffic-100")
    target.values["phaseOverride"] = "I am in a hurry and know what I am doing"
    result = preview(target, PROD)
    assert "plan-one-step-at-a-time" in result.names()


def test_fail_closed_also_blocks_a_transition_that_would_otherwise_pass():
    # The same traffic-10 -> traffic-50 move that passes with a known record is refused without one.
    assert "plan-fail-closed" in preview(PROD.at(infra="traffic-50"), None).names()


# --------------------------------------------------------------------------- requires
def test_requires_must_hold_in_the_applied_steps():
    # dns 'switched' requires infra at gateway-on-server2; moving both at once is not "after".
    applied = PROD.at(infra="replica-streaming", dns="ttl-lowered")
    target = PROD.at(infra="gateway-on-server2", dns="switched")
    result = preview(target, applied)
    [message] = result.messages("plan-requires-met")
    assert "requires track 'infra' at 'gateway-on-server2'" in message and "applied step is 'replica-streaming'" in message


def test_requires_met_passes():
    applied = PROD.at(infra="gateway-on-server2", dns="ttl-lowered")
    target = PROD.at(infra="gateway-on-server2", dns="switched")
    result = preview(target, applied, origin="plan-walk")
    assert "plan-requires-met" not in result.names(), result.explain()
