"""Flag edits reviewed as a pull request: ``./preview --base applied.yaml --config proposed.yaml``.

Each unsafe flag edit is a stack-file edit previewed exactly as a reviewer
would; it must be denied (exit 1) with a line naming the rule and a ``Fix:``
naming the config key. The safe ones pass (exit 0).
"""

import copy

import pytest
import yaml

from offline_preview.__main__ import main
from offline_preview.harness import REPO_ROOT

FLAG = "new_category_ui"
READY = {"bazbii:phase": "old-db-retired", "bazbii:dnsPhase": "ttl-restored",
         "bazbii:releasePhase": "api-2.0", "bazbii:schemaPhase": "0002-migrate"}


@pytest.fixture(scope="module")
def prod_doc():
    return yaml.safe_load((REPO_ROOT / "Pulumi.prod.yaml").read_text())


def stack(doc, flags, **pointers):
    out = copy.deepcopy(doc)
    out["config"].update(READY)
    out["config"].update({f"bazbii:{k}": v for k, v in pointers.items()})
    out["config"]["bazbii:flagsPhase"] = flags
    return out


def flag_step(doc, name):
    return next(s for s in doc["config"]["bazbii:plan"]["flags"]["steps"] if s["name"] == name)


def preview(capsys, tmp_path, applied, proposed, *extra):
    paths = []
    for name, doc in (("applied.yaml", applied), ("proposed.yaml", proposed)):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(str(path))
    code = main(["--base", paths[0], "--config", paths[1], *extra])
    out, _ = capsys.readouterr()
    return code, out


def assert_denied(code, out, rule, fix_key):
    assert code == 1, out
    lines = [line for line in out.splitlines() if line.startswith("mandatory") and rule in line]
    assert lines, out
    assert any("Fix:" in line and fix_key in line.split("Fix:", 1)[1] for line in lines), lines
    assert "DENIED" in out


def test_raising_a_flag_one_rung_after_its_soak_passes(capsys, tmp_path, prod_doc):
    code, out = preview(capsys, tmp_path, stack(prod_doc, "new-category-ui-10"), stack(prod_doc, "new-category-ui-50"),
                        "--base-age", "25h")
    assert code == 0, out
    assert "PASS         soak [previous step]: 1d1h" in out  # the step's own soak, judged from --base-age
    assert "policies passed; live gate not evaluated" in out  # its metric parts are left for --metrics
    # The same move before the step's soak is over: the time-only part of the gate denies it.
    code, out = preview(capsys, tmp_path, stack(prod_doc, "new-category-ui-10"), stack(prod_doc, "new-category-ui-50"),
                        "--base-age", "3h")
    assert code == 1 and "FAIL         soak [previous step]: 3h" in out and "DENIED" in out, out


def test_skipping_a_rung_is_denied(capsys, tmp_path, prod_doc):
    applied = stack(prod_doc, "new-category-ui-10")
    proposed = copy.deepcopy(applied)
    flag_step(proposed, "new-category-ui-50")["changes"]["flags"][FLAG]["rollout"] = 100
    proposed["config"]["bazbii:flagsPhase"] = "new-category-ui-50"
    code, out = preview(capsys, tmp_path, applied, proposed, "--base-age", "25h")
    assert_denied(code, out, "flags-rollout-ladder", f"flags.{FLAG}.rollout")


def test_enabling_before_the_version_rolled_out_is_denied(capsys, tmp_path, prod_doc):
    applied = stack(prod_doc, "new-category-ui-0", releasePhase="canary-50")
    flag_step(applied, "new-category-ui-10").pop("requires")  # the edit drops the plan's own guard
    proposed = copy.deepcopy(applied)
    proposed["config"]["bazbii:flagsPhase"] = "new-category-ui-10"
    code, out = preview(capsys, tmp_path, applied, proposed)
    assert_denied(code, out, "flags-on-only-where-understood", f"flags.{FLAG}.rollout")
    assert "runs registry.example.com/bazbii/api:1.9.0 (1.9.0 < 2.0.0)" in out


def test_removing_the_old_path_too_early_is_denied(capsys, tmp_path, prod_doc):
    code, out = preview(capsys, tmp_path, stack(prod_doc, "new-category-ui-100"),
                        stack(prod_doc, "new-category-ui-old-path-removed"), "--base-age", "3h")
    assert_denied(code, out, "flags-old-path-after-soak", f"flags.{FLAG}.soakHours")
    assert "after only 3 h at 100 %, less than its soak of 24 h" in out


def test_removing_the_old_path_after_the_soak_passes(capsys, tmp_path, prod_doc):
    code, out = preview(capsys, tmp_path, stack(prod_doc, "new-category-ui-100"),
                        stack(prod_doc, "new-category-ui-old-path-removed"), "--base-age", "2d")
    assert code == 0, out


def test_contract_before_the_flag_held_100_is_denied(capsys, tmp_path, prod_doc):
    applied = stack(prod_doc, "new-category-ui-50")
    contract = next(s for s in applied["config"]["bazbii:plan"]["schema"]["steps"] if s["name"] == "0002-contract")
    contract["requires"].pop("flags")  # the edit drops the plan's own guard
    proposed = copy.deepcopy(applied)
    proposed["config"]["bazbii:schemaPhase"] = "0002-contract"
    code, out = preview(capsys, tmp_path, applied, proposed, "--base-age", "2d")
    assert_denied(code, out, "flags-contract-after-old-path", f"flags.{FLAG}.rollout")
    assert_denied(code, out, "flags-contract-after-old-path", f"flags.{FLAG}.oldPath.removed")


def test_contract_after_the_old_path_removal_passes(capsys, tmp_path, prod_doc):
    applied = stack(prod_doc, "new-category-ui-old-path-removed")
    proposed = stack(prod_doc, "new-category-ui-old-path-removed", schemaPhase="0002-contract")
    code, out = preview(capsys, tmp_path, applied, proposed, "--base-age", "2d")
    assert code == 0, out
