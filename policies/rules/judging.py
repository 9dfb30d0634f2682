"""What judges a step: taken from the applied plan, changed only by a pull request that moves no step.

A step is judged by its ``criteria`` (the live-metric gate), its scope
(``touches``), the rollback triggers (``bazbii:rollback``) and the metrics
config (``bazbii:metrics``). The applied record carries them
(:mod:`bazbii_plan.judging`): the transition check's live gate and
``plan-step-scope`` read the applied copy, never the one of the pull request
that applies the step. Two rules guard the copy itself:

* ``plan-judged-by-applied``: while a track pointer moves, the moving step is
  in the applied plan and none of those differs from the applied record (the
  same check runs in the transition check's provider). Not lifted by
  ``bazbii:phaseOverride``: the fix is always to split the pull request.
* ``safety-gate-loosening``: with no pointer moving, a change of them is a
  change of safety parameters. Tightening is free; loosening past its bound is
  refused; loosening within its bound needs ``bazbii:phaseOverride`` with a
  reason. Reading the same endpoint through a server of the applied state
  (``bazbii:metrics.ssh.server``) is not a loosening (``route_loosening``).
  Steps already applied are history (``plan-applied-history-immutable``
  compares their gate digest); a step the applied plan does not have yet is a
  new step, judged from the next update on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from bazbii_plan.errors import config_key
from bazbii_plan.gates import GateCriteria, MetricsSsh, Signal, effective_signals, format_duration, format_value
from bazbii_plan.judging import METRICS_KEY, Judging, JudgingChange, judging_changes, moving_problems, shown
from bazbii_plan.models import Rollback
from bazbii_plan.scope import outside

from ..builders import gate_policy, number_setting
from .common import Finding, Transition, fmt
from .plan import OVERRIDE_FIX
from .safety import CONFIG as SAFETY_CONFIG, PARAMETERS, is_weaker, out_of_bound

# The bounds a loosened gate is held to: the rollback triggers' bounds (a step is never approved at a value
# that would roll it back), and the fewest requests a measured gate may decide on.
CONFIG: dict[str, dict[str, Any]] = {
    "minGateSamples": {"type": "integer", "minimum": 1, "default": 100,
                       "description": "fewest requests a step's criteria.minSamples may ask for"},
    **{key: SAFETY_CONFIG[key] for key in ("maxRollbackErrorRate", "maxRollbackP95Factor", "maxRollbackP95TargetMs")},
}


@dataclass(frozen=True)
class Loosening:
    """One judging value made weaker: its key, applied and proposed values, what it costs, and its bound."""

    key: str
    applied: str
    proposed: str
    why: str
    past_bound: Optional[str] = None  # why the proposed value is outside its policy-config bound


# --------------------------------------------------------------------------- criteria
def _signal_key(where: tuple, proposed: GateCriteria, name: str, field: str) -> str:
    """The signal's own key when the proposed criteria list signals, else their list (defaults from bazbii:rollback)."""
    names = [s.name for s in proposed.signals or []]
    if name in names:
        return config_key(where + ("criteria", "signals", names.index(name), field))
    return config_key(where + ("criteria", "signals"))


def _max_bound(signal: Signal, config: Mapping[str, Any]) -> Optional[float]:
    """The highest ``max`` a loosened signal may have: the rollback triggers' bounds, for the kinds they bound."""
    if signal.kind == "errorRatio":
        return number_setting(config, CONFIG, "maxRollbackErrorRate")
    if signal.kind == "latencyQuantile":
        return (number_setting(config, CONFIG, "maxRollbackP95TargetMs")
                * number_setting(config, CONFIG, "maxRollbackP95Factor") / 1000.0)
    return None


