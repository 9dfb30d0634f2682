"""Load and validate the whole ``bazbii:*`` stack config before anything is registered.

The same loader serves the Pulumi program (values read with ``pulumi.Config``)
and the offline tools (values read from ``Pulumi.<stack>.yaml``): both hand it
a map of key (without the ``bazbii:`` namespace) to already-parsed value.

Validation covers the base state and the state after *every* step of every
track, so a bad step later in the plan fails review before anyone reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Any, Iterable, Mapping, Optional

from pydantic import ValidationError

from .crosscheck import cross_check
from .errors import ConfigError, config_key, format_path, pydantic_problems, render
from .gates import MetricsConfig, unknown_queries
from .judging import TIME_SCALE_KEY
from .models import STATE_SECTIONS, StackState
from .plan import Plan, fold, patch_touches

# Secrets are read only as Pulumi secrets (``pulumi config set --secret``).
SECRET_KEYS: dict[str, str] = {
    "dbPassword": "password of the application's database user",
    "replicationPassword": "password of the replication user (pg_basebackup, streaming)",
    "poolerAdminPassword": "PgBouncer admin console password (PAUSE/RELOAD/RESUME)",
    "sshPrivateKey": "private key the provisioning commands use to reach the servers",
    "tunnelSecret": "Cloudflare Tunnel secret (base64, >= 32 bytes)",
}
OVERRIDE_KEY = "phaseOverride"
# Name of the StackReference to this very stack (default <org>/<project>/<stack>); the legacy
# DIY backend layout (before CLI 3.61, no `pulumi state upgrade`) accepts only the bare stack name.
SELF_REFERENCE_KEY = "selfReference"
PLAN_KEY = "plan"
METRICS_KEY = "metrics"
# Rehearsal only: every soak, metrics window and DNS TTL wait divided by this factor, so a walk of weeks
# takes minutes. Carried in the applied record (what judges the next step); refused on any stack but
# REHEARSAL_STACK (rehearsal_only_problems).
REHEARSAL_STACK = "rehearsal"
MAX_TIME_SCALE = 100_000


@dataclass(frozen=True)
class StackConfig:
    plan: Plan
    base: dict[str, Any]
    current: dict[str, str]
    override: Optional[str] = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    states: dict[tuple, StackState] = field(default_factory=dict, compare=False, repr=False)
    time_scale: int = 1

    # --- steps -----------------------------------------------------------
    def track_key(self, track: str) -> str:
        return self.plan.tracks[track].key

    def with_steps(self, **steps: str) -> "StackConfig":
        """The same stack with some tracks moved to other (validated) steps."""
        current = dict(self.current)
        for track, step in steps.items():
            if track not in self.plan.tracks:
                raise KeyError(f"unknown track {track!r}")
            if step not in self.plan.tracks[track].names():
                raise KeyError(f"unknown step {step!r} on track {track!r}")
            current[track] = step
        return StackConfig(self.plan, self.base, current, self.override, self.metrics, self.states, self.time_scale)

    def next_step(self, track: str) -> Optional[str]:
        names = self.plan.tracks[track].names()
        index = names.index(self.current[track])
        return names[index + 1] if index + 1 < len(names) else None

    def previous_step(self, track: str) -> Optional[str]:
        names = self.plan.tracks[track].names()
        index = names.index(self.current[track])
        return names[index - 1] if index > 0 else None

    # --- state -----------------------------------------------------------
    def state(self) -> StackState:
        key = tuple(sorted(self.current.items()))
        if key not in self.states:
            self.states[key] = StackState.model_validate(fold(self.base, self.plan, self.current))
        return self.states[key]


def _validate_plan(raw: Any) -> tuple[Optional[Plan], list[str]]:
    if raw is None:
        return None, [f"{config_key((PLAN_KEY,))}: is required (the ordered tracks of migration steps)"]
    try:
        plan = Plan.model_validate({"tracks": raw})
    except ValidationError as exc:
        problems = [((PLAN_KEY,) + path[1:], message) for path, message in pydantic_problems(exc)]
        return None, render(problems)
    problems = []
    for track_name, track in plan.tracks.items():
        for index, step in enumerate(track.steps):
            where = (PLAN_KEY, track_name, "steps", index)
            for section in step.changes:
                if section not in track.owns:
                    owner = plan.owner_of(section)
                    reason = f"is owned by track {owner!r}" if owner else "is not a state section"
                    problems.append((where + ("changes", section), f"{reason}; track {track_name!r} owns {track.owns}"))
            for other, other_step in step.requires.items():
                if other not in plan.tracks or other == track_name:
                    problems.append((where + ("requires", other), "must name another track"))
                elif other_step not in plan.tracks[other].names():
                    problems.append((where + ("requires", other), f"unknown step {other_step!r} on track {other!r}"))
    return plan, render(problems)


def _validate_states(base: dict[str, Any], plan: Plan) -> list[str]:
    """Validate the base state and the state after each step, naming the step that broke it."""
    seen: set[tuple] = set()
    lines: list[str] = []

    def check(current: dict[str, str], step_where: Optional[tuple], patch: dict) -> bool:
        raw = fold(base, plan, current)
        try:
            state = StackState.model_validate(raw)
            problems = cross_check(state)
        except ValidationError as exc:
            problems = pydantic_problems(exc)
        fresh = [(p, m) for p, m in problems if (p, m) not in seen]
        seen.update(fresh)
        for path, message in fresh:
            if step_where is None:
                lines.append(f"{config_key(path)}: {message}")
            elif patch_touches(patch, path):
                lines.append(f"{config_key(step_where + ('changes',) + path)}: {message}")
            else:
                lines.append(f"{config_key(step_where)}: after this step, {format_path(path)}: {message}")
        return not problems

    firsts = plan.first_steps()
    if not check(firsts, None, {}):
        return lines
    for track_name, track in plan.tracks.items():
        for index, step in enumerate(track.steps[1:], start=1):
            # Other tracks stay at their first step: each track must be valid on its own.
            current = dict(firsts, **{track_name: step.name})
            check(current, (PLAN_KEY, track_name, "steps", index), step.changes)
    return lines


def _validate_metrics(raw: Any, plan: Optional[Plan]) -> tuple[MetricsConfig, list[str]]:
    """``bazbii:metrics`` and the step criteria that name its queries."""
    try:
        metrics = MetricsConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        return MetricsConfig(), render([((METRICS_KEY,) + path, message) for path, message in pydantic_problems(exc)])
    problems = []
    for track_name, track in (plan.tracks.items() if plan else ()):
        for index, step in enumerate(track.steps):
            if step.criteria is None:
                continue
            for signal_index, kind in unknown_queries(step.criteria, metrics):
                problems.append((
                    (PLAN_KEY, track_name, "steps", index, "criteria", "signals", signal_index, "kind"),
                    f"unknown query {kind!r}; builtins and bazbii:metrics.queries give {metrics.query_names()}",
                ))
    return metrics, render(problems)


def known_keys(pointer_keys: Iterable[str]) -> set[str]:
    """Every ``bazbii:`` key the program reads (without the namespace), given the plan's track pointer keys:
    what Pulumi.yaml declares (a test holds the two together)."""
    return (set(STATE_SECTIONS) | {PLAN_KEY, OVERRIDE_KEY, SELF_REFERENCE_KEY, METRICS_KEY, TIME_SCALE_KEY}
            | set(SECRET_KEYS) | set(pointer_keys))


def rehearsal_only_problems(config: "StackConfig", stack: Optional[str]) -> list[str]:
    """A time scale compresses what protects production (soaks, TTL waits): only a rehearsal stack may set one."""
    if config.time_scale == 1 or stack == REHEARSAL_STACK:
        return []
    return [f"{config_key((TIME_SCALE_KEY,))}: {config.time_scale} compresses every soak and DNS wait; only a rehearsal "
            f"stack (named {REHEARSAL_STACK!r}) may set it, this is {stack or 'not a named stack'!r}. Remove the key"]


def load_stack_config(
    values: Mapping[str, Any],
    secret_keys: AbstractSet[str] = frozenset(),
) -> StackConfig:
    """Validate raw config. ``values`` maps keys without namespace; ``secret_keys`` lists keys stored as secrets.

    Raises :class:`ConfigError` with one line per problem; nothing is returned half-valid.
    """
    problems: list[str] = []
    plan, plan_problems = _validate_plan(values.get(PLAN_KEY))
    problems += plan_problems

    pointer_keys = {track.key: name for name, track in plan.tracks.items()} if plan else {}
    known = known_keys(pointer_keys)
    for key in values:
        # Without a valid plan the track pointer keys are unknown, so only judge keys once it is valid.
        if plan is not None and key not in known:
            problems.append(f"{config_key((key,))}: unknown key")

    for key, what in SECRET_KEYS.items():
        if key not in values:
            problems.append(f"{config_key((key,))}: is required ({what}); set it with `pulumi config set --secret bazbii:{key}`")
        elif key not in secret_keys:
            problems.append(f"{config_key((key,))}: must be stored as a secret; run `pulumi config set --secret bazbii:{key}` (plaintext is refused)")

    override = values.get(OVERRIDE_KEY) or None  # Pulumi.yaml declares "" as the default
    if override is not None and (not isinstance(override, str) or len(override.strip()) < 10):
        problems.append(f"{config_key((OVERRIDE_KEY,))}: must be a reason of at least 10 characters (it is logged and recorded)")

    metrics, metrics_problems = _validate_metrics(values.get(METRICS_KEY), plan)
    problems += metrics_problems
    time_scale = values.get(TIME_SCALE_KEY, 1)
    if isinstance(time_scale, str) and time_scale.strip().isdigit():  # the CLI hands scalars over as text
        time_scale = int(time_scale)
    if isinstance(time_scale, bool) or not isinstance(time_scale, int) or not 1 <= time_scale <= MAX_TIME_SCALE:
        problems.append(f"{config_key((TIME_SCALE_KEY,))}: must be a whole number from 1 to {MAX_TIME_SCALE} "
                        f"(got {time_scale!r})")
        time_scale = 1

    base: dict[str, Any] = {}
    for section in STATE_SECTIONS:
        if section in values:
            if not isinstance(values[section], dict):
                problems.append(f"{config_key((section,))}: must be an object")
            else:
                base[section] = values[section]

    current: dict[str, str] = {}
    if plan:
        for track_name, track in plan.tracks.items():
            pointer = values.get(track.key)
            if pointer is None:
                problems.append(
                    f"{config_key((track.key,))}: is required (current step of track {track_name!r}; first step is {track.steps[0].name!r})"
                )
            elif pointer not in track.names():
                problems.append(f"{config_key((track.key,))}: unknown step {pointer!r}; track {track_name!r} has {track.names()}")
            else:
                current[track_name] = pointer

    if plan is None:
        raise ConfigError(problems)

    # State problems are reported together with key problems: one run shows everything to fix.
    problems += _validate_states(base, plan)
    for track_name, track in plan.tracks.items():
        if track_name not in current:
            continue
        step = track.steps[track.index(current[track_name])]
        for other, needed in step.requires.items():
            if other not in current or needed not in plan.tracks[other].names():
                continue  # an unknown track, step or pointer is reported above
            other_track = plan.tracks[other]
            if other_track.index(current[other]) < other_track.index(needed):
                problems.append(
                    f"{config_key((track.key,))}: step {step.name!r} requires track {other!r} at {needed!r} or later "
                    f"(bazbii:{other_track.key} is {current[other]!r})"
                )
    if problems:
        raise ConfigError(problems)

    config = StackConfig(plan=plan, base=base, current=current, override=override, metrics=metrics,
                         time_scale=time_scale)
    try:
        state = config.state()
    except ValidationError as exc:  # combinations of tracks can still clash
        raise ConfigError(render(pydantic_problems(exc), prefix="")) from None
    combined = cross_check(state)
    if combined:
        raise ConfigError([f"{line} (with the current steps of all tracks)" for line in render(combined)])
    if metrics.ssh is not None and metrics.ssh.server is not None and metrics.ssh.server not in state.servers:
        raise ConfigError([f"{config_key((METRICS_KEY, 'ssh', 'server'))}: unknown server {metrics.ssh.server!r}; "
                           f"bazbii:servers has {sorted(state.servers)} (or give host for a machine outside the plan)"])
    return config
