"""Preview-like differences between two evaluations of the program: create, update, delete."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from components.applied_record import RECORD_MARKER
from components.phase_gate import GATE_MARKER

from .harness import Evaluation, RegisteredResource

# Inputs that no operator reads in a plan (the pickled provider changes with any code edit).
IGNORED_INPUTS = {"__provider"}


@dataclass
class PropertyChange:
    path: str
    before: Any
    after: Any


@dataclass
class ResourceChange:
    op: str  # "create" | "update" | "delete"
    type: str
    name: str
    urn: str
    changes: list[PropertyChange] = field(default_factory=list)


def _fake_ids(resources: Iterable[RegisteredResource]) -> dict[str, str]:
    # The mocks give each resource a deterministic id; show names instead (e.g. pool ids in LB weights).
    return {hashlib.sha1(f"{r.type}::{r.name}".encode()).hexdigest()[:12]: r.name for r in resources}


def _normalise(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {ids.get(k, k): _normalise(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, ids) for v in value]
    if isinstance(value, str) and value in ids:
        return ids[value]
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` -> ``{"a.b[0]": 1}``; empty containers are kept as leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and value:
        for index, child in enumerate(value):
            out.update(flatten(child, f"{prefix}[{index}]"))
    else:
        out[prefix] = value
    return out


def property_changes(before: dict[str, Any], after: dict[str, Any]) -> list[PropertyChange]:
    flat_before, flat_after = flatten(before), flatten(after)
    changes = []
    for path in sorted(set(flat_before) | set(flat_after)):
        old, new = flat_before.get(path), flat_after.get(path)
        if old != new:
            changes.append(PropertyChange(path, old, new))
    return changes


def _comparable(resource: RegisteredResource, ids: dict[str, str]) -> dict[str, Any]:
    inputs = {k: v for k, v in resource.redacted_inputs().items() if k not in IGNORED_INPUTS}
    if inputs.get("gate") == GATE_MARKER:
        # The gate carries whole records; its change is the step move (state changes are listed apart).
        inputs = {"steps": (inputs.get("target") or {}).get("steps"), "override": inputs.get("override")}
    elif inputs.get("record") == RECORD_MARKER:
        # Likewise the applied record (registered last): the steps it will record.
        inputs = {"steps": (inputs.get("applied") or {}).get("steps")}
    return _normalise(inputs, ids)


def diff_evaluations(before: Evaluation | None, after: Evaluation) -> list[ResourceChange]:
    """Resource changes going from ``before`` (None: nothing deployed) to ``after``, in registration order."""
    old = {r.urn: r for r in (before.resources if before else [])}
    new = {r.urn: r for r in after.resources}
    ids = _fake_ids(list(old.values()) + list(new.values()))
    result: list[ResourceChange] = []
    for urn, resource in new.items():
        if urn not in old:
            result.append(ResourceChange("create", resource.type, resource.name, urn,
                                         property_changes({}, _comparable(resource, ids))))
            continue
        changes = property_changes(_comparable(old[urn], ids), _comparable(resource, ids))
        if changes:
            result.append(ResourceChange("update", resource.type, resource.name, urn, changes))
    for urn, resource in old.items():
        if urn not in new:
            result.append(ResourceChange("delete", resource.type, resource.name, urn,
                                         property_changes(_comparable(resource, ids), {})))
    return result


def state_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[PropertyChange]:
    """Changed leaves of the desired state, e.g. ``traffic.pools.server2.weight 10 -> 50``."""
    return property_changes(before or {}, after)