def _signal_loosenings(where: tuple, proposed: GateCriteria, old: Signal, new: Signal,
                       config: Mapping[str, Any]) -> list[Loosening]:
    out = []

    def value(v: Optional[float]) -> str:
        return "none" if v is None else format_value(v, new.kind)

    if old.max is not None and (new.max is None or new.max > old.max):
        bound = _max_bound(new, config)
        past = (f"above the limit {value(bound)} (policy config "
                f"{'maxRollbackErrorRate' if new.kind == 'errorRatio' else 'maxRollbackP95TargetMs x maxRollbackP95Factor'})"
                if bound is not None and (new.max is None or new.max > bound) else None)
        out.append(Loosening(_signal_key(where, proposed, new.name, "max"), value(old.max), value(new.max),
                             f"signal {new.name!r} passes at a higher value", past))
    if old.min is not None and (new.min is None or new.min < old.min):
        out.append(Loosening(_signal_key(where, proposed, new.name, "min"), value(old.min), value(new.min),
                             f"signal {new.name!r} passes at a lower value"))
    if old.against == new.against == "baseline" and new.factor > old.factor:
        out.append(Loosening(_signal_key(where, proposed, new.name, "factor"), f"{old.factor:g}", f"{new.factor:g}",
                             f"signal {new.name!r} allows more above its baseline"))
    if old.counted and not new.counted:
        out.append(Loosening(_signal_key(where, proposed, new.name, "counted"), "true", "false",
                             f"signal {new.name!r} decides without the minimum number of requests"))
    for field in ("kind", "quantile", "against", "scope"):
        if getattr(old, field) != getattr(new, field):
            out.append(Loosening(_signal_key(where, proposed, new.name, field), shown(_plain(getattr(old, field))),
                                 shown(_plain(getattr(new, field))), f"signal {new.name!r} would measure something else"))
    return out


def _plain(value: Any) -> Any:
    return value.model_dump(by_alias=True, mode="json") if hasattr(value, "model_dump") else value


def criteria_loosenings(where: tuple, applied: Optional[GateCriteria], proposed: Optional[GateCriteria],
                        rollback: Rollback, config: Mapping[str, Any]) -> list[Loosening]:
    """How ``proposed`` is weaker than ``applied`` (a gate added where there was none is only stronger)."""
    key = config_key(where + ("criteria",))
    if applied is None:
        return []
    if proposed is None:
        return [Loosening(key, shown(_plain(applied)), "none", "the step would be applied with no live gate at all")]
    out = []
    if proposed.soak_seconds() < applied.soak_seconds():
        out.append(Loosening(f"{key}.soak", applied.soak, proposed.soak,
                             "the step may follow the previous one sooner"))
    # A window left to its default follows the soak, whose own finding says it all.
    if (applied.window, proposed.window) != (None, None) and proposed.window_seconds() < applied.window_seconds():
        out.append(Loosening(f"{key}.window", format_duration(applied.window_seconds()),
                             format_duration(proposed.window_seconds()), "the signals are measured over less time"))
    if proposed.scope != applied.scope:
        out.append(Loosening(f"{key}.scope", applied.scope.describe(), proposed.scope.describe(),
                             "the gate would measure something other than what the previous step moved"))
    if proposed.min_samples < applied.min_samples:
        least = number_setting(config, CONFIG, "minGateSamples")
        past = (f"below the limit {fmt(least)} (policy config minGateSamples)"
                if proposed.min_samples < least else None)
        out.append(Loosening(f"{key}.minSamples", str(applied.min_samples), str(proposed.min_samples),
                             "fewer requests are enough to pass the gate", past))
    old_signals = {s.name: s for s in effective_signals(applied, rollback)}
    new_signals = {s.name: s for s in effective_signals(proposed, rollback)}
    for name, old in old_signals.items():
        if name not in new_signals:
            out.append(Loosening(f"{key}.signals", f"[{', '.join(old_signals)}]", f"[{', '.join(new_signals)}]",
                                 f"signal {name!r} is no longer measured"))
        else:
            out += _signal_loosenings(where, proposed, old, new_signals[name], config)
    return out


# --------------------------------------------------------------------------- the metrics route
ROUTE = (METRICS_KEY, "ssh")


def route_loosening(applied: Optional[MetricsSsh], proposed: Optional[MetricsSsh],
                    applied_servers: Mapping[str, Any]) -> Optional[str]:
    """Why a new ``bazbii:metrics.ssh`` (the route to the same endpoint) judges more weakly, or None.

    Reading the same endpoint through a server of the *applied* state measures the same Prometheus:
    the plan already trusts that server with the deploy key, and a pull request cannot change its
    address without moving a step (plan-step-scope). It is how a stack adopts reading over SSH from
    runners that cannot reach the metrics. Anything else lets the pull request choose what answers:
    a host it names, a server not applied yet, a pinned host key dropped or changed, or no route at all
    (the endpoint read from wherever pulumi runs).
    """
    if proposed is None:
        return "the metrics would no longer be read through the applied route but from wherever pulumi runs"
    if proposed.host is not None:
        return f"the metrics would be read through {proposed.host!r}, a host the pull request names, outside the applied state"
    if proposed.server not in applied_servers:
        return f"the metrics would be read through server {proposed.server!r}, which is not in the applied state"
    if applied is not None and applied.host_key is not None and proposed.host_key != applied.host_key:
        return "the SSH host key pinned by the applied route would be dropped or replaced"
    return None


