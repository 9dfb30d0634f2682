"""``watch`` unattended: a real Prometheus (see conftest), a real git remote, GitHub at its API boundary.

The remote is a bare repository whose ``main`` names what is applied (testsupport/gitremote.py); the watch
runs in a clone of it, as the scheduled workflow's checkout. GitHub's API cannot be reached from here: the
stand-in (testsupport/github_standin.py) answers the calls the watch makes and records them. The applied
record is given as the JSON ``pulumi stack output appliedRecord`` prints; the real stack, the real engine
and the apply of the rollback are in tests/engine/test_operate.py.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from bazbii_analysis import watch as watch_cli
from bazbii_analysis.verdict import FAIL, SignalResult
from bazbii_analysis.watchsetup import setup_from_args
from testsupport.github_standin import GitHubStandIn
from testsupport.gitremote import commit, git, show
from testsupport.localcluster import free_port

from .conftest import STACK_FILE, Repository, applied_record, repository, write_stack_file


@pytest.fixture
def github(monkeypatch):
    standin = GitHubStandIn(repo="bazbii/bazbii-infra", token="ghs_test_token").start()
    for name, value in standin.env().items():
        monkeypatch.setenv(name, value)
    yield standin
    standin.stop()


def _args(repo: Repository, record: Path, *extra: str) -> list[str]:
    return ["--repo", str(repo.runner), "--applied-record", str(record), "--interval", "1", "--window", "4s",
            "--min-samples", "20", "--duration", "40s", *extra]


def _drive_then_break(stack, healthy_seconds: float, stop: threading.Event) -> threading.Thread:
    def run():
        stack.service.set(error_percent=0, latency=0.003)
        stack.drive(healthy_seconds, stop=stop)
        stack.service.set(error_percent=3, latency=0.003)
        stack.drive(60, stop=stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _watch_breaking(metrics_stack, argv) -> int:
    stop = threading.Event()
    driver = _drive_then_break(metrics_stack, 5, stop)
    try:
        return watch_cli.main(argv)
    finally:
        stop.set()
        driver.join()


def test_a_breach_commits_the_previous_step_to_main_and_dispatches_the_apply(metrics_stack, tmp_path, github, capsys):
    repo = repository(tmp_path, metrics_stack.prometheus_url)
    runner_head = git(repo.runner, "rev-parse", "HEAD").strip()
    before = git(repo.remote, "rev-parse", "main").strip()
    rc = _watch_breaking(metrics_stack, _args(repo, applied_record(tmp_path, repo, datetime.now(timezone.utc))))
    out = capsys.readouterr().out
    print(out)
    assert rc == 1
    assert "BREACH: rolling infra back one step through git, traffic-50 -> traffic-10" in out
    assert repo.main_phase() == "traffic-10"
    # one commit on top of main, changing one line of the stack file, saying why
    assert git(repo.remote, "rev-parse", "main~1").strip() == before
    diff = git(repo.remote, "diff", "--unified=0", "main~1", "main")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-  bazbii:phase: traffic-50", "+  bazbii:phase: traffic-10"]
    message = git(repo.remote, "log", "-1", "--format=%an%n%B", "main")
    assert message.startswith("bazbii watch\nRoll back infra: bazbii:phase traffic-50 -> traffic-10")
    assert "FAIL         error-ratio [pool server2]" in message
    # the runner's checkout is untouched; GitHub was asked to apply main and told why
    assert git(repo.runner, "rev-parse", "HEAD").strip() == runner_head
    assert git(repo.runner, "status", "--porcelain") == ""
    assert github.dispatches == [{"workflow": "up.yml", "ref": "main"}]
    (issue,) = github.issues
    assert issue["title"] == "bazbii watch: rolled back infra traffic-50 -> traffic-10"
    assert "error-ratio [pool server2]" in issue["body"] and issue["labels"] == ["bazbii-watch"]
    assert all(call.authorized for call in github.calls)


def test_a_breach_can_open_a_rollback_pull_request_instead(metrics_stack, tmp_path, github, capsys):
    repo = repository(tmp_path, metrics_stack.prometheus_url)
    before = git(repo.remote, "rev-parse", "main").strip()
    rc = _watch_breaking(metrics_stack, _args(repo, applied_record(tmp_path, repo, datetime.now(timezone.utc)),
                                              "--rollback", "pull-request"))
    assert rc == 1, capsys.readouterr().out
    assert git(repo.remote, "rev-parse", "main").strip() == before  # main changes when the pull request merges
    (pull,) = github.pulls
    assert pull["base"] == "main" and pull["head"].startswith("rollback/infra-traffic-10-")
    assert pull["title"] == "Roll back infra: bazbii:phase traffic-50 -> traffic-10"
    proposed = yaml.safe_load(show(repo.remote, pull["head"], STACK_FILE))["config"]["bazbii:phase"]
    assert proposed == "traffic-10"
    assert github.dispatches == [] and len(github.issues) == 1 and pull["html_url"] in github.issues[0]["body"]


def test_dry_run_changes_nothing_anywhere(metrics_stack, tmp_path, github, capsys):
    repo = repository(tmp_path, metrics_stack.prometheus_url)
    before = git(repo.remote, "for-each-ref")
    rc = _watch_breaking(metrics_stack, _args(repo, applied_record(tmp_path, repo, datetime.now(timezone.utc)),
                                              "--dry-run"))
    out = capsys.readouterr().out
    assert rc == 1
    assert "dry run: would push" in out and "Roll back infra: bazbii:phase traffic-50 -> traffic-10" in out
    assert git(repo.remote, "for-each-ref") == before and github.calls == []


def test_silent_metrics_alert_after_k_rounds_once_per_issue(tmp_path, github, capsys):
    down = f"http://127.0.0.1:{free_port()}"
    repo = repository(tmp_path, down)
    record = applied_record(tmp_path, repo, datetime.now(timezone.utc) - timedelta(seconds=10))
    argv = ["--repo", str(repo.runner), "--applied-record", str(record), "--interval", "0.2",
            "--max-inconclusive", "2", "--duration", "40s"]
    assert watch_cli.main(argv) == 3
    out = capsys.readouterr().out
    assert "SILENT: infra at 'traffic-50': 2 consecutive rounds could not tell (--max-inconclusive 2)" in out
    assert "round 3" not in out
    (issue,) = github.issues
    assert issue["title"] == "bazbii watch: metrics silent for infra at 'traffic-50'"
    assert f"metrics endpoint {down} is unreachable" in issue["body"]
    # still silent on the next run: a comment on the same issue; with --json, stdout is one document
    assert watch_cli.main([*argv, "--json"]) == 3
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["outcome"], summary["exit"], summary["rounds"], summary["healthyRounds"]) == ("silent", 3, 2, 0)
    assert [r["status"] for r in summary["results"]] == ["inconclusive", "inconclusive"]
    assert "SILENT: infra at 'traffic-50'" in captured.err
    assert len(github.issues) == 1 and len(github.comments[issue["number"]]) == 1
    assert repo.main_phase() == "traffic-50" and github.dispatches == [] and github.pulls == []


def test_a_healthy_step_ends_ok_and_a_finished_period_has_nothing_to_watch(metrics_stack, tmp_path, github, capsys):
    repo = repository(tmp_path, metrics_stack.prometheus_url)
    stop = threading.Event()
    metrics_stack.service.set(error_percent=0, latency=0.003)
    driver = threading.Thread(target=metrics_stack.drive, args=(60,), kwargs={"stop": stop}, daemon=True)
    driver.start()
    try:
        # applied now: every window starts after the healthy traffic did
        rc = watch_cli.main(_args(repo, applied_record(tmp_path, repo, datetime.now(timezone.utc)), "--duration", "7s"))
    finally:
        stop.set()
        driver.join()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "HEALTHY: infra at 'traffic-50'" in out
    # applied an hour ago, traffic-100's soak (its watch period) is 60 s: nothing left to watch
    rc = watch_cli.main(_args(repo, applied_record(tmp_path, repo, datetime.now(timezone.utc) - timedelta(hours=1))))
    assert rc == 0
    assert "nothing to watch: infra at 'traffic-50'" in capsys.readouterr().out
    assert github.calls == [] and repo.main_phase() == "traffic-50"


def _breach_of(tmp_path, repo: Repository, since: datetime, *extra: str):
    """The watch's decision after a failing round (the failing round itself is measured in the tests above)."""
    argv = _args(repo, applied_record(tmp_path, repo, since), *extra)
    args = watch_cli._parser().parse_args(argv)
    setup = setup_from_args(args, datetime.now(timezone.utc))
    breach = SignalResult("error-ratio", "errorRatio", "service", FAIL, value=0.05, max=0.01)
    console = watch_cli.Console(width=300)
    alerts = watch_cli.Alerts(watch_cli.GitHub.from_environment(), console)
    return watch_cli._breach(setup, args, console, alerts, [breach], datetime.now(timezone.utc))


