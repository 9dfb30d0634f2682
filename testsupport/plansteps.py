"""Address the plan's steps by name in tests (the index is only what a config key shows)."""

from __future__ import annotations

from typing import Any


def step_index(values: dict[str, Any], track: str, name: str) -> int:
    """The position of step ``name`` in ``values["plan"][track]["steps"]`` (stack config values, camelCase)."""
    names = [step["name"] for step in values["plan"][track]["steps"]]
    if name not in names:
        raise KeyError(f"track {track!r} has no step {name!r} (steps: {names})")
    return names.index(name)


def step_of(values: dict[str, Any], track: str, name: str) -> dict[str, Any]:
    """The step ``name`` of ``track`` in stack config values, to edit in place."""
    return values["plan"][track]["steps"][step_index(values, track, name)]


def step_key(values: dict[str, Any], track: str, name: str) -> str:
    """The config key of the step, as error lines name it: ``bazbii:plan.infra.steps[4]``."""
    return f"bazbii:plan.{track}.steps[{step_index(values, track, name)}]"
