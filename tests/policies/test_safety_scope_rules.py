"""safety-*, plan-step-scope, the one home of the rollout rules, and a pack that only assembles."""

import ast
import copy
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bazbii_plan import rollout
from bazbii_plan.models import Rollout
from bazbii_plan.scope import changed_paths, moved_steps, outside, step_scopes
from components import preflight
from policies import builders, pack
from policies.rules import database, dns, flags, judging, kubernetes, plan, safety, schema, scope, traffic
from policies.rules.common import Transition, dig

from .helpers import Stack, preview

PROD = Stack.prod()
NAMES = {"infra": ["a", "b", "c"], "release": ["r1", "r2"]}
KEYS = {"infra": "phase", "release": "releasePhase"}


def _transition(before_state, after_state, before="a", after="b", override=None):
    def record(step, state):
        return {"steps": {"infra": step, "release": "r1"}, "state": state}
    return Transition(NAMES, record(after, after_state), record(before, before_state), "base-file", override, None,
                      None, KEYS)


@pytest.fixture(scope="module")
def prod_state():
    return PROD.at(infra="traffic-10").config().state().to_config()


def _moving_traffic(state):
    out = copy.deepcopy(state)
    out["traffic"]["pools"]["server1"]["weight"] = 50
    out["traffic"]["pools"]["server2"]["weight"] = 50
    return out


def _set(state, path, value):
    out = copy.deepcopy(state)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _weaker(parameter, value):
    return {safety.LARGER: lambda: value * 2 if value else 1, safety.SMALLER: lambda: value / 2,
            safety.MORE_CODES: lambda: "2xx", safety.CHANGED: lambda: "/other",
            safety.RANKED: lambda: parameter.ranks[0]}[parameter.weaker]()


def _stronger(parameter, value):
    return {safety.LARGER: lambda: value / 2, safety.SMALLER: lambda: value * 2, safety.MORE_CODES: lambda: value,
            safety.CHANGED: lambda: value, safety.RANKED: lambda: parameter.ranks[-1]}[parameter.weaker]()


# --------------------------------------------------------------------------- safety parameters
def test_every_safety_parameter_of_the_model_is_listed():
    assert {".".join(p.path) for p in safety.PARAMETERS} == {
        "database.lagGate.maxBytes", "database.lagGate.windowSeconds", "database.lagGate.timeoutSeconds",
        "database.pooler.pauseTimeoutSeconds", "database.replicas.*.lagGate", "database.replicas.*.consistencyCheck",
        "traffic.monitor.type", "traffic.monitor.interval", "traffic.monitor.timeout", "traffic.monitor.retries",
        "traffic.monitor.expectedCodes", "traffic.monitor.path",
        "app.rollout.drainSeconds", "app.rollout.terminationGracePeriodSeconds", "app.rollout.minReadySeconds",
        "app.rollout.revisionHistoryLimit", "app.rollout.pdbMaxUnavailable", "app.rollout.readinessPath",
        "gateway.healthPath",
        "rollback.maxErrorRate", "rollback.p95Factor", "rollback.p95TargetMs",
    }
    for parameter in safety.PARAMETERS:
        assert parameter.bound is None or parameter.bound in safety.CONFIG, parameter


@pytest.mark.parametrize("parameter", safety.PARAMETERS, ids=lambda p: ".".join(p.path))
def test_weakening_while_traffic_moves_is_denied_strengthening_is_not(parameter, prod_state):
    [path] = parameter.instances(prod_state)  # the prod state at traffic-10 has one replica (server3)
    key, value = "bazbii:" + ".".join(path), dig(prod_state, *path)
    moving = _moving_traffic(prod_state)
    [finding] = safety.not_weakened(_transition(prod_state, _set(moving, path, _weaker(parameter, value))))
    assert f"{key} is weakened" in finding.what and "moves traffic" in finding.what
    assert f"keep {key} at" in finding.fix
    assert not safety.not_weakened(_transition(prod_state, _set(moving, path, _stronger(parameter, value))))
    # nothing moves: loosening a guard in a step of its own is the reviewed way
    assert not safety.not_weakened(_transition(prod_state, _set(prod_state, path, _weaker(parameter, value))))