# --------------------------------------------------------------------------- every judging change
def loosenings(t: Transition, applied: Judging, proposed: Judging, config: Mapping[str, Any]) -> list[Loosening]:
    """Every way the target judges steps (not applied yet) or the stack more weakly than the applied record."""
    out: list[Loosening] = []
    changes = judging_changes(applied, proposed, t.step_names, t.previous_steps)
    for track, step in dict.fromkeys(c.track_step for c in changes if c.part == "criteria"):
        where = ("plan", track, "steps", t.step_names[track].index(step))
        out += criteria_loosenings(where, applied.step_criteria(track, step), proposed.step_criteria(track, step),
                                   applied.rollback, config)
    if any(change.path[:2] == ROUTE for change in changes):
        why = route_loosening(applied.metrics.ssh, proposed.metrics.ssh, (t.previous_state or {}).get("servers") or {})
        if why:
            out.append(Loosening(config_key(ROUTE), shown(_plain(applied.metrics.ssh)),
                                 shown(_plain(proposed.metrics.ssh)), why))
    for change in changes:
        if change.part == "touches" and outside([tuple(p) for p in change.proposed], [tuple(p) for p in change.applied]):
            out.append(Loosening(change.key, shown(change.applied), shown(change.proposed),
                                 "the step may change more than the applied plan lets it"))
        elif change.part == "metrics" and change.path[:2] != ROUTE:
            out.append(Loosening(change.key, shown(change.applied), shown(change.proposed),
                                 "the gates would be measured elsewhere or differently"))
        elif change.part == "rollback":
            out += _rollback_loosening(change, config)
    return out


def _rollback_loosening(change: JudgingChange, config: Mapping[str, Any]) -> list[Loosening]:
    """A rollback trigger made weaker within its bound (past its bound, safety-parameter-bounds refuses it)."""
    parameter = next((p for p in PARAMETERS if p.path == change.path), None)
    if parameter is None or not is_weaker(parameter, change.applied, change.proposed):
        return []
    if out_of_bound(parameter, change.proposed, config):
        return []
    return [Loosening(change.key, shown(change.applied), shown(change.proposed), parameter.why)]


# --------------------------------------------------------------------------- the rules
def judged_by_applied(t: Transition) -> list[Finding]:
    """plan-judged-by-applied: a pointer move changes nothing that judges a step (see the module docstring)."""
    return [Finding(p.what, p.fix) for p in moving_problems(t.step_names, t.previous, t.target, t.track_keys)]


def gate_loosening(t: Transition, config: Mapping[str, Any]) -> list[Finding]:
    """safety-gate-loosening: with no pointer moving, what judges steps is loosened only within bounds, with a reason."""
    if t.previous is None or t.moves() or t.applied_judging is None or t.target_judging is None:
        return []
    out = []
    for weaker in loosenings(t, t.applied_judging, t.target_judging, config):
        change = f"{weaker.key} is loosened {weaker.applied} -> {weaker.proposed} (applied: {weaker.applied})"
        if weaker.past_bound:
            out.append(Finding(
                f"{change}, {weaker.past_bound}: {weaker.why}",
                f"set {weaker.key} back to {weaker.applied}, or to a value within the bound "
                "(bazbii:phaseOverride does not lift a bound)",
            ))
        elif not t.override:
            out.append(Finding(
                f"{change} with no step moving: {weaker.why}; loosening what judges a step needs a reason",
                f"keep {weaker.key} at {weaker.applied}, or, if the looser gate is intended, set {OVERRIDE_FIX} "
                "in this pull request",
            ))
    return out


POLICIES = [
    gate_policy(
        "plan-judged-by-applied",
        "A step is judged by the applied plan: an update that moves a step key moves to a step the applied plan has "
        "and changes no step's criteria or touches, no rollback trigger and no metrics config.",
        lambda t, c: judged_by_applied(t),
    ),
    gate_policy(
        "safety-gate-loosening",
        "With no step moving, what judges steps may be tightened; loosening it past its bound is refused, within its "
        "bound it needs bazbii:phaseOverride with a reason. Reading the same metrics through a server of the applied "
        "state is not a loosening.",
        gate_loosening,
        CONFIG,
    ),
]
