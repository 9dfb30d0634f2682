"""What judges a step, taken from the applied plan: never from the pull request that applies the step.

A step is judged by

* its ``criteria``: the live-metric gate (soak, window, scope, minSamples, signals);
* its scope: ``touches``, else its track's sections (what ``plan-step-scope`` lets it change);
* the rollback triggers, ``bazbii:rollback`` (the state section the default signals come from);
* the metrics config, ``bazbii:metrics`` (which Prometheus, which PromQL);
* the time scale, ``bazbii:timeScale`` (a rehearsal stack's compression of soaks and TTL waits).

The applied record carries all but the rollback triggers as ``judgedBy``
(:func:`judged_by`) and the rollback triggers in its state, for every step of
the plan, applied or not. So the transition check's live gate and the policies
take them from the record of the last successful update (:func:`Judging.of_record`):
a pull request that moves to ``traffic-50`` cannot bring a looser ``traffic-50``
gate along. While a track pointer moves, none of them may change
(:func:`moving_problems`, the engine-side check and ``plan-judged-by-applied``);
with no pointer moving, a change of them is reviewed as a change of safety
parameters (``safety-gate-loosening``).

A record exported before ``judgedBy`` existed has none: :func:`Judging.of_record`
returns None, and callers judge by the target as before for that one update (the
record it leaves behind has ``judgedBy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Optional

from pydantic import ValidationError

from .errors import config_key
from .gates import GateCriteria, MetricsConfig
from .models import Rollback
from .moves import describe_moves, moves
from .plan import Plan
from .record import JUDGED_BY
from .scope import Path, changed_paths, dotted, step_scopes

ROLLBACK_SECTION = "rollback"  # the state section holding the rollback triggers (owned by no track)
METRICS_KEY = "metrics"
TIME_SCALE_KEY = "timeScale"  # in judgedBy only when not 1 (records from before carry none: 1)


def judged_by(plan: Plan, metrics: MetricsConfig, time_scale: int = 1) -> dict[str, Any]:
    """Plain data for the record: every step's criteria and scope, the metrics config, the time scale (no clock)."""
    scale = {TIME_SCALE_KEY: time_scale} if time_scale != 1 else {}
    return {**scale,
        "criteria": {
            name: {s.name: s.criteria.model_dump(by_alias=True, mode="json", exclude_defaults=True)
                   for s in track.steps if s.criteria is not None}
            for name, track in plan.tracks.items()
        },
        "scopes": step_scopes(plan),
        "metrics": metrics.model_dump(by_alias=True, mode="json", exclude_defaults=True),
    }


@dataclass(frozen=True)
class Judging:
    """What judges the steps, as one record holds it (parsed, so defaults compare as the program means them)."""

    criteria: dict[str, dict[str, GateCriteria]]
    scopes: dict[str, dict[str, list[Path]]]
    metrics: MetricsConfig
    rollback: Rollback
    raw: dict[str, Any]
    time_scale: int = 1

    @classmethod
    def of_record(cls, record: Optional[Mapping[str, Any]]) -> Optional["Judging"]:
        """The record's ``judgedBy`` with its rollback triggers; None when the record has none (older format)."""
        if not isinstance(record, Mapping):
            return None
        raw = record.get(JUDGED_BY)
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(
                criteria={track: {step: GateCriteria.model_validate(c) for step, c in (steps or {}).items()}
                          for track, steps in (raw.get("criteria") or {}).items()},
                scopes={track: {step: [tuple(p) for p in paths] for step, paths in (steps or {}).items()}
                        for track, steps in (raw.get("scopes") or {}).items()},
                metrics=MetricsConfig.model_validate(raw.get("metrics") or {}),
                rollback=Rollback.model_validate(((record.get("state") or {}).get(ROLLBACK_SECTION)) or {}),
                raw=dict(raw),
                time_scale=_time_scale(raw.get(TIME_SCALE_KEY, 1)),
            )
        except (ValidationError, TypeError, AttributeError):
            # Written by a program whose models differ incompatibly: judge as for a record without judgedBy.
            return None

    def has_step(self, track: str, step: str) -> bool:
        return step in (self.scopes.get(track) or {})

    def step_criteria(self, track: str, step: str) -> Optional[GateCriteria]:
        return (self.criteria.get(track) or {}).get(step)

    def step_scope(self, track: str, step: str) -> list[Path]:
        return list((self.scopes.get(track) or {}).get(step) or [])

    def live_gate(self, step_names: Mapping[str, list[str]]) -> dict[str, Any]:
        """The live gate's data (bazbii_analysis.gatecheck): step names, criteria, metrics, rollback triggers."""
        return {"stepNames": {t: list(n) for t, n in step_names.items()}, "criteria": self.raw.get("criteria") or {},
                "metrics": self.raw.get("metrics") or {},
                "rollback": self.rollback.model_dump(by_alias=True, mode="json"), TIME_SCALE_KEY: self.time_scale}