@pytest.mark.parametrize("what, edit", [
    ("DNS", lambda s: s["dns"]["records"]["direct"].update(content="203.0.113.12")),
    ("the primary", lambda s: s["database"].update(primary="server3")),
    ("a schema stage", lambda s: s["schema"]["migration"].update(stage="contract")),
    ("the canary", lambda s: s["app"]["canary"].update(weight=50)),
])
def test_every_kind_of_move_counts(what, edit, prod_state):
    moved = copy.deepcopy(prod_state)
    edit(moved)
    assert safety.what_moves(prod_state, moved) == [what]
    weakened = _set(moved, ("traffic", "monitor", "retries"), 5)
    assert safety.not_weakened(_transition(prod_state, weakened))


def test_a_new_pool_at_weight_zero_moves_no_traffic(prod_state):
    added = copy.deepcopy(prod_state)
    added["traffic"]["pools"]["server3"] = {"server": "server3", "weight": 0, "monitored": True}
    assert safety.what_moves(prod_state, added) == []
    added["traffic"]["pools"]["server3"]["weight"] = 10
    assert safety.what_moves(prod_state, added) == ["traffic"]


def test_a_one_step_rollback_is_exempt(prod_state):
    weakened = _set(_moving_traffic(prod_state), ("traffic", "monitor", "interval"), 300)
    assert not safety.not_weakened(_transition(prod_state, weakened, before="b", after="a"))


@pytest.mark.parametrize("parameter", [p for p in safety.PARAMETERS if p.bound], ids=lambda p: ".".join(p.path))
def test_bounds_hold_at_the_default_and_deny_past_it(parameter, prod_state):
    assert not safety.parameter_bounds(_transition(prod_state, prod_state), {})
    default = builders.default_of(safety.CONFIG, parameter.bound)
    past = {safety.LARGER: lambda: default * 2 + 1, safety.SMALLER: lambda: default / 2,
            safety.MORE_CODES: lambda: "5xx", safety.CHANGED: lambda: "/nope",
            safety.RANKED: lambda: parameter.ranks[0]}[parameter.weaker]()
    [finding] = safety.parameter_bounds(_transition(prod_state, _set(prod_state, parameter.path, past)), {})
    assert finding.what.startswith(f"{parameter.key} is ") and parameter.bound in finding.what


def test_expected_codes_compare_as_sets_of_codes():
    assert safety.accepted_codes("2xx") == frozenset(range(200, 300))
    code = next(p for p in safety.PARAMETERS if p.path[-1] == "expectedCodes")
    assert safety.is_weaker(code, "200", "2xx") and not safety.is_weaker(code, "2xx", "200")


# --------------------------------------------------------------------------- step scope
def test_scopes_come_from_touches_or_the_tracks_sections():
    scopes = step_scopes(PROD.config().plan)
    assert scopes["infra"]["traffic-50"] == [["traffic", "pools"]]
    assert scopes["dns"]["switched"] == [["dns"]]
    assert scopes["infra"]["mvp"] == [["servers"], ["database"], ["gateway"], ["traffic"]]


def test_changed_paths_stop_where_one_side_has_no_key():
    old = {"a": {"b": 1, "c": {"d": 2}}, "l": [1]}
    new = {"a": {"b": 2, "e": {"f": 1}}, "l": [1, 2]}
    assert changed_paths(old, new) == [("a", "b"), ("a", "c"), ("a", "e"), ("l",)]
    assert outside(changed_paths(old, new), [("a",)]) == [("l",)]
    assert moved_steps(["x", "y", "z"], "z", "x") == ["y", "z"] == moved_steps(["x", "y", "z"], "x", "z")


def test_step_scope_rule(prod_state):
    scopes = {"infra": {"b": [("traffic", "pools")]}, "release": {"r2": [("app",)]}}
    moved = _moving_traffic(prod_state)
    assert not scope.step_scope(_transition(prod_state, moved), scopes)
    stray = _set(moved, ("database", "pooler", "server"), "server3")
    [finding] = scope.step_scope(_transition(prod_state, stray), scopes)
    assert "also changes bazbii:database.pooler.server" in finding.what
    assert "bazbii:plan.infra.steps[1].touches" in finding.fix
    assert not scope.step_scope(_transition(prod_state, stray, override="adopting a hand-made change"), scopes)
    # the rollback of the same step has the same scope
    assert scope.step_scope(_transition(stray, prod_state, before="b", after="a"), scopes)
    [finding] = scope.step_scope(_transition(prod_state, stray, after="a"), scopes)
    assert finding.what.startswith("no track moves, but the state changes")


