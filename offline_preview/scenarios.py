"""Which transitions an offline preview evaluates, and evaluating one of them.

A transition goes from an applied state (the "before" stack file and steps)
to a target. The target is evaluated by the real program under mocks, with
the applied record of the "before" side injected as the program's own stack
output, so the transition check and the policies judge exactly that move.

The target is evaluated in the harness's engine-ordering mode: when the
transition check registers, its provider's ``check()`` and the gate policies
run on it, and a failure stops the update there, as the engine would (nothing
else is registered). The resource diff of a stopped update is taken from a
plain evaluation of the same target, so the reviewer still sees what the step
would change.

Applied times. A base stack file says which steps are applied, not when. Time
gates need that: ``--applied TRACK=STEP@TIME`` gives the time of one applied
step, ``--base-age`` the time of every other one (the most recent possible
time, so elapsed times are never overstated); without either, times are
unknown and time gates fail closed. Every preview says what it assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from bazbii_plan.errors import ConfigError
from bazbii_plan.judging import judged_by
from bazbii_plan.record import next_record, parse_time, plan_digests
from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config
from bazbii_plan.stackfile import fill_secret_placeholders, read_stack_file
from bazbii_plan.moves import Move, moves
from bazbii_plan.walk import record_by_walking, walk

from .diff import PropertyChange, ResourceChange, diff_evaluations, state_changes
from .harness import Evaluation, RegisteredResource, config_for_runtime, evaluate_program

# ``--base none``: preview against a stack that was never deployed.
NEVER_DEPLOYED = "none"


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
    placeholders = fill_secret_placeholders(values, secret_keys, SECRET_KEYS)
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
    # What the preview assumed about the applied record (times), said in the report.
    assumptions: tuple[str, ...] = ()
    # The record the "before" side was applied with, when known (a plan walk): the before side is then
    # evaluated as that update left it, which is also the previous transition's evaluation, reused.
    before_record: Optional[dict[str, Any]] = None


@dataclass
class TransitionResult:
    transition: Transition
    moves: list[Move]
    state_changes: list[PropertyChange]
    resource_changes: list[ResourceChange]
    violations: list[Any]
    evaluation: Evaluation
    notes: list[str] = field(default_factory=list)
    engine: Optional[Evaluation] = None  # the engine-ordering evaluation (stopped at the check when denied)

    @property
    def mandatory(self) -> list[Any]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    @property
    def stopped(self) -> bool:
        return bool(self.engine and self.engine.stopped)

    def reached(self, violation: Any) -> bool:
        """Whether an update reaches the resource of ``violation``: one stopped at the transition check never
        registers what comes after it (a ``pulumi preview`` still analyses it; only a refused provider check
        ends a preview there). Shown here all the same: what the step would still have to fix."""
        return not self.stopped or violation.urn in {r.urn for r in self.engine.resources}

    @property
    def failed(self) -> bool:
        return (bool(self.mandatory) or self.stopped) != self.transition.expect_denied


def _tag(record: Optional[dict], origin: str) -> Optional[dict]:
    return dict(record, origin=origin) if record else None


def _describe(config: StackConfig, before: Optional[dict[str, str]], after: dict[str, str]) -> str:
    if before is None:
        return "first deployment: " + ", ".join(f"{t} {s}" for t, s in after.items())
    changed = moves({t: tr.names() for t, tr in config.plan.tracks.items()}, before, after)
    if not changed:
        return "no step change"
    return "; ".join(f"{m.track}: {m.before} -> {m.after}" for m in changed)


AppliedTimes = dict[tuple[str, str], str]


def _time_assumptions(applied: Side, base_time: Optional[str], applied_times: AppliedTimes) -> tuple[str, ...]:
    given = [f"{track}={step} applied at {at}" for (track, step), at in sorted(applied_times.items())]
    out = [f"applied times given: {', '.join(given)}"] if given else []
    if base_time:
        out.append(f"every other applied step assumed applied at {base_time} (--base-age)")
    else:
        out.append(
            ("every other" if given else "every") + " applied step has no known time, so time gates that need one "
            "fail closed; give --applied TRACK=STEP@TIME for the steps you know, or --base-age for all"
        )
    return tuple(out)


def _from_applied(
    title: str,
    applied: Side,
    target: Side,
    applied_at: Optional[str] = None,
    applied_times: Optional[AppliedTimes] = None,
) -> Transition:
    """A move from a stack file taken as applied (its record rebuilt by walking the plan) to ``target``."""
    applied_times = dict(applied_times or {})
    _check_applied_times(applied, applied_times)
    return Transition(
        title=f"{title}{_describe(target.config, applied.config.current, target.config.current)}",
        before=applied,
        after=target,
        previous_record=_tag(record_by_walking(applied.config, applied_at, applied_times), "base-file"),
        origin="base-file",
        assumptions=_time_assumptions(applied, applied_at, applied_times),
    )


def _check_applied_times(applied: Side, applied_times: AppliedTimes) -> None:
    problems = []
    for track, step in applied_times:
        names = applied.config.plan.tracks[track].names()
        if names.index(step) > names.index(applied.config.current[track]):
            problems.append(f"--applied {track}={step}: step {step!r} is not applied in the base "
                            f"(track {track!r} is at {applied.config.current[track]!r})")
    if problems:
        raise ConfigError(problems)


def _resolve_step(config: StackConfig, option: str, text: str) -> tuple[str, str]:
    """``NAME`` or ``TRACK=NAME`` -> (track, name), or a ConfigError naming ``option``."""
    track, _, name = text.rpartition("=")
    if not track:
        owners = [t for t, tr in config.plan.tracks.items() if name in tr.names()]
        if len(owners) != 1:
            where = f"tracks {owners}" if owners else "no track"
            raise ConfigError([f"{option} {text}: step {name!r} is in {where}; write TRACK={name}"])
        track = owners[0]
    if track not in config.plan.tracks or name not in config.plan.tracks[track].names():
        raise ConfigError([f"{option} {text}: unknown step {name!r} on track {track!r}"])
    return track, name


def parse_applied(config: StackConfig, values: list[str]) -> AppliedTimes:
    """``--applied dns=switched@2026-11-28T10:00Z`` (repeatable) -> {(track, step): ISO time}."""
    out: AppliedTimes = {}
    problems = []
    for text in values or []:
        step_text, at_sign, when = text.partition("@")
        try:
            if not at_sign or not when:
                raise ConfigError([f"--applied {text}: write TRACK=STEP@TIME, e.g. dns=ttl-lowered@2026-11-28T10:00Z"])
            track, name = _resolve_step(config, "--applied", step_text)
            try:
                parsed = parse_time(when)
            except ValueError:
                raise ConfigError([f"--applied {text}: {when!r} is not an ISO 8601 time (e.g. 2026-11-28T10:00Z)"]) from None
            if parsed > datetime.now(timezone.utc):
                raise ConfigError([f"--applied {text}: {when} is in the future"])
            out[(track, name)] = parsed.replace(microsecond=0).isoformat()
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return out


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


def to_step(
    side: Side, step: str, applied_at: Optional[str] = None, applied_times: Optional[AppliedTimes] = None
) -> Transition:
    """Moving the stack from its current steps to ``step`` (``NAME`` or ``track=NAME``)."""
    track, name = _resolve_step(side.config, "--phase", step)
    after = side.with_steps(f"{side.label} ({track} at {name})", {track: name})
    return _from_applied(f"set bazbii:{side.config.track_key(track)} {name}: ", side, after, applied_at, applied_times)


def whole_plan(side: Side) -> list[Transition]:
    """Every forward step of the plan in apply order, and the one-step rollback of each."""
    sequence = walk(side.config)
    sides = [side.with_steps(f"plan step {i}", steps) for i, steps in enumerate(sequence)]
    records: list[dict] = []
    record = None
    digests, judging = plan_digests(side.config.plan), judged_by(side.config.plan, side.config.metrics, side.config.time_scale)
    for item in sides:
        record = next_record(item.config.current, item.config.state().to_config(), record, None, digests, judging)
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
    applied_with: Optional[dict[str, Any]] = None  # the record the previous forward step was applied with
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
                before_record=applied_with,
            )
        )
        applied_with = transitions[-1].previous_record
        transitions.append(
            Transition(
                title="rollback " + _describe(side.config, sides[index].config.current, sides[index - 1].config.current),
                before=sides[index],
                after=sides[index - 1],
                previous_record=_tag(records[index], "plan-walk"),
                origin="plan-walk",
                rollback=True,
                expect_denied=not step.reversible,
                before_record=applied_with,
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


def between_files(
    base: Side, new: Side, base_age: Optional[timedelta], applied_times: Optional[AppliedTimes] = None
) -> Transition:
    """The change a pull request proposes: ``base`` is what is applied, ``new`` is the edited stack file."""
    return _from_applied(f"{base.label} -> {new.label}: ", base, new, applied_at_from_age(base_age), applied_times)


def never_deployed(new: Side) -> Transition:
    """``--base none``: ``new`` applied to a stack that was never deployed (no applied record at all)."""
    return Transition(
        title=f"never deployed -> {new.label}: {_describe(new.config, None, new.config.current)}",
        before=None,
        after=new,
        previous_record=None,
        origin="none",
        assumptions=("the stack was never deployed: no applied record, so only the first step of each track "
                     "(or a step with bazbii:phaseOverride) may be applied",),
    )


_EVALUATIONS: dict[str, tuple[Evaluation, list]] = {}


def _evaluate(
    side: Side, previous_record: Optional[dict], admit: Optional["CheckAdmission"] = None
) -> tuple[Evaluation, list]:
    """Evaluate the program for ``side`` (in engine order when ``admit`` is given): the evaluation and the
    provider check's failures. A plan walk meets each side several times, so results are reused."""
    def key_of(admission: Optional[str]) -> str:
        return json.dumps([side.values, sorted(side.secret_keys), previous_record, admission], sort_keys=True,
                          default=str)

    key = key_of(admit.key if admit else None)
    if key not in _EVALUATIONS:
        outputs = {"appliedRecord": previous_record} if previous_record else {}
        evaluation = evaluate_program(
            config_for_runtime(side.values),
            [f"bazbii:{k}" for k in side.secret_keys],
            stack_reference_outputs=outputs,
            engine_order=admit is not None,
            admit=admit,
        )
        _EVALUATIONS[key] = (evaluation, list(admit.failures) if admit else [])
        if admit and not evaluation.stopped:  # an update that went through registered what a plain one does
            _EVALUATIONS.setdefault(key_of(None), (evaluation, []))
    return _EVALUATIONS[key]


