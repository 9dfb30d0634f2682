"""Which transitions an offline preview evaluates, and evaluating one of them.

A transition goes from an applied state (the "before" stack file and steps)
to a target. The target is evaluated by the real program under mocks, with
the applied record of the "before" side injected as the program's own stack
output, so the phase gate and the policies judge exactly that move.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from bazbii_plan.errors import ConfigError
from bazbii_plan.record import next_record
from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config
from bazbii_plan.stackfile import OFFLINE_SECRET_PLACEHOLDER, read_stack_file
from bazbii_plan.transitions import Move, moves
from bazbii_plan.walk import record_by_walking, walk

from .diff import PropertyChange, ResourceChange, diff_evaluations, state_changes
from .harness import Evaluation, config_for_runtime, evaluate_program


@dataclass(frozen=True)
class Side:
    """One stack configuration: the stack file's values with some track pointers possibly moved."""

    label: str
    values: dict[str, Any]
    secret_keys: frozenset
    config: StackConfig
    placeholder_secrets: tuple[str, ...] = ()

    def with_steps(self, label: str, steps: dict[str, str]) -> "Side":
        values = dict(self.values)
        for track, step in steps.items():
            values[self.config.track_key(track)] = step
        return replace(self, label=label, values=values, config=self.config.with_steps(**steps))


def load_side(path: str | Path) -> Side:
    """Read and validate a stack file. Secrets it does not hold (they are set with the CLI) get placeholders."""
    values, secret_keys, _others = read_stack_file(path)
    placeholders = []
    for key in SECRET_KEYS:
        if key not in values:
            values[key] = OFFLINE_SECRET_PLACEHOLDER
            secret_keys.add(key)
            placeholders.append(key)
    config = load_stack_config(values, secret_keys)
    return Side(str(path), values, frozenset(secret_keys), config, tuple(placeholders))


@dataclass
class Transition:
    title: str
    before: Optional[Side]  # None: nothing applied yet
    after: Side
    previous_record: Optional[dict[str, Any]]
    origin: str  # where the applied record comes from: "base-file" | "plan-walk"
    rollback: bool = False
    # A rollback of a step the plan declares irreversible must be refused; being allowed is the failure.
    expect_denied: bool = False


@dataclass
class TransitionResult:
    transition: Transition
    moves: list[Move]
    state_changes: list[PropertyChange]
    resource_changes: list[ResourceChange]
    violations: list[Any]
    evaluation: Evaluation
    notes: list[str] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Any]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    @property
    def failed(self) -> bool:
        return bool(self.mandatory) != self.transition.expect_denied


def _tag(record: Optional[dict], origin: str) -> Optional[dict]:
    return dict(record, origin=origin) if record else None


def _describe(config: StackConfig, before: Optional[dict[str, str]], after: dict[str, str]) -> str:
    if before is None:
        return "first deployment: " + ", ".join(f"{t} {s}" for t, s in after.items())
    changed = moves({t: tr.names() for t, tr in config.plan.tracks.items()}, before, after)
    if not changed:
        return "no step change"
    return "; ".join(f"{m.track}: {m.before} -> {m.after}" for m in changed)


def _from_applied(title: str, applied: Side, target: Side, applied_at: Optional[str] = None) -> Transition:
    """A move from a stack file taken as applied (its record rebuilt by walking the plan) to ``target``."""
    return Transition(
        title=f"{title}{_describe(target.config, applied.config.current, target.config.current)}",
        before=applied,
        after=target,
        previous_record=_tag(record_by_walking(applied.config, applied_at), "base-file"),
        origin="base-file",
    )


def current_and_next(side: Side, track: str = "infra") -> list[Transition]:
    """What the current step of ``track`` changed, and what its next step will change."""
    transitions = []
    previous_step = side.config.previous_step(track)
    if previous_step is not None:
        before = side.with_steps(f"{side.label} ({track} at {previous_step})", {track: previous_step})
        transitions.append(_from_applied("current step: ", before, side))
    next_step = side.config.next_step(track)
    if next_step is not None:
        after = side.with_steps(f"{side.label} ({track} at {next_step})", {track: next_step})
        transitions.append(_from_applied("next step: ", side, after))
    return transitions


