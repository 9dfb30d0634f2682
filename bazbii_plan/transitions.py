"""How the current steps may move from one applied update to the next.

At most one track moves per update; it moves exactly one step forward, or
exactly one step back (a rollback). When the last applied steps are unknown
the gate fails closed: only the first step of every track is allowed, unless
an explicit override reason is given.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from .errors import config_key
from .judging import Judging, moving_problems
from .moves import moves
from .record import applied_digests, is_record
from .timegates import dns_switch_problems


def transition_problems(
    step_names: dict[str, list[str]],
    previous: Optional[dict[str, str]],
    target: dict[str, str],
    override: Optional[str] = None,
) -> list[str]:
    """Problems with moving from the ``previous`` applied steps to ``target`` (empty list: allowed)."""
    problems: list[str] = []
    for track, names in step_names.items():
        if target.get(track) not in names:
            problems.append(f"track {track!r}: target step {target.get(track)!r} is not in the plan")
    if problems:
        return problems

    if previous is None:
        firsts = {track: names[0] for track, names in step_names.items()}
        not_first = {t: s for t, s in target.items() if t in firsts and s != firsts[t]}
        if not_first and not override:
            problems.append(
                "the last applied steps are unknown (never deployed, or the applied record could not be read), "
                f"so only the first step of each track is allowed; targets {not_first} need "
                "`pulumi config set bazbii:phaseOverride '<reason>'` to proceed"
            )
        return problems

    for track, names in step_names.items():
        if previous.get(track) is not None and previous[track] not in names:
            problems.append(
                f"track {track!r}: the applied step {previous[track]!r} is no longer in the plan; "
                "restore it or set bazbii:phaseOverride with a reason"
            )
    if problems and not override:
        return problems
    problems = []

    changed = moves(step_names, previous, target)
    if len(changed) > 1:
        listed = ", ".join(f"{m.track} {m.before} -> {m.after}" for m in changed)
        problems.append(f"more than one track moves in one update ({listed}); apply one step at a time")
    for move in changed:
        if move.distance > 1:
            skipped = step_names[move.track][step_names[move.track].index(move.before) + 1: step_names[move.track].index(move.after)]
            problems.append(
                f"track {move.track!r} jumps {move.before} -> {move.after}, skipping {skipped}; "
                f"apply {skipped[0]!r} first"
            )
        elif move.distance < -1:
            previous_one = step_names[move.track][step_names[move.track].index(move.before) - 1]
            problems.append(
                f"track {move.track!r} goes back {-move.distance} steps ({move.before} -> {move.after}); "
                f"roll back one step at a time, to {previous_one!r} first"
            )
    return problems


def history_problems(
    plan_digests: dict[str, list[list[str]]],
    applied: Optional[dict[str, list[list[str]]]],
    override: Optional[str] = None,
) -> list[str]:
    """Applied steps are history: editing, removing or reordering one is refused unless overridden.

    ``plan_digests``: track -> ``[[step, digest, gate digest], ...]`` of the plan as it is now;
    ``applied``: the same for the steps the applied record says were applied (None: the
    record predates digests, nothing to compare; an entry without a gate digest predates
    those, and only its definition is compared). Changes to the plan go in new steps.
    """
    if applied is None or override:
        return []
    problems = []
    for track, entries in applied.items():
        plan = plan_digests.get(track)
        if plan is None:
            problems.append(f"track {track!r} has applied steps {[e[0] for e in entries]} but is no longer in the plan")
            continue
        names = [entry[0] for entry in plan]
        for index, entry in enumerate(entries):
            name, digest = entry[0], entry[1]
            if name not in names:
                problems.append(f"applied step {name!r} of track {track!r} was removed from the plan")
            elif names.index(name) != index:
                problems.append(
                    f"applied step {name!r} of track {track!r} moved from position {index + 1} to "
                    f"{names.index(name) + 1} (steps were inserted, removed or reordered before it)")
            elif plan[index][1] != digest:
                problems.append(
                    f"applied step {name!r} of track {track!r} was edited after it was applied "
                    f"(definition digest {digest} -> {plan[index][1]})")
            elif len(entry) > 2 and len(plan[index]) > 2 and plan[index][2] != entry[2]:
                where = config_key(("plan", track, "steps", index))
                problems.append(
                    f"what judges applied step {name!r} of track {track!r} ({where}.criteria, {where}.touches) was "
                    f"edited after it was applied (gate digest {entry[2]} -> {plan[index][2]})")
    return problems


def is_one_step_rollback(step_names: dict[str, list[str]], previous: Optional[dict[str, str]], target: dict[str, str]) -> bool:
    if previous is None:
        return False
    changed = moves(step_names, previous, target)
    return len(changed) == 1 and changed[0].is_rollback


def judging_time_scale(previous: Optional[dict], target: Optional[dict]) -> int:
    """The time scale the applied record judges by (the target's for a record from before judgedBy)."""
    judging = Judging.of_record(previous) or Judging.of_record(target)
    return judging.time_scale if judging else 1


def check_problems(inputs: dict, now: datetime) -> list[str]:
    """Everything the transition check refuses, from its resource inputs, judged at ``now``.

    The transition check's provider runs this in ``check(olds, news)``; the policy
    pack reports the same findings rule by rule (plan-*, dns-lower-ttl-before-switch).
    """
    step_names = {k: list(v) for k, v in (inputs.get("stepNames") or {}).items()}
    target = inputs.get("target") or {}
    previous = inputs.get("previous") if is_record(inputs.get("previous")) else None
    override = inputs.get("override") or None
    previous_steps = previous["steps"] if previous else None
    target_steps = target.get("steps") or {}
    problems = transition_problems(step_names, previous_steps, target_steps, override)
    problems += history_problems(inputs.get("stepDigests") or {}, applied_digests(previous), override)
    # What judges the steps comes from the applied record: a pointer move changes none of it (no override).
    problems += [f"{p.what}. Fix: {p.fix}" for p in moving_problems(step_names, previous, target, inputs.get("trackKeys"))]
    problems += [
        f"{p.what}. Fix: {p.fix}"
        for p in dns_switch_problems(
            previous, target.get("state") or {}, now=now,
            previous_source=str(inputs.get("previousSource") or "none"),
            is_rollback=is_one_step_rollback(step_names, previous_steps, target_steps),
            time_scale=judging_time_scale(previous, target),
        )
    ]
    return problems