def test_touches_outside_the_tracks_sections_are_a_config_error():
    edited = PROD.edit(lambda s: s.step("dns", "switched").update(touches=["traffic.pools"]))
    with pytest.raises(Exception) as info:
        edited.config()
    assert "touches ['traffic.pools'] outside the track's sections ['dns']" in str(info.value)


def test_the_shipped_plan_steps_stay_in_scope():
    # every shipped step, forward and back, through the program and the pack (also covered by ./preview --all)
    result = preview(PROD.at(infra="traffic-50"), PROD)
    assert "plan-step-scope" not in result.names(mandatory=False), result.explain()


# --------------------------------------------------------------------------- rollout rules live once
def _deployment(r: Rollout) -> dict:
    return {
        "metadata": {"name": "api", "labels": {kubernetes.SERVING_LABEL: "true"}},
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": r.max_surge,
                                                                    "maxUnavailable": r.max_unavailable}},
            "revisionHistoryLimit": r.revision_history_limit,
            "template": {"spec": {
                "terminationGracePeriodSeconds": r.termination_grace_period_seconds,
                "containers": [{"name": "api", "readinessProbe": {"httpGet": {"path": r.readiness_path}},
                                "lifecycle": {"preStop": {"sleep": {"seconds": r.drain_seconds}}}}],
            }},
        },
    }


int_or_percent = st.one_of(st.integers(0, 3), st.sampled_from(["0%", "25%", "100%"]))


@settings(max_examples=120, deadline=None)
@given(int_or_percent, int_or_percent, st.integers(0, 6), st.integers(0, 40), st.integers(1, 60))
def test_preflight_and_the_kubernetes_policies_agree(surge, unavailable, history, drain, grace):
    r = Rollout(max_surge=surge, max_unavailable=unavailable, revision_history_limit=history, drain_seconds=drain,
                termination_grace_period_seconds=grace)
    config_side = {p.fix for p in rollout.rollout_problems(r)}
    props = _deployment(r)
    policy_side = {f.fix for f in kubernetes.zero_unavailable(props, "api")
                   + kubernetes.graceful_shutdown(props, "api", rollout.MIN_DRAIN_SECONDS)
                   + kubernetes.revision_history(props, "api", rollout.MIN_REVISION_HISTORY)}
    assert policy_side == config_side
    assert bool(config_side) == bool([line for line in preflight_lines(r)])


def preflight_lines(r: Rollout) -> list[str]:
    state = PROD.config().state()
    return preflight.state_problems(state.model_copy(update={"app": state.app.model_copy(update={"rollout": r})}))


def test_one_source_for_the_rollout_thresholds():
    assert kubernetes.CONFIG["drainSeconds"]["default"] == rollout.MIN_DRAIN_SECONDS
    assert kubernetes.CONFIG["minRevisionHistory"]["default"] == rollout.MIN_REVISION_HISTORY
    source = inspect.getsource(preflight) + inspect.getsource(kubernetes)
    assert "maxUnavailable\", \"must be 0" not in source and "def _is_zero" not in source


# --------------------------------------------------------------------------- the pack only assembles
def test_the_pack_is_the_rules_modules_policies():
    modules = [plan, scope, judging, traffic, dns, database, schema, kubernetes, safety, flags]
    assert [p.name for p in pack.POLICIES] == [p.name for m in modules for p in m.POLICIES]
    tree = ast.parse(inspect.getsource(pack))
    functions = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda, ast.AsyncFunctionDef))]
    assert functions == ["_schemas"]  # no rule, no policy body: only the list and the merged config schemas
    for module in modules:
        for policy in module.POLICIES:
            for key, schema_ in (policy.config_schema.properties if policy.config_schema else {}).items():
                assert pack.SCHEMAS[key] == schema_ and "default" in schema_, (policy.name, key)
