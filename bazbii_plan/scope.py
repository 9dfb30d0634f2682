"""What a step may change: its declared ``touches``, or else the sections its track owns.

A step's *effective* change is the difference between the applied state and
the target state, whatever produced it (the step's ``changes``, an edit of the
base state, an edit of another step). The ``plan-step-scope`` policy compares
it with the scope of the steps that move; this module computes both sides as
plain data, so the program can hand the scopes to the phase gate.

Paths are tuples of keys in the camelCase state (``("traffic", "pools")``); a
change at ``p`` is inside a scope path ``s`` when ``s`` is a prefix of ``p``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .plan import Plan

Path = tuple[str, ...]


def parse_path(text: str) -> Path:
    """``"database.pooler"`` -> ``("database", "pooler")``."""
    return tuple(part for part in str(text).split(".") if part)


def step_scopes(plan: Plan) -> dict[str, dict[str, list[list[str]]]]:
    """Per track and step, the state paths it may change (JSON-able: lists of keys)."""
    out: dict[str, dict[str, list[list[str]]]] = {}
    for track_name, track in plan.tracks.items():
        out[track_name] = {}
        for step in track.steps:
            declared = [parse_path(p) for p in step.touches] if step.touches else [(s,) for s in track.owns]
            out[track_name][step.name] = [list(p) for p in declared]
    return out


def changed_paths(old: Any, new: Any, path: Path = ()) -> list[Path]:
    """Where two states differ: the deepest differing key (a key present on one side only stops the descent)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[Path] = []
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                out.append(path + (key,))
            else:
                out += changed_paths(old[key], new[key], path + (key,))
        return out
    return [] if old == new else [path]


def outside(changed: list[Path], scope: list[Path]) -> list[Path]:
    """The changed paths no scope path covers."""
    return [p for p in changed if not any(tuple(p[: len(s)]) == tuple(s) for s in scope)]


def moved_steps(names: list[str], before: Optional[str], after: Optional[str]) -> list[str]:
    """The steps a track's move applies (forward) or undoes (back): those after the lower and up to the higher."""
    if before not in names or after not in names:
        return []
    low, high = sorted((names.index(before), names.index(after)))
    return names[low + 1: high + 1]


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)
