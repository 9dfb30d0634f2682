"""Plan rules: how the track pointers may move from the last applied update to this one.

All of them read the phase gate only (config-derived, known at preview). The
step-move logic itself is :func:`bazbii_plan.transitions.transition_problems`,
the same function the gate's dynamic provider runs in ``check(olds, news)``,
so the policy pack and the engine-side check can never disagree.
"""

from __future__ import annotations

from bazbii_plan.transitions import history_problems, transition_problems

from ..builders import gate_policy
from .common import Finding, Transition
from .keys import step_keys, track_key

OVERRIDE_FIX = "`pulumi config set bazbii:phaseOverride '<reason>'` (logged and recorded)"


def fail_closed(t: Transition) -> list[Finding]:
    """plan-fail-closed: with no readable applied record, only the first step of every track is allowed."""
    if t.previous is not None:
        return []
    why = {
        "none": "the stack has no applied record (never deployed, or deployed before the phase gate existed)",
        "malformed": "the stack output appliedRecord is not a valid applied record",
    }.get(t.previous_source, f"the applied record could not be read (source {t.previous_source!r})")
    problems = transition_problems(t.step_names, None, t.target_steps, t.override)
    if not problems:
        return []
    unplanned = [p for p in problems if "is not in the plan" in p]
    if unplanned:
        return [Finding(p, "set every step key to a step of its track in bazbii:plan") for p in unplanned]
    firsts = {track: names[0] for track, names in t.step_names.items() if names}
    not_first = {track: step for track, step in t.target_steps.items() if firsts.get(track) not in (None, step)}
    return [Finding(
        f"{why} (previousSource {t.previous_source!r}), so only the first step of each track may be applied, "
        f"but the target has {not_first}",
        f"apply the first steps {firsts} first; if the applied state is known by other means (e.g. a stack adopted "
        f"from before the phase gate existed), set {OVERRIDE_FIX}",
    )]


def one_step_at_a_time(t: Transition) -> list[Finding]:
    """plan-one-step-at-a-time: one track per update, one step forward or exactly one step back."""
    if t.previous is None:
        return []  # plan-fail-closed decides
    out = []
    changed = t.moves()
    for problem in transition_problems(t.step_names, t.previous_steps, t.target_steps, t.override):
        move = next((m for m in changed if problem.startswith(f"track {m.track!r}")), None)
        names = t.step_names.get(move.track, []) if move else []
        if "more than one track" in problem:
            fix = f"split this into one update per track: change only one of {step_keys(t, [m.track for m in changed])} now"
        elif "jumps" in problem and move:
            fix = (f"set {track_key(t, move.track)} to {names[names.index(move.before) + 1]!r} (the next step) and "
                   "apply the skipped steps in order, one update each")
        elif "goes back" in problem and move:
            fix = (f"set {track_key(t, move.track)} to {names[names.index(move.before) - 1]!r} (one step back) and "
                   "roll back one step per update")
        elif "no longer in the plan" in problem:
            fix = f"restore the applied step in bazbii:plan, or set {OVERRIDE_FIX}"
        else:
            fix = "set every step key to a step of its track in bazbii:plan"
        out.append(Finding(problem, fix))
    return out


def applied_history_immutable(t: Transition) -> list[Finding]:
    """plan-applied-history-immutable: an applied step's definition is never edited, removed or reordered."""
    if t.previous is None or t.step_digests is None:
        return []
    return [
        Finding(problem, "restore the applied step as it was and put the change in a new step after the current "
                         f"one; if the applied history really changed outside this plan, set {OVERRIDE_FIX}")
        for problem in history_problems(t.step_digests, t.applied_digests, t.override)
    ]


def requires_met(t: Transition) -> list[Finding]:
    """plan-requires-met: a step's ``requires`` (other tracks at or past a step) hold before and after."""
    if not t.step_requires:
        return []
    out = []
    for track, step in t.target_steps.items():
        needs = (t.step_requires.get(track) or {}).get(step) or {}
        for other, needed in needs.items():
            names = t.step_names.get(other) or []
            if needed not in names:
                continue  # the stack config loader rejects unknown steps in requires
            for label, steps in (("applied", t.previous_steps), ("target", t.target_steps)):
                if steps is None:
                    continue
                at = steps.get(other)
                if at not in names or names.index(at) < names.index(needed):
                    out.append(Finding(
                        f"step {step!r} of track {track!r} requires track {other!r} at {needed!r} or later, "
                        f"but its {label} step is {at!r}",
                        f"set {track_key(t, other)} up to {needed!r} first (one step per update), then "
                        f"{track_key(t, track)}",
                    ))
                    break
    return out


# --------------------------------------------------------------------------- the policies
POLICIES = [
    gate_policy(
        "plan-fail-closed",
        "When the last applied state cannot be read, only the first step of every track (or an explicit override) is allowed.",
        lambda t, c: fail_closed(t),
    ),
    gate_policy(
        "plan-one-step-at-a-time",
        "At most one track moves per update, by exactly one step forward or one step back.",
        lambda t, c: one_step_at_a_time(t),
    ),
    gate_policy(
        "plan-applied-history-immutable",
        "Applied steps are history: editing, removing or reordering one needs an override; changes go in new steps.",
        lambda t, c: applied_history_immutable(t),
    ),
    gate_policy(
        "plan-requires-met",
        "A step's `requires` (other tracks at or past a step) hold in the applied and the target steps.",
        lambda t, c: requires_met(t),
    ),
]