class CheckAdmission:
    """The engine's view of each registration: the transition check's provider ``check()`` and the
    resource policies on it decide whether the update goes on (every other resource waits for it)."""

    def __init__(self, policy_config: Optional[dict]):
        self.policy_config = policy_config
        self.key = json.dumps(policy_config, sort_keys=True)
        self.failures: list[Any] = []  # the provider check's failures, as policy-like violations

    def __call__(self, resource: RegisteredResource) -> list[str]:
        from components.transition_check import check_failures
        from policies.offline import Violation, run_policies
        from policies.rules.common import is_gate

        if not is_gate(resource.type, resource.inputs):
            return []
        self.failures = [
            Violation(CHECK_FAILURE, "mandatory", resource.type, resource.name, resource.urn,
                      f"{CHECK_FAILURE}: {failure.reason}")
            # Without the live-metric gate: offline it is evaluated only against an endpoint asked for
            # with --metrics (offline_preview/live_gate.py), never the configured production one.
            for failure in check_failures(resource.inputs, datetime.now(timezone.utc), live_gate=False)
        ]
        violations = [v for v in run_policies([resource], self.policy_config, resource_policies_only=True)
                      if v.mandatory]
        return [v.message for v in self.failures + violations]


# How the provider check's failures are named in the report (the engine prints them for the resource).
CHECK_FAILURE = "transition-check (provider check)"


