"""Pull requests nobody planned for, previewed exactly as a reviewer would (``--base applied --config proposed``).

Each class of unsafe edit from the policy issue has an unsafe pull request
(exit 1 naming the rule, or exit 2 naming the key for config errors) and a
safe counterpart that passes. Every denial's fix names the ``bazbii:`` key to
change, and no output ever carries a traceback or a secret.
"""

import copy
import json

import pytest

from offline_preview.harness import REPO_ROOT

from .prs import assert_allowed, assert_denied_by, at, denied_lines, preview_pr, run, step, write


# --------------------------------------------------------------------------- 9.1 config errors: exit 2, key named
def _rollout(doc, **values):
    doc["config"]["bazbii:app"]["rollout"].update(values)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: _rollout(d, maxUnavailable=1), "bazbii:app.rollout.maxUnavailable: must be 0"),
    (lambda d: _rollout(d, drainSeconds=5), "bazbii:app.rollout.drainSeconds: must be >= 15"),
    (lambda d: d["config"]["bazbii:schema"].update(migrationsDir="no-such-dir"),
     "bazbii:schema.migration.id: migration directory no-such-dir/0002_add_category does not exist"),
    (lambda d: step(d, "release", "canary-10")["changes"]["app"]["canary"].update(image="registry.example.com/bazbii/api"),
     "bazbii:plan.release.steps[2].changes.app.canary.image: 'registry.example.com/bazbii/api' has no version tag"),
])
def test_a_refused_edit_exits_2_naming_its_key(capsys, tmp_path, prod_doc, edit, expected):
    proposed = copy.deepcopy(prod_doc)
    edit(proposed)
    code, out, err = preview_pr(capsys, tmp_path, prod_doc, proposed)
    assert code == 2 and out == "", out
    lines = err.strip().splitlines()
    assert lines[0].startswith(expected), lines
    assert len(lines) == 1, lines  # one problem, one line (not one per step of the plan)
    assert "^[" not in err  # words, never the raw pattern

    code, out, _ = run(capsys, "--base", write(tmp_path, "applied.yaml", prod_doc),
                       "--config", write(tmp_path, "proposed.yaml", proposed), "--json")
    data = json.loads(out)
    assert code == 2 and data["transitions"] == []
    assert [e["key"] + ": " + e["message"] for e in data["errors"]][0].startswith(expected)


def test_a_refused_edit_in_a_later_step_names_the_step(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    step(proposed, "release", "api-2.0")["changes"]["app"]["rollout"] = {"maxUnavailable": 1}
    code, _, err = run(capsys, "--config", write(tmp_path, "proposed.yaml", proposed))
    assert code == 2
    assert err.strip().startswith("bazbii:app.rollout.maxUnavailable: must be 0") and "release=api-2.0" in err


def test_errors_of_the_base_file_say_so(capsys, tmp_path, prod_doc):
    applied = copy.deepcopy(prod_doc)
    _rollout(applied, maxSurge=0)
    code, out, err = preview_pr(capsys, tmp_path, applied, prod_doc)
    assert code == 2 and out == ""
    assert err.strip() == f"--base {tmp_path / 'applied.yaml'}: bazbii:app.rollout.maxSurge: must be >= 1: with " \
                          "maxUnavailable 0, a surge of 0 means the rollout can never progress"


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_text("config: [\n"), "not valid YAML at line 2, column 1"),
    (lambda p: p.write_text("- just a list\n"), "expected a mapping with a 'config:' mapping"),
    (lambda p: p.mkdir(), "cannot read the stack file"),
    (lambda p: None, "stack file not found"),
])
def test_unreadable_stack_files_exit_2_in_one_line(capsys, tmp_path, make, expected):
    path = tmp_path / "broken.yaml"
    make(path)
    for option in ("--config", "--base"):
        code, out, err = run(capsys, option, path)
        assert code == 2 and out == ""
        assert err.strip().splitlines() == [f"{option} {path}: {err.strip().split(': ', 1)[1]}"]
        assert expected in err
    code, out, _ = run(capsys, "--base", path, "--json")
    assert code == 2
    [error] = json.loads(out)["errors"]
    assert error["key"] == "--base" and error["file"] == str(path) and expected in error["message"]


