"""The apply job previews with the policy pack right before it applies, and applies exactly that preview.

``pulumi/actions`` ``command: up`` runs ``pulumi up --skip-preview``; without a preview
in the same job, the only guard would be the engine-side check. (actionlint itself runs
in tests/policies/test_workflows.py.)
"""

import yaml

from offline_preview.harness import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _steps(name):
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    return {job: spec["steps"] for job, spec in document["jobs"].items()}


def test_up_previews_with_the_pack_then_applies_that_plan():
    (steps,) = _steps("up.yml").values()
    runs = [i for i, s in enumerate(steps) if "pulumi preview" in s.get("run", "")]
    ups = [i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("pulumi/actions@")
           and s["with"].get("command") == "up"]
    assert len(runs) == 1 and len(ups) == 1 and runs[0] < ups[0]
    preview = steps[runs[0]]["run"]
    assert "--policy-pack policies" in preview and "--policy-pack-config policies/config.json" in preview
    assert '--save-plan "${RUNNER_TEMP}/plan.json"' in preview
    assert steps[ups[0]]["with"]["plan"] == "${{ runner.temp }}/plan.json"
    assert steps[ups[0]]["with"]["policyPacks"] == "policies"


def test_no_database_credentials_or_ssh_key_reach_the_runner_outside_pulumi_secrets():
    # The one database a workflow talks to is the PR job's throwaway shadow server (a service container on the
    # runner itself, with a password of its own): judged apart, then left out of the search.
    from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV

    preview = yaml.safe_load((WORKFLOWS / "preview.yml").read_text())
    offline = preview["jobs"]["offline"]
    shadow, dsn = offline.pop("services")["shadow"], offline.pop("env")[SHADOW_DSN_ENV]
    assert shadow["image"] == "postgres:15" and "host=127.0.0.1 " in dsn and "${{" not in dsn + str(shadow)
    text = "".join((WORKFLOWS / name).read_text() for name in ("up.yml", "watch.yml")) + yaml.safe_dump(preview)
    for word in ("DATABASE_URL", "PGPASSWORD", "5432", "6432", "SSH_PRIVATE_KEY", "ssh-agent"):
        assert word not in text


def test_pr_previews_say_which_main_commit_they_judged_against():
    jobs = _steps("preview.yml")
    offline = " ".join(s.get("run", "") for s in jobs["offline"])
    assert "Judged against ${BASE_REF} at ${base_sha}" in offline and "GITHUB_STEP_SUMMARY" in offline
    # main's stack file is the base: the PR job reads nothing of the stack (it holds no Pulumi token)
    assert list(jobs) == ["offline"] and "pulumi stack" not in offline
