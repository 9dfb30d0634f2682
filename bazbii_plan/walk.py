"""Walk the whole plan one step at a time, the order an operator would apply it.

All tracks start at their first step. At each move the first track (in plan
order) whose next step's ``requires`` are met advances by one step. The walk
is used to check the whole plan statically (every adjacent pair must pass
every policy) and to reconstruct the history that leads to a given set of
current steps (so an offline preview knows, for example, what a DNS
record's TTL was before it was lowered).
"""

from __future__ import annotations

from typing import Optional

from .errors import ConfigError
from .judging import judged_by
from .record import next_record, plan_digests
from .stackconfig import StackConfig


def _requires_met(config: StackConfig, current: dict[str, str], track: str, step_index: int) -> bool:
    step = config.plan.tracks[track].steps[step_index]
    for other, needed in step.requires.items():
        names = config.plan.tracks[other].names()
        if names.index(current[other]) < names.index(needed):
            return False
    return True


def walk(config: StackConfig, until: Optional[dict[str, str]] = None) -> list[dict[str, str]]:
    """Successive current-step maps from all-first-steps to the end of the plan (or to ``until``).

    With ``until``, tracks never advance past their step in ``until``; the
    walk ends when ``until`` is reached. Raises ConfigError if the
    ``requires`` of the plan make the end unreachable (a cycle).
    """
    tracks = config.plan.tracks
    goal = {name: (until or {}).get(name, track.steps[-1].name) for name, track in tracks.items()}
    current = config.plan.first_steps()
    sequence = [dict(current)]
    while current != goal:
        for name, track in tracks.items():
            index = track.index(current[name])
            if index >= track.index(goal[name]):
                continue
            if _requires_met(config, current, name, index + 1):
                current = dict(current, **{name: track.steps[index + 1].name})
                sequence.append(dict(current))
                break
        else:
            stuck = {n: tracks[n].steps[tracks[n].index(current[n]) + 1].name for n in tracks if current[n] != goal[n]}
            raise ConfigError([f"bazbii:plan: no track can advance from {current}; blocked next steps {stuck} wait on each other (requires)"])
    return sequence


def record_by_walking(
    config: StackConfig,
    at_last: Optional[str] = None,
    applied_at: Optional[dict[tuple[str, str], str]] = None,
) -> dict:
    """The applied record of ``config.current`` as if the plan had been applied step by step.

    ``applied_at`` gives the time a ``(track, step)`` was applied, where it is
    known. Any other step gets ``at_last`` (or None: unknown). Using ``at_last``,
    the time of the last step, for every earlier step errs on the safe side
    (elapsed times are never overstated).
    """
    applied_at = applied_at or {}
    digests, judging = plan_digests(config.plan), judged_by(config.plan, config.metrics, config.time_scale)
    record, before = None, None
    for steps in walk(config, until=config.current):
        moved = [(track, step) for track, step in steps.items() if before is None or before.get(track) != step]
        at = next((applied_at[m] for m in moved if m in applied_at), at_last)
        state = config.with_steps(**steps).state().to_config()
        record = next_record(steps, state, record, at, digests, judging)
        before = steps
    if record is None:  # walk() yields the current steps at least
        raise ValueError(f"bazbii:plan: walking to {config.current} gave no steps")
    return record