@pytest.mark.parametrize("argv, expected", [
    (["--phase", "no-such-step"], "--phase no-such-step: step 'no-such-step' is in no track"),
    (["--phase", "infra=canary-10"], "--phase infra=canary-10: unknown step 'canary-10' on track 'infra'"),
    (["--base-age", "2x", "--phase", "traffic-50"], "--base-age '2x': use a number with s, m, h or d"),
    (["--track", "nope"], "--track nope: tracks are"),
])
def test_bad_arguments_exit_2(capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(expected), err


@pytest.mark.parametrize("text, expected", [
    ("{", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"traffic-weight-ladder": {"trafficLadder": [0, 100]}}',
     "config trafficLadder: [0, 100] is not allowed (weight rungs in percent; 0 and 100 are always rungs, and at "
     "least one rung lies between them)"),
    ('{"safety-parameter-bounds": {"maxMonitorRetries": -1}}', "config maxMonitorRetries: -1 is less than the minimum"),
])
def test_bad_policy_config_exits_2(capsys, tmp_path, text, expected):
    path = tmp_path / "policy.json"
    path.write_text(text)
    code, out, err = run(capsys, "--policy-config", path)
    assert code == 2 and out == ""
    assert err.startswith(f"--policy-config {path}: ") and expected in err, err


def test_shipped_policy_config_is_accepted(capsys):
    code, out, _ = run(capsys, "--policy-config", REPO_ROOT / "policies" / "config.json")
    assert code == 0, out


# --------------------------------------------------------------------------- 9.2 safety parameters
def _monitor_in_traffic_50(doc, **monitor):
    """(applied, proposed): traffic-50 changes the monitor too, and the applied plan declares it may."""
    applied = copy.deepcopy(doc)
    step(applied, "infra", "traffic-50")["touches"] = ["traffic.pools", "traffic.monitor"]  # only the safety rules judge it
    proposed = at(applied, phase="traffic-50")
    step(proposed, "infra", "traffic-50")["changes"]["traffic"]["monitor"] = monitor
    return applied, proposed


def test_weakening_the_monitor_while_traffic_moves_is_denied(capsys, tmp_path, prod_doc):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"safety-parameter-bounds": {"maxMonitorRetries": 5}}))
    out = assert_denied_by(capsys, tmp_path, *_monitor_in_traffic_50(prod_doc, retries=4),
                           {"safety-not-weakened"}, "--policy-config", policy)
    [line] = denied_lines(out, "safety-not-weakened")
    assert "bazbii:traffic.monitor.retries is weakened 2 -> 4 in a step that moves traffic" in line
    # within the bound, and stronger than applied: allowed
    assert_allowed(capsys, tmp_path, *_monitor_in_traffic_50(prod_doc, retries=1), "--policy-config", policy)


def test_weakening_past_the_bound_is_denied_by_both_rules(capsys, tmp_path, prod_doc):
    out = assert_denied_by(capsys, tmp_path, *_monitor_in_traffic_50(prod_doc, interval=120, path="/"),
                           {"safety-not-weakened", "safety-parameter-bounds"})
    bounds = " ".join(denied_lines(out, "safety-parameter-bounds"))
    assert "bazbii:traffic.monitor.interval is 120, which is above the limit 60" in bounds
    assert "bazbii:traffic.monitor.path is '/', which is not one of ['/healthz']" in bounds


def _lag_window_step(doc, window):
    """(applied, proposed): an infra step right after traffic-10 that only changes the lag gate's window (nothing
    moves), added to the plan first; the pull request moves to it."""
    applied = copy.deepcopy(doc)
    steps = applied["config"]["bazbii:plan"]["infra"]["steps"]
    index = next(i for i, s in enumerate(steps) if s["name"] == "traffic-10")
    steps.insert(index + 1, {
        "name": "lag-window", "summary": "Tune the lag gate window.", "gate": "None.", "rollback": "Set traffic-10.",
        "touches": ["database.lagGate"], "changes": {"database": {"lagGate": {"windowSeconds": window}}},
    })
    return applied, at(applied, phase="lag-window")


def test_a_lag_gate_window_below_its_bound_is_denied(capsys, tmp_path, prod_doc):
    out = assert_denied_by(capsys, tmp_path, *_lag_window_step(prod_doc, 0.5), {"safety-parameter-bounds"})
    assert "bazbii:database.lagGate.windowSeconds is 0.5, which is below the limit 1" in out
    assert_allowed(capsys, tmp_path, *_lag_window_step(prod_doc, 2))


