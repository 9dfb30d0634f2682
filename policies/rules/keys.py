"""The config keys a fix names: every ``Fix:`` tells the user which ``bazbii:`` key to change.

A value of the desired state is set either in the base state (``bazbii:traffic``,
``bazbii:database`` ...) or in a step's ``changes``; when one step moves
forward, the fix names that step's key (``bazbii:plan.infra.steps[5].changes.
traffic.pools.server2.weight``), which is where a pull request edits it.
"""

from __future__ import annotations

from bazbii_plan.errors import config_key

from .common import Transition


def state_key(*path: object) -> str:
    """``bazbii:traffic.pools.server2.weight``: the key of a state value in the base state."""
    return config_key(path)


def step_changes_key(t: Transition, *path: object) -> str:
    """Where this update sets ``path``: the changes of the one step moving forward, else the base state."""
    forward = [m for m in t.moves() if m.distance > 0]
    if len(forward) == 1 and forward[0].after in (t.step_names.get(forward[0].track) or []):
        move = forward[0]
        index = t.step_names[move.track].index(move.after)
        return config_key(("plan", move.track, "steps", index, "changes") + path)
    return config_key(path)


def track_key(t: Transition, track: str) -> str:
    """The step key of ``track`` (``bazbii:phase`` for infra)."""
    key = (t.track_keys or {}).get(track)
    return f"bazbii:{key}" if key else config_key(("plan", track, "key")) + " (the track's step key)"


def step_keys(t: Transition, tracks: list[str]) -> str:
    return ", ".join(track_key(t, track) for track in tracks)
