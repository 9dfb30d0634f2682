"""The phase plan: ordered tracks of named steps, each a merge patch on the state.

A track (``infra``, ``release``, ``schema``, ``dns``) owns some top-level state
sections and lists its steps in order. One config key per track points at the
track's current step, so moving on is ``pulumi config set bazbii:phase <next>``
and rolling back is setting the previous step again.

The desired state for a set of current steps is the base state with, for each
track in plan order, the ``changes`` of every step up to and including the
current one applied as RFC 7396 JSON merge patches (``null`` deletes a key).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, model_validator

from .errors import pattern
from .gates import GateCriteria
from .models import STATE_SECTIONS, Model

STEP_NAME_PATTERN = pattern(r"^[a-z0-9][a-z0-9.-]{0,40}$",
                            "a step name of lowercase letters, digits, '.' and '-', at most 41 long")


class Step(Model):
    name: str = Field(pattern=STEP_NAME_PATTERN)
    summary: str = Field(min_length=1)
    gate: str = Field(min_length=1, description="what must be true before this step is applied")
    criteria: Optional[GateCriteria] = Field(
        default=None, description="the measurable part of the gate, checked on live metrics (bazbii_plan.gates)"
    )
    rollback: str = Field(min_length=1, description="how to return to the previous step")
    changes: dict[str, Any] = Field(default_factory=dict)
    requires: dict[str, str] = Field(
        default_factory=dict, description="other tracks that must be at (or past) a step first"
    )
    reversible: bool = Field(
        default=True,
        description="false when setting the previous step again cannot undo this one (the policies refuse it)",
    )
    touches: list[str] = Field(
        default_factory=list,
        description="state paths (dotted, e.g. traffic.pools) this step may change; empty: its track's sections "
        "(the plan-step-scope policy denies any other change)",
    )


class Track(Model):
    key: str = Field(pattern=pattern(r"^[a-z][A-Za-z0-9]{0,40}$", "a camelCase config key, e.g. schemaPhase"), description="config key holding the current step")
    owns: list[str] = Field(min_length=1)
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "Track":
        unknown = [s for s in self.owns if s not in STATE_SECTIONS]
        if unknown:
            raise ValueError(f"owns unknown sections {unknown}; sections are {list(STATE_SECTIONS)}")
        for step in self.steps:
            foreign = [p for p in step.touches if p.split(".", 1)[0] not in self.owns]
            if foreign:
                raise ValueError(f"step {step.name!r} touches {foreign} outside the track's sections {self.owns}")
        names = [s.name for s in self.steps]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"step names must be unique within a track; repeated: {repeated}")
        return self

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def index(self, name: str) -> int:
        return self.names().index(name)


class Plan(Model):
    tracks: dict[str, Track]

    @model_validator(mode="after")
    def _check(self) -> "Plan":
        owners: dict[str, str] = {}
        keys: dict[str, str] = {}
        for track_name, track in self.tracks.items():
            for section in track.owns:
                if section in owners:
                    raise ValueError(f"section {section!r} is owned by both {owners[section]!r} and {track_name!r}")
                owners[section] = track_name
            if track.key in keys:
                raise ValueError(f"tracks {keys[track.key]!r} and {track_name!r} share the config key {track.key!r}")
            keys[track.key] = track_name
        return self

    def owner_of(self, section: str) -> Optional[str]:
        for name, track in self.tracks.items():
            if section in track.owns:
                return name
        return None

    def first_steps(self) -> dict[str, str]:
        return {name: track.steps[0].name for name, track in self.tracks.items()}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge key by key, ``None`` removes a key, anything else replaces.

    Neither argument is modified; untouched branches are shared with ``target``
    (states are only ever read, so copying them whole on every step is waste).
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def fold(base: dict[str, Any], plan: Plan, current: dict[str, str]) -> dict[str, Any]:
    """The raw (unvalidated) desired state for the given current step of every track."""
    state = base
    for track_name, track in plan.tracks.items():
        upto = track.index(current[track_name])
        for step in track.steps[: upto + 1]:
            state = merge_patch(state, step.changes)
    return state


def patch_touches(patch: dict[str, Any], path: tuple) -> bool:
    """Whether a step's patch sets (part of) the value at ``path`` or one of its parents."""
    node: Any = patch
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if not isinstance(node, dict):
            return True
    return True