# --------------------------------------------------------------------------- 9.3 step scope + secret-aware diff
def _pooler_in_traffic_50(doc, declare=False):
    """(applied, proposed): traffic-50 also moves the pooler; with ``declare`` the applied plan lets it."""
    applied = copy.deepcopy(doc)
    if declare:
        step(applied, "infra", "traffic-50")["touches"] = ["traffic.pools", "database.pooler.server",
                                                           "servers.server3.roles"]
    proposed = at(applied, phase="traffic-50")
    s = step(proposed, "infra", "traffic-50")
    s["changes"]["database"] = {"pooler": {"server": "server3"}}
    s["changes"]["servers"] = {"server3": {"roles": ["database", "pooler"]}}
    return applied, proposed


def test_moving_the_pooler_inside_a_traffic_step_is_denied_and_shown(capsys, tmp_path, prod_doc):
    out = assert_denied_by(capsys, tmp_path, *_pooler_in_traffic_50(prod_doc), {"plan-step-scope",
                                                                                 "db-pooler-moves-alone"})
    [line] = denied_lines(out, "plan-step-scope")
    assert "infra traffic-10 -> traffic-50 also changes bazbii:database.pooler.server, bazbii:servers.server3.roles" in line
    assert "infra step 'traffic-50' may change ['traffic.pools']" in line
    assert "declare them in bazbii:plan.infra.steps[5].touches" in line
    # The diff shows the host inside the secret DATABASE_URL and the SSH connection, never the secret itself.
    assert "stringData.DATABASE_URL.host: 203.0.113.11 -> 203.0.113.13" in out
    assert "connection.host: 203.0.113.11 -> 203.0.113.13" in out


def test_a_declared_scope_lifts_the_scope_rule_but_not_the_pooler_rule(capsys, tmp_path, prod_doc):
    # The applied plan lets traffic-50 touch the pooler, so plan-step-scope passes; the pooler still moves only
    # in a step of its own (tests/preview/test_judging_pull_requests.py has the safe counterpart).
    out = assert_denied_by(capsys, tmp_path, *_pooler_in_traffic_50(prod_doc, declare=True), {"db-pooler-moves-alone"})
    assert "bazbii:database.pooler.server server1 -> server3 (applied: server1)" in out


def test_a_base_edit_riding_along_a_release_step_is_denied(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, releasePhase="canary-50")
    proposed["config"]["bazbii:database"]["pooler"]["port"] = 6433
    out = assert_denied_by(capsys, tmp_path, prod_doc, proposed, {"plan-step-scope", "db-pooler-moves-alone"})
    assert "release canary-10 -> canary-50 also changes bazbii:database.pooler.port" in out
    assert_allowed(capsys, tmp_path, prod_doc, at(prod_doc, releasePhase="canary-50"))


def test_a_change_with_no_step_moving_is_denied(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    proposed["config"]["bazbii:gateway"]["image"] = "registry.example.com/bazbii/gateway:1.5.0"
    out = assert_denied_by(capsys, tmp_path, prod_doc, proposed, {"plan-step-scope"})
    assert "no track moves, but the state changes: bazbii:gateway.image" in out
    # the change inside the gateway's script shows as its changed lines, not as the script's first line
    assert "-sudo docker pull -q registry.example.com/bazbii/gateway:1.4.2" in out
    assert "+sudo docker pull -q registry.example.com/bazbii/gateway:1.5.0" in out


# --------------------------------------------------------------------------- 9.7 messages
def test_two_steps_back_is_denied_by_the_plan_rule_alone(capsys, tmp_path, prod_doc):
    applied = at(prod_doc, phase="traffic-100")
    out = assert_denied_by(capsys, tmp_path, applied, prod_doc, {"plan-one-step-at-a-time"})
    [line] = denied_lines(out, "plan-one-step-at-a-time")
    assert "goes back 2 steps (traffic-100 -> traffic-10)" in line
    assert "Fix: set bazbii:phase to 'traffic-50' (one step back)" in line
    assert "weight" not in line.split("Fix:", 1)[1]


def test_a_weight_jump_names_the_steps_key(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, phase="traffic-50")
    step(proposed, "infra", "traffic-50")["changes"]["traffic"]["pools"] = {"server1": {"weight": 0},
                                                                          "server2": {"weight": 100}}
    out = assert_denied_by(capsys, tmp_path, prod_doc, proposed, {"traffic-weight-ladder"})
    assert "Fix: set bazbii:plan.infra.steps[5].changes.traffic.pools.server2.weight to 50 (or less)" in out


def test_bad_arguments_are_json_too(capsys):
    code, out, _ = run(capsys, "--phase", "traffic-50", "--all", "--json")
    assert code == 2
    [error] = json.loads(out)["errors"]
    assert error["key"] == "arguments" and "not allowed with argument --phase" in error["message"]