def to_step(side: Side, step: str, applied_at: Optional[str] = None) -> Transition:
    """Moving the stack from its current steps to ``step`` (``NAME`` or ``track=NAME``)."""
    track, _, name = step.rpartition("=")
    if not track:
        owners = [t for t, tr in side.config.plan.tracks.items() if name in tr.names()]
        if len(owners) != 1:
            where = f"tracks {owners}" if owners else "no track"
            raise ConfigError([f"--phase {step}: step {name!r} is in {where}; write TRACK={name}"])
        track = owners[0]
    if track not in side.config.plan.tracks or name not in side.config.plan.tracks[track].names():
        raise ConfigError([f"--phase {step}: unknown step {name!r} on track {track!r}"])
    after = side.with_steps(f"{side.label} ({track} at {name})", {track: name})
    return _from_applied(f"set bazbii:{side.config.track_key(track)} {name}: ", side, after, applied_at)


def whole_plan(side: Side) -> list[Transition]:
    """Every forward step of the plan in apply order, and the one-step rollback of each."""
    sequence = walk(side.config)
    sides = [side.with_steps(f"plan step {i}", steps) for i, steps in enumerate(sequence)]
    records: list[dict] = []
    record = None
    for item in sides:
        record = next_record(item.config.current, item.config.state().to_config(), record, None)
        records.append(record)
    transitions = [
        Transition(
            title=_describe(side.config, None, sides[0].config.current),
            before=None,
            after=sides[0],
            previous_record=None,
            origin="none",
        )
    ]
    plan = side.config.plan
    for index in range(1, len(sides)):
        (move,) = moves({t: tr.names() for t, tr in plan.tracks.items()}, sides[index - 1].config.current, sides[index].config.current)
        step = plan.tracks[move.track].steps[plan.tracks[move.track].index(move.after)]
        transitions.append(
            Transition(
                title=_describe(side.config, sides[index - 1].config.current, sides[index].config.current),
                before=sides[index - 1],
                after=sides[index],
                previous_record=_tag(records[index - 1], "plan-walk"),
                origin="plan-walk",
            )
        )
        transitions.append(
            Transition(
                title="rollback " + _describe(side.config, sides[index].config.current, sides[index - 1].config.current),
                before=sides[index],
                after=sides[index - 1],
                previous_record=_tag(records[index], "plan-walk"),
                origin="plan-walk",
                rollback=True,
                expect_denied=not step.reversible,
            )
        )
    return transitions


def parse_age(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d`` -> timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ConfigError([f"--base-age {text!r}: use a number with s, m, h or d (e.g. 2h)"])
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def applied_at_from_age(base_age: Optional[timedelta]) -> Optional[str]:
    if base_age is None:
        return None
    return (datetime.now(timezone.utc) - base_age).replace(microsecond=0).isoformat()


def between_files(base: Side, new: Side, base_age: Optional[timedelta]) -> Transition:
    """The change a pull request proposes: ``base`` is what is applied, ``new`` is the edited stack file."""
    return _from_applied(f"{base.label} -> {new.label}: ", base, new, applied_at_from_age(base_age))


_EVALUATIONS: dict[str, Evaluation] = {}


def _evaluate(side: Side, previous_record: Optional[dict]) -> Evaluation:
    """Evaluate the program for ``side``; a plan walk meets each side several times, so results are reused."""
    key = json.dumps([side.values, sorted(side.secret_keys), previous_record], sort_keys=True, default=str)
    if key not in _EVALUATIONS:
        outputs = {"appliedRecord": previous_record} if previous_record else {}
        _EVALUATIONS[key] = evaluate_program(
            config_for_runtime(side.values),
            [f"bazbii:{k}" for k in side.secret_keys],
            stack_reference_outputs=outputs,
        )
    return _EVALUATIONS[key]


def run_transition(transition: Transition, policy_config: Optional[dict] = None) -> TransitionResult:
    from policies.offline import run_policies  # imported here: the policy pack is optional for plain diffs

    before_eval = _evaluate(transition.before, None) if transition.before else None
    after_eval = _evaluate(transition.after, transition.previous_record)
    before_steps = transition.before.config.current if transition.before else None
    step_names = {t: tr.names() for t, tr in transition.after.config.plan.tracks.items()}
    notes = []
    if transition.after.placeholder_secrets:
        notes.append(
            "secrets not in the stack file were replaced by placeholders: "
            + ", ".join(f"bazbii:{k}" for k in transition.after.placeholder_secrets)
        )
    return TransitionResult(
        transition=transition,
        moves=moves(step_names, before_steps, transition.after.config.current) if before_steps else [],
        state_changes=state_changes(
            transition.before.config.state().to_config() if transition.before else None,
            transition.after.config.state().to_config(),
        ),
        resource_changes=diff_evaluations(before_eval, after_eval),
        violations=run_policies(after_eval.resources, policy_config),
        evaluation=after_eval,
        notes=notes,
    )