def run_transition(transition: Transition, policy_config: Optional[dict] = None) -> TransitionResult:
    from policies.offline import run_policies, sql_judgements  # imported here: optional for plain diffs

    before_eval = _evaluate(transition.before, transition.before_record)[0] if transition.before else None
    ordered, check_failures = _evaluate(transition.after, transition.previous_record, CheckAdmission(policy_config))
    # A stopped update registered only the check; what the step would change comes from a plain evaluation.
    after_eval = _evaluate(transition.after, transition.previous_record)[0] if ordered.stopped else ordered
    before_steps = transition.before.config.current if transition.before else None
    step_names = {t: tr.names() for t, tr in transition.after.config.plan.tracks.items()}
    notes = list(transition.assumptions)
    if transition.after.placeholder_secrets:
        notes.append(
            "secrets not in the stack file were replaced by placeholders: "
            + ", ".join(f"bazbii:{k}" for k in transition.after.placeholder_secrets)
        )
    if ordered.stopped:
        notes.append(
            f"engine order: the update stops at {ordered.rejected.urn.rsplit('::', 1)[-1]} (registered first); "
            f"nothing else is registered or changed ({len(ordered.resources)} of {len(after_eval.resources)} "
            "resources reached the engine). The changes below are what the step would do once allowed."
        )
    return TransitionResult(
        transition=transition,
        moves=moves(step_names, before_steps, transition.after.config.current) if before_steps else [],
        state_changes=state_changes(
            transition.before.config.state().to_config() if transition.before else None,
            transition.after.config.state().to_config(),
        ),
        resource_changes=diff_evaluations(before_eval, after_eval),
        violations=check_failures + run_policies(after_eval.resources, policy_config),
        evaluation=after_eval,
        notes=notes + sql_judgements(after_eval.resources),
        engine=ordered,
    )
