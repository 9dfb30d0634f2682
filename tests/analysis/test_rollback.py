"""The rollback boundary alone: a recording stand-in `pulumi` on PATH (see conftest) plays the CLI.

These tests need no metrics: they check what is run, in which order, and how
a failure or an irreversible step is reported.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from bazbii_analysis import watch as watch_cli
from bazbii_analysis.rollback import RollbackFailed, RollbackPlan, run_rollback
from bazbii_analysis.verdict import FAIL, SignalResult

from .conftest import REPO, recorded_calls, write_stack_file


def _plan() -> RollbackPlan:
    return RollbackPlan(stack="prod", work_dir=REPO, track="infra", track_key="phase", from_step="traffic-50",
                        to_step="traffic-10", policy_pack=Path("policies"))


def test_rollback_sets_the_previous_step_then_runs_up_with_the_pack(recording_pulumi):
    output: list[str] = []
    run_rollback(_plan(), on_output=output.append)
    calls = [c for c in recorded_calls(recording_pulumi) if c[:1] != ["version"]]
    names = [" ".join(c[:2]) for c in calls]
    assert names.index("stack select") < names.index("config set") < names.index("up --yes")
    (config_set,) = [c for c in calls if c[:2] == ["config", "set"]]
    assert config_set[2:4] == ["bazbii:phase", "--plaintext"] and config_set[-1] == "traffic-10"
    assert "Resources: 3 updated" in "".join(output)


def test_failed_up_is_one_line(recording_pulumi, monkeypatch):
    monkeypatch.setenv("BAZBII_PULUMI_FAIL_UP", "1")
    with pytest.raises(RollbackFailed) as caught:
        run_rollback(_plan(), on_output=lambda _line: None)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("pulumi failed during the rollback to traffic-10:")


def test_irreversible_step_is_reported_not_rolled_back(tmp_path, recording_pulumi, capsys):
    path = write_stack_file(tmp_path, phase="db-switchover", endpoint="http://127.0.0.1:9", criteria={})
    args = watch_cli._parser().parse_args(["--config", str(path), "--duration", "1m",
                                           "--log-file", str(tmp_path / "rb.jsonl")])
    setup = watch_cli.setup_from_args(args, datetime.now(timezone.utc))
    breach = SignalResult("error-ratio", "errorRatio", "service", FAIL, value=0.05, max=0.01)
    assert watch_cli._roll_back(setup, args, watch_cli.Console(width=300), [breach], datetime.now(timezone.utc)) == 1
    out = capsys.readouterr().out
    assert "cannot be rolled back by config (the plan marks it irreversible by config)" in out
    assert [c for c in recorded_calls(recording_pulumi) if c[:1] != ["version"]] == []
    assert not (tmp_path / "rb.jsonl").exists()
