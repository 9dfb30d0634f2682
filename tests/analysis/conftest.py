"""Fixtures: a real Prometheus scraping a real HAProxy and a real service whose health the test controls.

No metrics API is mocked (testsupport/metrics_stack.py). The only stand-in is
the ``pulumi`` executable the watch's rollback calls through the Automation
API (:func:`recording_pulumi`): there is no Pulumi CLI on this machine, and the
Automation API boundary is exactly where the stand-in sits; everything before
it (Prometheus, HAProxy, the evaluation, the decision) is real.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

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


STAND_IN = """#!{python}
# Stand-in for the pulumi CLI at the Automation API boundary (no Pulumi CLI exists here):
# records each invocation, answers what the Automation API reads back.
import json, os, sys
with open(os.environ["BAZBII_PULUMI_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
args = [a for a in sys.argv[1:] if a != "--non-interactive"]  # a global flag, anywhere
if args[:1] == ["version"]:
    print("v3.272.0")
elif args[:2] == ["stack", "output"]:
    print("{{}}")
elif args[:2] == ["stack", "history"]:
    print(json.dumps([{{"kind": "update", "startTime": "2026-01-01T00:00:00.000Z", "message": "",
                       "environment": {{}}, "config": {{}}, "result": "succeeded",
                       "endTime": "2026-01-01T00:00:01.000Z", "version": 2}}]))
elif args[:1] == ["up"] and os.environ.get("BAZBII_PULUMI_FAIL_UP"):
    print("error: update failed: policy violation", file=sys.stderr)
    sys.exit(255)
elif args[:1] == ["up"]:
    print("Updating (prod):")
    print("Resources: 3 updated")
"""


@pytest.fixture
def recording_pulumi(tmp_path, monkeypatch) -> Path:
    """A ``pulumi`` on PATH that records its arguments (one JSON list per line) in the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pulumi"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "pulumi-calls.jsonl"
    record.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("BAZBII_PULUMI_RECORD", str(record))
    monkeypatch.setenv("PULUMI_SKIP_UPDATE_CHECK", "true")
    return record


def recorded_calls(record: Path) -> list[list[str]]:
    """Each recorded invocation, without the global ``--non-interactive`` flag the Automation API adds."""
    calls = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    return [[a for a in call if a != "--non-interactive"] for call in calls]
