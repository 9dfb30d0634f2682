"""Step scope: a step's effective change stays inside what the step is about.

The effective change is the difference between the applied state and the
target state on the phase gate, whatever produced it: the moving step's
``changes``, an edit of the base state (``bazbii:database`` ...), or an edit of
the step itself. It must stay inside the scope of the step(s) that move: the
step's ``touches`` declaration when it has one (e.g. ``[traffic.pools]`` for a
traffic-weight step), else the sections its track owns. With no track moving,
nothing may change at all. So a pooler moved to another server inside a
traffic-weight step is denied, and the message names what it touched.

The scopes come from the **applied** record (``judgedBy.scopes``, bazbii_plan.judging):
a step is judged by the scope the applied plan gives it, so a pull request cannot
widen the ``touches`` of the step it applies (``plan-judged-by-applied`` refuses
the edit itself). A step the applied record does not know (or a record exported
before ``judgedBy``) is judged by the target's scope. The rollback triggers
(``bazbii:rollback``) are no track's section: they judge steps, and a change of
them is reviewed by ``plan-judged-by-applied`` / ``safety-gate-loosening``.
Everything read here is config-derived, hence known at preview. An override
reason (``bazbii:phaseOverride``) lifts the rule, e.g. for the first update after
a program upgrade adds a setting with a default.
"""

from __future__ import annotations


from bazbii_plan.errors import config_key
from bazbii_plan.judging import ROLLBACK_SECTION
from bazbii_plan.scope import Path, changed_paths, dotted, moved_steps, outside

from ..builders import gate_policy
from .common import Finding, Transition

MAX_LISTED = 8


def scopes_of(t: Transition) -> dict[str, dict[str, list[Path]]]:
    """Each step's scope: the applied record's, else (a step it does not know) the target's."""
    own = t.target_judging.scopes if t.target_judging else {}
    applied = t.applied_judging.scopes if t.applied_judging else {}
    return {track: {**(own.get(track) or {}), **(applied.get(track) or {})} for track in set(own) | set(applied)}


def _step_key(t: Transition, track: str, step: str, *path: str) -> str:
    names = t.step_names.get(track) or []
    index = names.index(step) if step in names else 0
    return config_key(("plan", track, "steps", index) + path)


def step_scope(t: Transition, scopes: dict[str, dict[str, list[Path]]]) -> list[Finding]:
    """plan-step-scope (see the module docstring)."""
    if t.previous is None or t.override:
        return []
    changed = [p for p in changed_paths(t.previous_state or {}, t.target_state) if p[:1] != (ROLLBACK_SECTION,)]
    if not changed:
        return []
    allowed: list[Path] = []
    moving: list[tuple[str, str]] = []
    for move in t.moves():
        for step in moved_steps(t.step_names.get(move.track) or [], move.before, move.after):
            moving.append((move.track, step))
            allowed += (scopes.get(move.track) or {}).get(step, [])
    stray = outside(changed, allowed)
    if not stray:
        return []
    shown = ", ".join(config_key(p) for p in stray[:MAX_LISTED]) + (" ..." if len(stray) > MAX_LISTED else "")
    if not moving:
        return [Finding(
            f"no track moves, but the state changes: {shown}",
            "put the change into a new step of the track that owns the section (bazbii:plan.<track>.steps) and "
            "move that track to it; the base state only ever holds what was applied first",
        )]
    scope_text = "; ".join(
        f"{track} step {step!r} may change {[dotted(p) for p in (scopes.get(track) or {}).get(step, [])] or 'nothing'}"
        for track, step in moving)
    track, step = moving[-1]
    return [Finding(
        f"{t.moving_description()} also changes {shown}, outside the step's scope ({scope_text})",
        f"make those changes a step of their own (revert them here), or, if this step must make them, declare "
        f"them in {_step_key(t, track, step, 'touches')}",
    )]


POLICIES = [
    gate_policy(
        "plan-step-scope",
        "A step's effective change (applied state -> target state) touches only what the step declares in `touches`, "
        "or else the sections its track owns; with no step moving, nothing changes.",
        lambda t, c: step_scope(t, scopes_of(t)),
    ),
]
