"""The tests that run what users run: the real ``pulumi`` CLI, its plugins and the policy analyzer.

Everything comes from the engine build (``python -m engine.build``, run by ``./test``). When a part of
it could not be built, every test that needs it is skipped with the build's reason (the pytest summary
lists it: ``-rs``); nothing here is skipped silently.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from engine.build import EngineUnavailable, Installed, installed
from testsupport.pulumi_cli import Workspace

REPO = Path(__file__).resolve().parents[2]
# What a copy of the program needs (the rest of the repository is tests, tools and docs).
PROGRAM_FILES = ("__main__.py", "Pulumi.yaml", "Pulumi.prod.yaml", "requirements.txt")
PROGRAM_DIRS = ("components", "bazbii_plan", "bazbii_db", "bazbii_analysis", "migrations", "policies")

pytestmark = pytest.mark.engine


def need(engine: Installed, *parts: str) -> None:
    try:
        engine.need(*parts)
    except EngineUnavailable as exc:
        pytest.skip(f"real engine: {exc}")


@pytest.fixture(scope="session")
def engine() -> Installed:
    try:
        found = installed()
    except EngineUnavailable as exc:
        pytest.skip(f"real engine: {exc}")
    need(found, "cli", "plugins")
    return found


def program_copy(target: Path) -> Path:
    """The program as users check it out, in ``target``, sharing the repository's virtualenv."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PROGRAM_FILES:
        shutil.copy(REPO / name, target / name)
    for name in PROGRAM_DIRS:
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (target / "venv").symlink_to((REPO / "venv").resolve())
    return target


@pytest.fixture
def program_workspace(engine) -> Iterator[Workspace]:
    """A workspace holding a copy of the program (Pulumi.yaml with ``virtualenv: venv``) on a file backend."""
    workspace = Workspace.create(prefix="bazbii-engine-")
    program_copy(workspace.project)
    workspace.login()
    try:
        yield workspace
    finally:
        workspace.cleanup()