def _time_scale(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        raise TypeError(f"timeScale {value!r}")
    return int(value)


# --------------------------------------------------------------------------- what differs
@dataclass(frozen=True)
class JudgingChange:
    """One thing that judges steps, different in the target than in the applied record."""

    path: tuple  # config key path: ("plan", track, "steps", i, "criteria", ...), ("metrics", ...), ("rollback", ...)
    applied: Any  # plain values (None: absent)
    proposed: Any
    part: str  # "criteria" | "touches" | "step" (a step the applied plan lacks) | "metrics" | "rollback" | "timeScale"
    track: Optional[str] = None
    step: Optional[str] = None

    @property
    def key(self) -> str:
        return config_key(self.path)

    @property
    def track_step(self) -> tuple[str, str]:
        """``(track, step)`` of a change to one step (criteria, touches, a new step); other parts have none."""
        if self.track is None or self.step is None:
            raise ValueError(f"{self.key}: a {self.part} change belongs to no step")
        return self.track, self.step


class _Default:
    """A criteria field left to its default (the soak for the window, bazbii:rollback for the signals)."""

    def __repr__(self) -> str:
        return "default"


DEFAULT = _Default()


def shown(value: Any) -> str:
    """A judging value as a reviewer reads it."""
    if value is None:
        return "none"
    if value is DEFAULT:
        return "default"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list) and all(isinstance(p, (list, tuple)) for p in value):
        return "[" + ", ".join(dotted(tuple(p)) for p in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json") if model is not None else None


def _differences(prefix: tuple, old: Any, new: Any, unset: Any = None) -> list[tuple[tuple, Any, Any]]:
    """``(path, old value, new value)`` where two dumps differ; ``unset`` stands for a field left unset."""
    def value(data: Any, sub: tuple) -> Any:
        found = _at(data, sub)
        return unset if found is None else found
    return [(prefix + sub, value(old, sub), value(new, sub)) for sub in changed_paths(old, new)]


def _at(data: Any, path: tuple) -> Any:
    for part in path:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def judging_changes(
    applied: Judging,
    target: Judging,
    step_names: Mapping[str, list[str]],
    applied_steps: Optional[Mapping[str, str]] = None,
) -> list[JudgingChange]:
    """Where the target's judging differs from the applied one, for steps not applied yet and stack-wide.

    ``step_names``: the target plan's steps per track (keys name their index there). Steps up to the
    applied current step (``applied_steps``) are history: their definition, gate included, is guarded by
    the record's digests (plan-applied-history-immutable). A step the applied plan lacks is one change
    (``part`` "step"); a step the target removed judges nothing any more.
    """
    out: list[JudgingChange] = []
    for track, names in step_names.items():
        current = (applied_steps or {}).get(track)
        first_open = names.index(current) + 1 if current in names else 0
        for index, step in enumerate(names):
            if index < first_open:
                continue
            where = ("plan", track, "steps", index)
            if not applied.has_step(track, step):
                out.append(JudgingChange(where, None, step, "step", track, step))
                continue
            old_c, new_c = applied.step_criteria(track, step), target.step_criteria(track, step)
            if old_c is None or new_c is None:
                if old_c != new_c:
                    out.append(JudgingChange(where + ("criteria",), _dump(old_c), _dump(new_c), "criteria", track, step))
            else:
                out += [JudgingChange(path, a, b, "criteria", track, step)
                        for path, a, b in _differences(where + ("criteria",), _dump(old_c), _dump(new_c), DEFAULT)]
            old_s, new_s = applied.step_scope(track, step), target.step_scope(track, step)
            if sorted(old_s) != sorted(new_s):
                out.append(JudgingChange(where + ("touches",), [list(p) for p in old_s], [list(p) for p in new_s],
                                         "touches", track, step))
    out += [JudgingChange(path, a, b, "metrics")
            for path, a, b in _differences((METRICS_KEY,), _dump(applied.metrics), _dump(target.metrics))]
    out += [JudgingChange(path, a, b, "rollback")
            for path, a, b in _differences((ROLLBACK_SECTION,), _dump(applied.rollback), _dump(target.rollback))]
    if applied.time_scale != target.time_scale:
        out.append(JudgingChange((TIME_SCALE_KEY,), applied.time_scale, target.time_scale, "timeScale"))
    return out


# --------------------------------------------------------------------------- while a pointer moves
class Problem(NamedTuple):
    what: str
    fix: str


def moving_problems(
    step_names: Mapping[str, list[str]],
    previous: Optional[Mapping[str, Any]],
    target: Mapping[str, Any],
    track_keys: Optional[Mapping[str, str]] = None,
) -> list[Problem]:
    """While a track pointer moves, nothing that judges a step changes (empty: allowed).

    ``previous``/``target``: the applied and the target record. The applied record decides how the moving
    step is judged, so a step the applied plan does not have cannot be moved to (its gate and scope would
    come from this pull request). Empty when nothing moves or the applied record predates ``judgedBy``.
    """
    applied, proposed = Judging.of_record(previous), Judging.of_record(target)
    applied_steps, target_steps = (previous or {}).get("steps"), (target or {}).get("steps") or {}
    moved = moves(dict(step_names), applied_steps or {}, target_steps) if applied_steps else []
    if not moved or applied is None or proposed is None:
        return []
    moving = describe_moves(dict(step_names), applied_steps, target_steps)
    # Where the reviewer keeps the pointers: every moving track's key at its applied step.
    keep = ", ".join(f"bazbii:{(track_keys or {}).get(m.track, m.track)} at {m.before!r}" for m in moved)
    out = []
    for change in judging_changes(applied, proposed, step_names, applied_steps):
        if change.part == "step":
            out.append(Problem(
                f"this update moves {moving}, but {change.key} ({change.step!r}) is not in the applied plan: its "
                "gate, scope and rollback triggers would come from this pull request, which is not how a step is judged",
                f"add step {change.step!r} in a pull request that moves no step key (keep {keep}); once that is "
                "applied, move to it in a pull request of its own",
            ))
            continue
        out.append(Problem(
            f"{change.key} changes {shown(change.applied)} -> {shown(change.proposed)} (applied: "
            f"{shown(change.applied)}) while this update moves {moving}: a step is judged by the applied plan's "
            f"{change.part}, never by the pull request that applies it",
            f"set {change.key} back to {shown(change.applied)} here; change it, if at all, in a pull request "
            f"that moves no step key (keep {keep}), where it is reviewed as a safety-parameter change",
        ))
    return out
