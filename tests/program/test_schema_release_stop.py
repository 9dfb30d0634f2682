"""Stopping a Job-runner migration: the resume command ends its wait when the Job fails (its pod was deleted:
the backfill stopped after its batch, exit 143) or when the Job itself was deleted, brings the workers back and
fails the update; it never waits out its timeout. Run against a stand-in kubectl that records its calls."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from components._util import LOCAL_INTERPRETER
from components.schema_release import resume_script

JOB = "migrate-0002-add-category-migrate-0123abcd"
STAND_IN = """#!/usr/bin/env bash
# Stand-in for kubectl: records each call and answers from $JOB_STATE (succeeded | failed | deleted | running).
echo "$*" >> "$KUBECTL_LOG"
case "$*" in
  *"get job/"*"--ignore-not-found"*) [ "$JOB_STATE" = deleted ] || echo "job.batch/${*##*job/}" ;;
  *"get job/"*".status.succeeded"*) [ "$JOB_STATE" = succeeded ] && echo 1 ;;
  *"get job/"*".status.failed"*) [ "$JOB_STATE" = failed ] && echo 1 ;;
  *"rollout status"*) [ "${ROLLOUT:-ready}" = ready ] || exit 1 ;;
  *"logs job/"*) [ "$JOB_STATE" = deleted ] && exit 1; echo "backfill 0002_add_category/posts_category: stopped by SIGTERM after key 4200 of 90000" ;;
esac
exit 0
"""


def _resume(tmp_path, state: str, rollout: str = "ready") -> tuple[subprocess.CompletedProcess, str, float]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(STAND_IN)
    (bin_dir / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.write_text("")
    started = time.monotonic()
    result = subprocess.run([*LOCAL_INTERPRETER, resume_script("bazbii", 2, JOB, timeout=600, stage_label="0002 migrate")],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_LOG": str(log),
                                 "JOB_STATE": state, "ROLLOUT": rollout})
    return result, log.read_text(), time.monotonic() - started


@pytest.mark.parametrize("state, code", [("succeeded", 0), ("failed", 1), ("deleted", 1)])
def test_the_resume_command_ends_its_wait_on_every_outcome_and_brings_the_workers_back(tmp_path, state, code):
    result, calls, took = _resume(tmp_path, state)
    assert result.returncode == code, result.stderr
    assert took < 10  # never the 600 s timeout
    assert "scale deployment/worker --replicas=2" in calls
    if state == "deleted":
        assert f"wait --for=delete pod -l job-name={JOB}" in calls  # its pod stops after the batch first
        assert f"migration job {JOB} deleted; workers resumed" in result.stderr
    if state == "failed":  # e.g. its pod was deleted: the backfill stopped; the log says where
        assert "stopped by SIGTERM after key 4200" in result.stdout
        assert f"migration job {JOB} failed; workers resumed" in result.stderr


def test_the_update_ends_with_the_workers_ready_or_fails_saying_they_are_not(tmp_path):
    result, calls, _ = _resume(tmp_path, "succeeded", rollout="stuck")
    assert result.returncode == 1
    assert "rollout status deployment/worker --timeout=300s" in calls
    assert "workers scaled back to 2 are not ready after 300s" in result.stderr
