"""Where the engine rehearsal puts the twin: what production runs on other machines runs niced, and the servers'
disks (with the operator's workspace) are memory; the tests' twins are started as they are."""

import subprocess
import sys
from pathlib import Path

import pytest

import rehearsal.engine_walk as engine_walk
from engine.workspace import Workspace
from rehearsal.engine_walk import ELSEWHERE_NICENESS, servers_disk
from twin.environment import Twin
from twin.operator import TwinOperator

NICENESS_OF_CHILD = [sys.executable, "-c", "import os; print(os.nice(0))"]


def niceness(argv: list[str]) -> int:
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def started_niceness(twin: Twin) -> int:
    """How much nicer than this test a process the twin starts as ``elsewhere`` runs."""
    return niceness(twin.elsewhere(NICENESS_OF_CHILD)) - niceness(NICENESS_OF_CHILD)


def test_the_rehearsal_niceness_reaches_the_started_process(tmp_path: Path):
    assert 0 < ELSEWHERE_NICENESS <= 19
    twin = Twin(workdir=tmp_path, lab=None, elsewhere_niceness=ELSEWHERE_NICENESS)  # type: ignore[arg-type]
    own = niceness(NICENESS_OF_CHILD)
    assert started_niceness(twin) == min(own + ELSEWHERE_NICENESS, 19) - own  # nice caps at 19


def test_by_default_nothing_is_niced(tmp_path: Path):
    twin = Twin(workdir=tmp_path, lab=None)  # type: ignore[arg-type]
    assert twin.elsewhere(["pulumi", "up"]) == ["pulumi", "up"]
    assert started_niceness(twin) == 0


@pytest.mark.parametrize("niceness", [-1, 20])
def test_a_niceness_out_of_range_is_refused_before_anything_starts(tmp_path: Path, niceness: int):
    with pytest.raises(ValueError, match="elsewhere_niceness"):
        Twin.start_new(tmp_path / "twin", elsewhere_niceness=niceness)
    assert not (tmp_path / "twin").exists()


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
