"""Where the engine rehearsal puts the twin: what production runs on other machines runs under SCHED_IDLE (and
what it starts inherits it), and the servers' disks (with the operator's workspace) are memory; the tests'
twins are started as they are."""

import os
import subprocess
import sys
from pathlib import Path

import rehearsal.engine_walk as engine_walk
from engine.workspace import Workspace
from rehearsal.engine_walk import ELSEWHERE_IDLE, servers_disk
from twin.environment import Twin
from twin.operator import TwinOperator

# A child that starts its own child (as pulumi starts the language host and the plugins): its policy is printed.
POLICY_OF_GRANDCHILD = [sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', "
                        "'import os; print(os.sched_getscheduler(0))'], check=True)"]


def policy(twin: Twin) -> int:
    return int(subprocess.run(twin.elsewhere(POLICY_OF_GRANDCHILD), capture_output=True, text=True, check=True).stdout)


def test_the_rehearsal_runs_what_is_elsewhere_under_sched_idle_down_to_what_it_starts(tmp_path: Path):
    assert ELSEWHERE_IDLE
    twin = Twin(workdir=tmp_path, lab=None, elsewhere_idle=ELSEWHERE_IDLE)  # type: ignore[arg-type]
    assert policy(twin) == os.SCHED_IDLE


def test_by_default_nothing_is_rescheduled(tmp_path: Path):
    twin = Twin(workdir=tmp_path, lab=None)  # type: ignore[arg-type]
    assert twin.elsewhere(["pulumi", "up"]) == ["pulumi", "up"]
    assert policy(twin) == os.sched_getscheduler(0) != os.SCHED_IDLE


def test_the_servers_disk_is_memory_where_there_is_some(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(engine_walk, "MEMORY_DISK", tmp_path)
    assert servers_disk() == tmp_path
    monkeypatch.setattr(engine_walk, "MEMORY_DISK", tmp_path / "absent")
    assert servers_disk() is None  # the system's temporary directory


def test_the_operators_workspace_is_made_beside_the_twin(tmp_path: Path, monkeypatch):
    made = []

    def prepare_nothing(self, steps, document):
        made.append(self.workspace.root)

    monkeypatch.setattr(TwinOperator, "_prepare", prepare_nothing)
    twin = Twin(workdir=tmp_path / "twin", lab=None, scratch=tmp_path)  # type: ignore[arg-type]
    operator = TwinOperator.create(twin)
    try:
        assert made == [operator.workspace.root] and operator.workspace.root.parent == tmp_path
    finally:
        operator.workspace.cleanup()
    workspace = Workspace.create(parent=None)
    try:
        assert workspace.root.parent != tmp_path
    finally:
        workspace.cleanup()
