"""Fixtures: a real Prometheus scraping a real HAProxy and a real service whose health the test controls, and
a real git remote whose main names what is applied.

No metrics API is mocked (testsupport/metrics_stack.py); the remote is a bare repository
(testsupport/gitremote.py). GitHub's API is the one stand-in (testsupport/github_standin.py, test_watch.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from bazbii_analysis.watchsetup import load_offline_config
from testsupport.gitremote import bare_remote, clone, commit, git, show
from testsupport.metrics_stack import MetricsStack, start_metrics_stack

REPO = Path(__file__).resolve().parents[2]
SCRAPE_SETTLE = 2.5  # seconds: a 1 s scrape plus ingestion, generous for a loaded machine


@pytest.fixture(scope="session")
def metrics_stack() -> MetricsStack:
    stack = start_metrics_stack()
    yield stack
    stack.stop()


@dataclass
class Phase:
    started: datetime
    requests: int


def run_phase(stack: MetricsStack, *, error_percent: int, latency: float = 0.003, seconds: float = 5.0,
              max_requests: int | None = None) -> Phase:
    """Set the service's health, drive real requests through HAProxy, wait until Prometheus scraped them."""
    stack.service.set(error_percent=error_percent, latency=latency)
    time.sleep(1.1)  # a scrape between phases, so the window starts after the previous phase's last increment
    started = datetime.now(timezone.utc)
    requests = stack.drive(seconds, max_requests=max_requests)
    time.sleep(SCRAPE_SETTLE)
    return Phase(started, requests)


def write_stack_file(tmp_path: Path, *, phase: str, endpoint: str | None, criteria: dict[str, dict]) -> Path:
    """A copy of the prod stack file with the infra track at ``phase`` and some steps' criteria replaced."""
    document = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())
    config = document["config"]
    config["bazbii:phase"] = phase
    if endpoint is not None:
        config["bazbii:metrics"] = {"endpoint": endpoint, "timeoutSeconds": 3}
    for step in config["bazbii:plan"]["infra"]["steps"]:
        if step["name"] in criteria:
            step["criteria"] = criteria[step["name"]]
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --------------------------------------------------------------------------- a repository whose main names what is applied
WATCHED = {"traffic-100": {"soak": "60s", "scope": {"kind": "pool", "name": "server2"}, "minSamples": 20}}
STACK_FILE = "Pulumi.prod.yaml"


@dataclass
class Repository:
    remote: Path
    operator: Path  # where people commit
    runner: Path  # the workflow's checkout the watch runs in

    def main_phase(self) -> str:
        return yaml.safe_load(show(self.remote, "main", STACK_FILE))["config"]["bazbii:phase"]


def repository(tmp_path: Path, endpoint: str, phases=("traffic-10", "traffic-50"), criteria=None) -> Repository:
    """A remote whose main moved through ``phases`` one commit each, and the runner's clone of it."""
    remote = bare_remote(tmp_path / "git")
    operator = clone(remote, tmp_path / "git" / "operator")
    for phase in phases:
        path = write_stack_file(tmp_path, phase=phase, endpoint=endpoint, criteria=WATCHED if criteria is None else criteria)
        commit(operator, {STACK_FILE: path.read_text()}, f"bazbii:phase {phase}")
    git(operator, "push", "--quiet", "origin", "main")
    return Repository(remote, operator, clone(remote, tmp_path / "git" / "runner"))


def applied_record(tmp_path: Path, repo: Repository, since: datetime, track: str = "infra") -> Path:
    """The stack's appliedRecord as `pulumi stack output appliedRecord --json` prints it (steps and their times)."""
    config = load_offline_config(repo.runner / STACK_FILE)
    earlier = (since - timedelta(days=3)).isoformat()
    record = {"version": 1, "steps": dict(config.current),
              "since": {name: (since.isoformat() if name == track else earlier) for name in config.current}}
    path = tmp_path / "applied-record.json"
    path.write_text(json.dumps(record))
    return path
