"""The phase gate's engine-side check sees the inputs of the last successful update (olds)."""

from components.phase_gate import PhaseGateProvider

NAMES = {"infra": ["mvp", "traffic-10", "traffic-50", "traffic-100"]}


def gate_inputs(step, override=None):
    return {"gate": "bazbii-phase-gate", "stepNames": NAMES, "target": {"steps": {"infra": step}}, "override": override}


def test_check_allows_one_step_from_the_applied_inputs():
    result = PhaseGateProvider().check(gate_inputs("traffic-10"), gate_inputs("traffic-50"))
    assert result.failures == []


def test_check_denies_a_jump_even_without_a_policy_pack():
    result = PhaseGateProvider().check(gate_inputs("traffic-10"), gate_inputs("traffic-100"))
    assert len(result.failures) == 1
    assert result.failures[0].property == "target"
    assert "skipping ['traffic-50']" in result.failures[0].reason


def test_check_fails_closed_on_first_create_past_the_first_step():
    assert PhaseGateProvider().check({}, gate_inputs("mvp")).failures == []
    (failure,) = PhaseGateProvider().check({}, gate_inputs("traffic-10")).failures
    assert "only the first step" in failure.reason
    assert PhaseGateProvider().check({}, gate_inputs("traffic-10", override="stack adopted from before the gate")).failures == []


def test_diff_ignores_the_evaluation_time():
    olds = dict(gate_inputs("traffic-10"), evaluatedAt="2026-01-01T00:00:00+00:00")
    news = dict(gate_inputs("traffic-10"), evaluatedAt="2026-01-02T00:00:00+00:00")
    assert PhaseGateProvider().diff("id", olds, news).changes is False
    assert PhaseGateProvider().diff("id", olds, gate_inputs("traffic-50")).changes is True
