"""``bazbii:timeScale``: a rehearsal stack compresses every soak, metrics window and DNS TTL wait by one factor.

It judges as the rest of the gate does, from the applied record (``judgedBy``): a pull request cannot bring
a time scale along with a pointer move, and every stack but the rehearsal's is refused one outright.
"""

from datetime import timedelta

import pulumi
import pytest

from bazbii_analysis.evaluate import evaluate_criteria
from bazbii_plan.errors import ConfigError
from bazbii_plan.gates import GateCriteria, MetricsConfig
from bazbii_plan.judging import judged_by
from bazbii_plan.models import Rollback
from bazbii_plan.stackconfig import REHEARSAL_STACK, StackConfig, load_stack_config
from bazbii_plan.transitions import check_problems
from bazbii_plan.walk import record_by_walking
from offline_preview.harness import config_for_runtime, evaluate_program
from tests.gate.test_transition_check import T0, check_inputs
from tests.program.conftest import SECRET_VALUES, captured  # noqa: F401 (fixture)
from bazbii_plan.facts import TRANSITION_CHECK

SCALE = 720  # a day is two minutes


def scaled(config: StackConfig, scale: int) -> StackConfig:
    return StackConfig(config.plan, config.base, dict(config.current), config.override, config.metrics,
                       time_scale=scale)


def inputs_at_scale(config: StackConfig, previous: dict) -> dict:
    inputs = check_inputs(config, previous)
    inputs["target"]["judgedBy"] = judged_by(config.plan, config.metrics, config.time_scale)
    return inputs


def test_the_dns_wait_is_the_old_ttl_over_the_applied_records_time_scale(prod):
    rehearsal = scaled(prod, SCALE)
    lowered = record_by_walking(rehearsal.with_steps(infra="traffic-10", dns="ttl-lowered"), T0.isoformat())
    switch = inputs_at_scale(rehearsal.with_steps(infra="traffic-10", dns="switched"), lowered)
    # The old TTL is 1 h: 5 s at 1/720.
    assert any("only 4 s after" in p for p in check_problems(switch, T0 + timedelta(seconds=4)))
    assert check_problems(switch, T0 + timedelta(seconds=6)) == []
    # The same record at scale 1 still waits the hour.
    unscaled = record_by_walking(prod.with_steps(infra="traffic-10", dns="ttl-lowered"), T0.isoformat())
    assert check_problems(check_inputs(prod.with_steps(infra="traffic-10", dns="switched"), unscaled),
                          T0 + timedelta(seconds=6))


def test_a_pull_request_cannot_bring_a_time_scale_with_a_pointer_move(prod):
    applied = record_by_walking(prod.with_steps(infra="traffic-10", dns="ttl-lowered"), T0.isoformat())
    switch = inputs_at_scale(scaled(prod, SCALE).with_steps(infra="traffic-10", dns="switched"), applied)
    problems = check_problems(switch, T0 + timedelta(seconds=6))
    assert any("bazbii:timeScale changes 1 -> 720" in p for p in problems)
    assert any("only 0 min after" in p or "only 6 s after" in p for p in problems)  # judged at the applied scale: 1


def test_the_soak_and_the_window_are_divided_by_the_time_scale():
    criteria = GateCriteria(soak="24h", min_samples=0, signals=[])
    since = T0 - timedelta(seconds=121)
    judged = evaluate_criteria(criteria, Rollback(), MetricsConfig(), track="infra", step="traffic-50",
                               since=since, now=T0, time_scale=SCALE)
    (soak,) = judged.signals
    assert (soak.status, soak.min) == ("pass", 120.0) and "1/720" in judged.note
    early = evaluate_criteria(criteria, Rollback(), MetricsConfig(), track="infra", step="traffic-50",
                              since=T0 - timedelta(seconds=100), now=T0, time_scale=SCALE)
    assert early.signals[0].status == "fail" and "20s" in early.signals[0].reason
    assert evaluate_criteria(criteria, Rollback(), MetricsConfig(), track="infra", step="traffic-50", since=since,
                             now=T0).signals[0].status == "fail"


class RecordingClient:
    """Answers every query with 0 and keeps the PromQL it was asked."""

    endpoint = where = "http://prometheus.rehearsal:9090"  # where: how it is reached (PrometheusClient.where)

    def __init__(self):
        self.queries: list[str] = []

    def scalar(self, query, at=None):
        self.queries.append(query)
        return 0.0

    def close(self):
        pass


@pytest.mark.parametrize(("window", "expected"), [("24h", "[120s]"), ("1h", "[15s]")])
def test_the_metrics_window_is_divided_but_keeps_room_for_several_scrapes(window, expected):
    client = RecordingClient()
    criteria = GateCriteria(window=window, min_samples=0)
    evaluate_criteria(criteria, Rollback(), MetricsConfig(), track="infra", step="traffic-10",
                      since=T0 - timedelta(days=3), now=T0, client=client, time_scale=SCALE)
    assert client.queries and all(expected in q for q in client.queries), client.queries
    unscaled = RecordingClient()
    evaluate_criteria(criteria, Rollback(), MetricsConfig(), track="infra", step="traffic-10",
                      since=T0 - timedelta(days=3), now=T0, client=unscaled)
    assert all(f"[{int(GateCriteria(window=window).window_seconds())}s]" in q for q in unscaled.queries)


@pytest.mark.parametrize("value", [0, -3, 1.5, "fast", True, 100_001])
def test_a_bad_time_scale_is_refused_naming_the_key(prod_values, value):
    values, secret_keys = prod_values
    with pytest.raises(ConfigError) as refused:
        load_stack_config({**values, "timeScale": value}, set(secret_keys))
    assert any(line.startswith("bazbii:timeScale: must be a whole number from 1 to 100000") for line in refused.value.problems)


def _program(prod_values, stack: str):
    values = {**prod_values[0], **SECRET_VALUES, "timeScale": SCALE}
    return evaluate_program(config_for_runtime(values), [f"bazbii:{k}" for k in SECRET_VALUES], stack=stack)


def test_only_the_rehearsal_stack_may_set_a_time_scale(prod_values, captured):
    with pytest.raises(pulumi.RunError, match="nothing was registered"):
        _program(prod_values, "prod")
    assert captured.resources == []
    assert any(line.startswith("bazbii:timeScale: 720 compresses every soak and DNS wait; only a rehearsal stack")
               for line in captured.errors), captured.errors
    evaluation = _program(prod_values, REHEARSAL_STACK)
    (check,) = [r for r in evaluation.resources if r.name == TRANSITION_CHECK]
    assert check.inputs["target"]["judgedBy"]["timeScale"] == SCALE
