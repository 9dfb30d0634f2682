"""Dynamic providers under the real provider host: state written by an older program still refreshes and deletes.

A dynamic resource's provider is pickled into its state by reference (module and class), and the host the
CLI starts (``pulumi-resource-pulumi-python``, from the sdk/v3 module, in the project's root with its
virtualenv) unpickles it to refresh or delete the resource. So every provider class a deployed stack may
hold must stay importable at its old path: the retired providers' shims (components/providers/,
components/phase_gate.py) and the current ones. Each test imports a stack holding one such resource,
written as the SDK writes it, then ``pulumi refresh`` and ``pulumi destroy`` it by target (no program run).
A provider at a path that is gone makes both fail: the control case.
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.engine

STACK = "hosts"
PROJECT = "bazbii"
# Every provider class a deployed stack may still reference: the shims of retired ones, the current ones.
PROVIDER_PATHS = (
    "components.phase_gate.PhaseGateProvider",
    "components.providers.replication.ReplicaLagGateProvider",
    "components.providers.replication.PlannedSwitchoverProvider",
    "components.providers.schema_migration.SchemaMigrationProvider",
    "components.transition_check.TransitionCheckProvider",
    "components.applied_record.AppliedRecordProvider",
)


def urn(type_: str, name: str) -> str:
    return f"urn:pulumi:{STACK}::{PROJECT}::{type_}::{name}"


def stack_holding(pickled_provider: str, name: str) -> dict:
    root = urn("pulumi:pulumi:Stack", f"{PROJECT}-{STACK}")
    provider = urn("pulumi:providers:pulumi-python", "default")
    props = {"__provider": pickled_provider, "gate": "bazbii-phase-gate"}
    return {"version": 3, "deployment": {"manifest": {"time": "2026-11-01T00:00:00Z", "magic": "", "version": ""},
        "resources": [
            {"urn": root, "custom": False, "type": "pulumi:pulumi:Stack"},
            {"urn": provider, "custom": True, "id": "0b0e5b1c-0d6c-4f3f-9d52-5a0d1f7c8e11",
             "type": "pulumi:providers:pulumi-python", "inputs": {}, "outputs": {}, "parent": root},
            {"urn": urn("pulumi-python:dynamic:Resource", name), "custom": True, "id": "bazbii-phase-gate",
             "type": "pulumi-python:dynamic:Resource", "inputs": props, "outputs": props, "parent": root,
             "provider": f"{provider}::0b0e5b1c-0d6c-4f3f-9d52-5a0d1f7c8e11"},
        ]}}


def pickled(project, path: str) -> str:
    """The ``__provider`` the SDK writes for an instance of ``path``, as the program in ``project`` would."""
    module, _, cls = path.rpartition(".")
    program = (f"import {module} as m; from pulumi.dynamic.dynamic import serialize_provider; "
               f"print(serialize_provider(m.{cls}()))")
    done = subprocess.run([str(project / "venv" / "bin" / "python"), "-c", program], cwd=project,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def refresh_and_destroy(workspace, name: str):
    target = urn("pulumi-python:dynamic:Resource", name)
    refreshed = workspace.run("refresh", "--yes", "--non-interactive", "--stack", STACK, "--target", target,
                              check=False)
    destroyed = workspace.run("destroy", "--yes", "--non-interactive", "--stack", STACK, "--target", target,
                              check=False)
    return refreshed, destroyed


@pytest.mark.parametrize("path", PROVIDER_PATHS)
def test_a_resource_written_by_this_provider_refreshes_and_deletes(program_workspace, path):
    program_workspace.stack_init(STACK)
    program_workspace.import_state(STACK, stack_holding(pickled(program_workspace.project, path), "old-gate"))
    refreshed, destroyed = refresh_and_destroy(program_workspace, "old-gate")
    assert refreshed.returncode == 0, refreshed.output[-3000:]
    assert destroyed.returncode == 0, destroyed.output[-3000:]
    remaining = program_workspace.export(STACK)["deployment"].get("resources", [])
    assert not [r for r in remaining if r["urn"].endswith("::old-gate")]


def test_a_provider_whose_module_moved_cannot_be_deleted(program_workspace):
    """The control: the same resource, its provider's module no longer in the project."""
    moved = program_workspace.project / "components" / "moved_away.py"
    moved.write_text("from pulumi.dynamic import ResourceProvider\n\n\nclass GoneProvider(ResourceProvider):\n    pass\n")
    provider = pickled(program_workspace.project, "components.moved_away.GoneProvider")
    moved.unlink()
    program_workspace.stack_init(STACK)
    program_workspace.import_state(STACK, stack_holding(provider, "orphan"))
    _, destroyed = refresh_and_destroy(program_workspace, "orphan")
    assert destroyed.returncode != 0
    assert "moved_away" in destroyed.output
