"""What judges a step (plan-judged-by-applied, safety-gate-loosening) and the rules beside it, as pure functions."""

import copy

import pytest

from bazbii_plan.gates import GateCriteria
from bazbii_plan.judging import Judging, judging_changes
from bazbii_plan.models import Rollback
from policies.rules import database, judging, kubernetes
from policies.rules.common import Transition

from .helpers import Stack

PROD = Stack.prod()
WHERE = ("plan", "infra", "steps", 5)
APPLIED = GateCriteria.model_validate({"soak": "24h", "window": "2h", "scope": {"kind": "pool", "name": "server2"},
                                       "minSamples": 200, "signals": [
                                           {"name": "errors", "kind": "errorRatio", "max": 0.005},
                                           {"name": "floor", "kind": "requestCount", "min": 50, "counted": False}]})


def _loosened(**update):
    data = APPLIED.model_dump(by_alias=True, mode="json")
    data.update(update)
    return judging.criteria_loosenings(WHERE, APPLIED, GateCriteria.model_validate(data), Rollback(), {})


@pytest.mark.parametrize("update, key, bound", [
    ({"soak": "12h"}, "criteria.soak", None),
    ({"window": "30m"}, "criteria.window", None),
    ({"scope": {"kind": "service"}}, "criteria.scope", None),
    ({"minSamples": 150}, "criteria.minSamples", None),
    ({"minSamples": 50}, "criteria.minSamples", "below the limit 100 (policy config minGateSamples)"),
    ({"signals": [{"name": "errors", "kind": "errorRatio", "max": 0.008},
                  {"name": "floor", "kind": "requestCount", "min": 50, "counted": False}]}, "criteria.signals[0].max", None),
    ({"signals": [{"name": "errors", "kind": "errorRatio", "max": 0.02},
                  {"name": "floor", "kind": "requestCount", "min": 50, "counted": False}]}, "criteria.signals[0].max",
     "above the limit 1.00 %"),
    ({"signals": [{"name": "errors", "kind": "errorRatio", "max": 0.005},
                  {"name": "floor", "kind": "requestCount", "min": 10, "counted": False}]}, "criteria.signals[1].min", None),
    ({"signals": [{"name": "errors", "kind": "errorRatio", "max": 0.005, "counted": False},
                  {"name": "floor", "kind": "requestCount", "min": 50, "counted": False}]},
     "criteria.signals[0].counted", None),
    ({"signals": [{"name": "errors", "kind": "errorRatio", "max": 0.005}]}, "criteria.signals", None),
    ({"signals": None}, "criteria.signals", None),  # back to the rollback defaults: 'floor' is gone
])
def test_each_way_of_loosening_a_gate_is_found_with_its_key(update, key, bound):
    found = _loosened(**update)
    assert [w.key for w in found][:1] == [f"bazbii:plan.infra.steps[5].{key}"], found
    assert found[0].past_bound == bound or (bound and bound in found[0].past_bound), found[0]


@pytest.mark.parametrize("update", [
    {"soak": "48h"}, {"window": "4h"}, {"minSamples": 500},
    {"signals": [{"name": "errors", "kind": "errorRatio", "max": 0.001},
                 {"name": "floor", "kind": "requestCount", "min": 100, "counted": False},
                 {"name": "p99", "kind": "latencyQuantile", "quantile": 0.99, "max": 0.5}]},
])
def test_tightening_a_gate_is_not_a_loosening(update):
    assert _loosened(**update) == []


def test_a_gate_removed_is_a_loosening_and_a_gate_added_is_not():
    [removed] = judging.criteria_loosenings(WHERE, APPLIED, None, Rollback(), {})
    assert removed.key == "bazbii:plan.infra.steps[5].criteria" and removed.proposed == "none"
    assert judging.criteria_loosenings(WHERE, None, APPLIED, Rollback(), {}) == []


# --------------------------------------------------------------------------- over records
def _records(applied: Stack, proposed: Stack):
    return applied.record("2026-11-01T00:00:00+00:00"), proposed.record(None, origin=None)


