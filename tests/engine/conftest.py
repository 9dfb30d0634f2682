"""The tests that run what users run: the real ``pulumi`` CLI, its plugins and the policy analyzer.

Everything comes from the engine build (``python -m engine.build``, run by ``./test``). When a part of
it could not be built, every test that needs it is skipped with the build's reason (the pytest summary
lists it: ``-rs``); nothing here is skipped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from engine.build import EngineUnavailable, Installed, installed
from engine.workspace import Workspace
from twin.environment import Twin
from twin.stack import cloudflare_of_prod

REPO = Path(__file__).resolve().parents[2]

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


@pytest.fixture(scope="module")
def twin_with_cloud(engine, tmp_path_factory) -> Iterator[Twin]:
    """The twin's servers, its Kubernetes and its Cloudflare emulator (one per test module)."""
    need(engine, "kube", "etcd", "kubernetes", "command", "cloudflare")
    with Twin.start_new(tmp_path_factory.mktemp("twin"), kube_bin=engine.bin, cloudflare=cloudflare_of_prod()) as twin:
        yield twin


@pytest.fixture
def program_workspace(engine) -> Iterator[Workspace]:
    """A workspace holding a copy of the program (Pulumi.yaml with ``virtualenv: venv``) on a file backend."""
    workspace = Workspace.create(prefix="bazbii-engine-")
    workspace.copy_program()
    workspace.login()
    try:
        yield workspace
    finally:
        workspace.cleanup()