@pytest.mark.parametrize("case", ["main moved on", "reached by a rollback", "irreversible", "first step"])
def test_no_rollback_when_it_would_not_be_the_right_change(tmp_path, github, capsys, case):
    phases = {"main moved on": ("traffic-10", "traffic-50"),
              "reached by a rollback": ("traffic-10", "traffic-50", "traffic-100", "traffic-50"),
              "irreversible": ("server1-resized", "db-switchover"),
              "first step": ("mvp",)}[case]
    repo = repository(tmp_path, "http://127.0.0.1:9", phases=phases, criteria={})
    if case == "main moved on":  # a person merged traffic-100 after the watch's checkout
        path = write_stack_file(tmp_path, phase="traffic-100", endpoint="http://127.0.0.1:9", criteria={})
        commit(repo.operator, {STACK_FILE: path.read_text()}, "bazbii:phase traffic-100")
        git(repo.operator, "push", "--quiet", "origin", "main")
    before = git(repo.remote, "for-each-ref")
    assert _breach_of(tmp_path, repo, datetime.now(timezone.utc) - timedelta(minutes=1)) == 1
    out = capsys.readouterr().out
    expected = {"main moved on": "main names bazbii:phase = traffic-100 now, not 'traffic-50'",
                "reached by a rollback": "'traffic-50' was itself reached by a rollback (bazbii:phase traffic-100 -> "
                                         "traffic-50 on main)",
                "irreversible": "the plan marks it irreversible by config",
                "first step": "it is the first step of its track"}[case]
    assert expected in out, out
    assert git(repo.remote, "for-each-ref") == before
    (issue,) = github.issues
    assert issue["title"].startswith("bazbii watch: breach at infra at") and issue["title"].endswith("not rolled back")
    assert github.dispatches == [] and github.pulls == []


def test_bad_arguments_exit_2_naming_the_option(tmp_path, capsys):
    repo = repository(tmp_path, "http://127.0.0.1:9")
    record = applied_record(tmp_path, repo, datetime.now(timezone.utc))
    assert watch_cli.main(_args(repo, record, "--max-inconclusive", "0")) == 2
    assert "--max-inconclusive: must be at least 1" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert watch_cli.main(_args(repo, tmp_path / "broken.json")) == 2
    assert f"--applied-record {tmp_path / 'broken.json'}: not JSON" in capsys.readouterr().err