def _transition(applied: Stack, proposed: Stack, override=None) -> Transition:
    previous, target = _records(applied, proposed)
    config = proposed.config()
    return Transition({t: tr.names() for t, tr in config.plan.tracks.items()}, target, previous, "base-file", override,
                      None, None, None, {t: tr.key for t, tr in config.plan.tracks.items()})


def _edit_traffic_50(**criteria):
    return PROD.edit(lambda s: s.step("infra", "traffic-50")["criteria"].update(criteria))


def test_judging_changes_skip_applied_steps_and_name_new_ones():
    previous, target = _records(PROD.at(infra="traffic-10"), PROD.edit(
        lambda s: s.step("infra", "traffic-10").update(criteria={"soak": "9h"})))
    assert judging_changes(Judging.of_record(previous), Judging.of_record(target), _transition(
        PROD.at(infra="traffic-10"), PROD).step_names, previous["steps"]) == []  # traffic-10 is history
    added = PROD.edit(lambda s: s.values["plan"]["dns"]["steps"].append(
        {"name": "ttl-900", "summary": "x", "gate": "x", "rollback": "x", "changes": {"dns": {"records": {"direct": {"ttl": 900}}}}}))
    t = _transition(PROD, added)
    [change] = judging_changes(t.applied_judging, t.target_judging, t.step_names, t.previous_steps)
    assert (change.part, change.key, change.step) == ("step", "bazbii:plan.dns.steps[4]", "ttl-900")


def test_the_loosening_rule_reviews_only_updates_that_move_nothing():
    loosened = _edit_traffic_50(soak="1h")
    [finding] = judging.gate_loosening(_transition(PROD, loosened), {})
    assert "bazbii:plan.infra.steps[5].criteria.soak is loosened 24h -> 1h (applied: 24h)" in finding.what
    assert judging.gate_loosening(_transition(PROD, loosened, override="tuned with the on-call lead"), {}) == []
    moving = _transition(PROD, loosened.at(infra="traffic-50"))
    assert judging.gate_loosening(moving, {}) == []  # a pointer moves: plan-judged-by-applied decides
    [finding] = judging.judged_by_applied(moving)
    assert "criteria.soak changes '24h' -> '1h' (applied: '24h')" in finding.what


def test_a_record_without_judged_by_is_judged_as_before():
    previous, target = _records(PROD, _edit_traffic_50(soak="1h").at(infra="traffic-50"))
    del previous["judgedBy"]
    config = PROD.config()
    t = Transition({n: tr.names() for n, tr in config.plan.tracks.items()}, target, previous, "stack-output", None, None)
    assert judging.judged_by_applied(t) == [] and judging.gate_loosening(t, {}) == []


# --------------------------------------------------------------------------- pooler and workers
def _state_transition(before: dict, after: dict, rollback=False) -> Transition:
    names = {"infra": ["a", "b"]}
    steps_before, steps_after = ({"infra": "b"}, {"infra": "a"}) if rollback else ({"infra": "a"}, {"infra": "b"})
    return Transition(names, {"steps": steps_after, "state": after}, {"steps": steps_before, "state": before},
                      "base-file", None, None, None, None, {"infra": "phase"})


@pytest.fixture(scope="module")
def state():
    return PROD.config().state().to_config()


def _moved_pooler(state, traffic=False):
    after = copy.deepcopy(state)
    after["database"]["pooler"]["server"] = "server3"
    after["servers"]["server1"]["roles"] = ["api", "gateway"]
    after["servers"].setdefault("server3", {})["roles"] = ["database", "pooler"]
    if traffic:
        after["traffic"]["pools"]["server1"]["weight"] = 50
    return after


def test_the_pooler_rule(state):
    assert database.pooler_moves_alone(_state_transition(state, _moved_pooler(state))) == []
    [finding] = database.pooler_moves_alone(_state_transition(state, _moved_pooler(state, traffic=True)))
    assert "also changes bazbii:traffic.pools.server1.weight" in finding.what
    # The one-step rollback of such a step is the remedy, not a new risk.
    assert database.pooler_moves_alone(_state_transition(_moved_pooler(state, traffic=True), state, rollback=True)) == []


