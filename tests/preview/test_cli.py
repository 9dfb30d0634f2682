"""The main job, ./preview: offline preview of the prod stack with every policy.

The unsafe edits listed in the policy issue's "done when" are each written as
a stack-file edit and previewed exactly as a reviewer would
(``--base applied.yaml --config proposed.yaml``): each must be denied with a
message naming the rule and the fix.
"""

import copy
import json
import os
import subprocess

from offline_preview.harness import REPO_ROOT

from .prs import run, step, write


def test_default_previews_current_and_next_infra_step(capsys):
    code, out, _ = run(capsys)
    assert code == 0
    assert "current step: infra: gateway-on-server2 -> traffic-10" in out
    assert "next step: infra: traffic-10 -> traffic-50" in out
    assert "randomSteering.poolWeights.traffic-server2: 0.1 -> 0.5" in out
    # Nothing measured and no apply time given: the policies pass, the live gates are left unjudged.
    assert "\npolicies passed; live gate not evaluated: 2 transition(s) checked, 0 failed" in out
    assert "infra step 'traffic-50': soak, error-ratio, p95-latency" in out and "ALLOWED" not in out


def test_json_output_is_machine_readable(capsys):
    code, out, _ = run(capsys, "--json")
    data = json.loads(out)
    assert code == 0 and data["failedTransitions"] == 0 and data["outcome"] == "live-gate-not-evaluated"
    (next_step,) = [t for t in data["transitions"] if t["title"].startswith("next step")]
    weights = [c for r in next_step["resourceChanges"] for c in r["changes"] if c["path"].startswith("randomSteering.poolWeights")]
    assert {(c["path"], c["before"], c["after"]) for c in weights} == {
        ("randomSteering.poolWeights.traffic-server1", 0.9, 0.5),
        ("randomSteering.poolWeights.traffic-server2", 0.1, 0.5),
    }


def test_phase_jump_is_denied_naming_rule_and_fix(capsys):
    code, out, _ = run(capsys, "--phase", "traffic-100")
    assert code == 1
    assert "plan-one-step-at-a-time" in out and "apply 'traffic-50' first" in out
    assert "DENIED" in out


def test_whole_plan_passes(capsys):
    code, out, err = run(capsys, "--all")
    assert code == 0, out
    assert "this rollback must be refused: the plan declares the step irreversible" in out
    # progress on stderr (not a terminal here: one line per transition, naming it)
    checked = int(out.rsplit("ALLOWED: ", 1)[1].split()[0])
    assert err.splitlines()[0].startswith(f"check 1/{checked}: first deployment")
    assert f"check {checked}/{checked}: " in err


def assert_denied(capsys, tmp_path, applied, proposed, rule):
    code, out, _ = run(capsys, "--base", str(write(tmp_path, "applied.yaml", applied)),
                       "--config", str(write(tmp_path, "proposed.yaml", proposed)))
    assert code == 1, out
    lines = [line for line in out.splitlines() if line.startswith("mandatory") and rule in line]
    assert lines, out
    assert any("Fix:" in line for line in lines), lines


def test_pr_that_skips_a_step_is_denied(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    proposed["config"]["bazbii:phase"] = "traffic-100"
    assert_denied(capsys, tmp_path, prod_doc, proposed, "plan-one-step-at-a-time")


def test_pr_that_jumps_weights_is_denied(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    step(proposed, "infra", "traffic-50")["changes"]["traffic"]["pools"] = {"server1": {"weight": 0}, "server2": {"weight": 100}}
    proposed["config"]["bazbii:phase"] = "traffic-50"
    assert_denied(capsys, tmp_path, prod_doc, proposed, "traffic-weight-ladder")


def test_pr_that_switches_dns_without_lowering_ttl_is_denied(capsys, tmp_path, prod_doc):
    applied = copy.deepcopy(prod_doc)
    step(applied, "dns", "ttl-lowered").pop("changes")  # the TTL was never lowered
    proposed = copy.deepcopy(applied)
    proposed["config"]["bazbii:dnsPhase"] = "switched"
    assert_denied(capsys, tmp_path, applied, proposed, "dns-")


def test_pr_that_promotes_an_ungated_replica_is_denied(capsys, tmp_path, prod_doc):
    applied = copy.deepcopy(prod_doc)
    step(applied, "infra", "replica-streaming")["changes"]["database"]["replicas"]["server3"]["lagGate"] = False
    applied["config"].update({"bazbii:phase": "server1-resized", "bazbii:dnsPhase": "switched"})
    proposed = copy.deepcopy(applied)
    proposed["config"]["bazbii:phase"] = "db-switchover"
    assert_denied(capsys, tmp_path, applied, proposed, "db-promote-only-gated-replica")


def test_pr_that_contracts_early_is_denied(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    step(proposed, "schema", "0002-contract").pop("requires")  # the edit drops the plan's own guard
    proposed["config"]["bazbii:schemaPhase"] = "0002-contract"
    assert_denied(capsys, tmp_path, prod_doc, proposed, "schema-contract")


def test_bad_config_gives_key_named_lines_and_exit_2(capsys, tmp_path, prod_doc):
    proposed = copy.deepcopy(prod_doc)
    step(proposed, "infra", "traffic-50")["changes"]["traffic"]["pools"]["server2"]["weight"] = 500
    code, out, err = run(capsys, "--config", str(write(tmp_path, "bad.yaml", proposed)))
    assert code == 2 and out == ""
    assert err.strip() == "bazbii:plan.infra.steps[5].changes.traffic.pools.server2.weight: must be 0..100"


def test_preview_script_runs_from_the_shell():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run([str(REPO_ROOT / "preview"), "--phase", "traffic-100"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "plan-one-step-at-a-time" in result.stdout


def test_bad_policy_config_is_a_clear_error(capsys, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{"traffic-weight-ladder": {"trafficLadder": "nope"}}')
    code, out, err = run(capsys, "--policy-config", str(path))
    assert code == 2 and out == ""
    assert "traffic-weight-ladder: config trafficLadder: 'nope' is not of type 'array'" in err