def test_the_workers_rule(state):
    stopped = copy.deepcopy(state)
    stopped["app"]["worker"]["replicas"] = 0
    assert kubernetes.workers_keep_running(_state_transition(state, stopped), 1) == []  # only the workers: retiring
    stopped["app"]["canary"]["weight"] = 50
    [finding] = kubernetes.workers_keep_running(_state_transition(state, stopped), 1)
    assert "bazbii:app.worker.replicas is set 2 -> 0 (applied: 2), below the 1 the job queue needs" in finding.what
    assert kubernetes.workers_keep_running(_state_transition(state, stopped), 0) == []  # nothing below the minimum
    assert kubernetes.workers_keep_running(_state_transition(stopped, state, rollback=True), 1) == []
    # Already retired and kept at 0: not lowered by this update.
    assert kubernetes.workers_keep_running(_state_transition(stopped, copy.deepcopy(stopped)), 1) == []


# --------------------------------------------------------------------------- the metrics route
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOM6sF3e7C2xC4bqHh8v1yGk3XnJ0rQy9c5m1bT2LZpA"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1x6Lk0m7Vd2a3zQpY8rR5cWq9nHj4tFs0eXgU7PvKo"


def _routed(ssh, extra_server=False) -> Stack:
    def edit(s: Stack) -> None:
        s.values["metrics"].pop("ssh", None)
        if ssh is not None:
            s.values["metrics"]["ssh"] = ssh
        if extra_server:
            s.values["servers"]["server4"] = {"address": "203.0.113.14", "vcpu": 2, "memoryGb": 4, "diskGb": 100,
                                              "roles": []}
    return PROD.edit(edit)


@pytest.mark.parametrize("applied, proposed, why", [
    # the same endpoint read through a server the applied state has: how a stack adopts SSH reading
    (None, {"server": "server2"}, None),
    ({"server": "server2"}, {"server": "server1"}, None),
    ({"server": "server2"}, {"server": "server2", "hostKey": HOST_KEY}, None),
    ({"server": "server2", "hostKey": HOST_KEY}, {"server": "server1", "hostKey": HOST_KEY}, None),
    # what the pull request could make answer for the gate
    (None, {"host": "metrics.elsewhere.example"}, "a host the pull request names"),
    ({"server": "server2"}, {"host": "metrics.elsewhere.example", "user": "deploy"}, "a host the pull request names"),
    ({"server": "server2", "hostKey": HOST_KEY}, {"server": "server2"}, "host key pinned by the applied route"),
    ({"server": "server2", "hostKey": HOST_KEY}, {"server": "server2", "hostKey": OTHER_KEY},
     "host key pinned by the applied route"),
    ({"server": "server2"}, None, "from wherever pulumi runs"),
])
def test_a_new_metrics_route_is_a_loosening_unless_it_is_a_server_of_the_applied_state(applied, proposed, why):
    t = _transition(_routed(applied), _routed(proposed))
    findings = judging.gate_loosening(t, {})
    if why is None:
        assert findings == []
    else:
        [finding] = findings
        assert finding.what.startswith("bazbii:metrics.ssh is loosened ") and why in finding.what, finding.what
        reviewed = _transition(_routed(applied), _routed(proposed), override="adopting a new metrics route, reviewed")
        assert judging.gate_loosening(reviewed, {}) == []
    # While a pointer moves, no route change at all: split the pull request.
    moving = judging.judged_by_applied(_transition(_routed(applied), _routed(proposed).at(infra="traffic-50")))
    assert moving and all("bazbii:metrics.ssh" in finding.what for finding in moving), moving


def test_a_route_through_a_server_the_pull_request_adds_is_a_loosening():
    t = _transition(_routed(None), _routed({"server": "server4"}, extra_server=True))
    [finding] = judging.gate_loosening(t, {})
    assert "server 'server4', which is not in the applied state" in finding.what


def test_the_endpoint_is_still_judged_beside_the_route():
    proposed = _routed({"server": "server2"}).edit(
        lambda s: s.values["metrics"].update(endpoint="http://prometheus.elsewhere.example:9090"))
    [finding] = judging.gate_loosening(_transition(_routed(None), proposed), {})
    assert finding.what.startswith("bazbii:metrics.endpoint is loosened"), finding.what
