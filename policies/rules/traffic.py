"""Traffic rules: load-balancer pool weights move up a ladder, never skip health checks, never drop to 0.

Gate rules compare ``previous.state.traffic.pools`` with ``target.state.traffic.pools``
(pool name -> {server, weight, monitored}). They are the MANDATORY decisions:
the LoadBalancer's ``randomSteering.poolWeights`` is keyed by pool *ids*, which
are unknown at preview whenever a pool is new, so nothing mandatory may hinge
on them. The resource rules below only cross-check what the program registered.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from bazbii_plan.facts import DEFAULT_TRAFFIC_LADDER

from ..builders import LOAD_BALANCER, LOAD_BALANCER_POOL, gate_of, gate_policy, ladder_setting, ladder_schema, \
    resource_policy, stack_policy
from .common import UNKNOWN, Finding, Transition, dig, fmt, number, peek, plain, rung_passed
from .keys import state_key, step_changes_key



def _pools(state: Optional[Mapping[str, Any]]) -> dict[str, dict]:
    return dict(dig(state, "traffic", "pools", default={}) or {})


def _weight(pool: Mapping[str, Any]) -> float:
    return number(pool.get("weight")) or 0.0


def goes_back(t: Transition) -> bool:
    """Some track moves back: a one-step rollback (a state already checked on the way up), or a jump back that
    plan-one-step-at-a-time denies on its own. Rules about climbing forward have nothing to say about either."""
    return any(m.distance < 0 for m in t.moves())


def weight_ladder(t: Transition, ladder: list[int]) -> list[Finding]:
    """traffic-weight-ladder: a pool's weight rises at most to the next rung; decreases are free.

    A one-step rollback restores a state that was already checked on the way
    up, so it is exempt (it may raise a weight by more than one rung); a jump
    back of more steps is the plan rule's alone (see :func:`goes_back`).
    """
    if t.previous is None or goes_back(t):
        return []
    before, after = _pools(t.previous_state), _pools(t.target_state)
    out = []
    for name, pool in sorted(after.items()):
        new = _weight(pool)
        old = _weight(before[name]) if name in before else 0.0
        rung = rung_passed(ladder, old, new)
        if rung is not None:
            out.append(Finding(
                f"pool {name!r} weight jumps {fmt(old)} -> {fmt(new)}, past the next rung {rung} of the ladder {ladder}",
                f"set {step_changes_key(t, 'traffic', 'pools', name, 'weight')} to {rung} (or less) in this step and "
                "raise it further in a later step, once the gate of this one holds",
            ))
    return out


def new_pool_at_zero(t: Transition) -> list[Finding]:
    """traffic-new-pool-at-zero: a pool gets traffic only after an applied step in which it existed at weight 0."""
    if t.previous is None or goes_back(t):
        return []
    before, after = _pools(t.previous_state), _pools(t.target_state)
    out = []
    for name, pool in sorted(after.items()):
        if _weight(pool) > 0 and name not in before:
            out.append(Finding(
                f"pool {name!r} gets weight {fmt(_weight(pool))} but was not applied before (no health-checked "
                "step at weight 0)",
                f"add pool {name!r} at weight 0 in a step of its own ({state_key('traffic', 'pools', name, 'weight')}: "
                "0), apply it and see it healthy, then raise the weight",
            ))
        elif _weight(pool) > 0 and name in before and before[name].get("server") != pool.get("server"):
            out.append(Finding(
                f"pool {name!r} moves its origin {before[name].get('server')!r} -> {pool.get('server')!r} "
                f"while getting weight {fmt(_weight(pool))}",
                f"keep {state_key('traffic', 'pools', name, 'server')} as applied; add a new pool for the new origin at "
                "weight 0 and shift weight to it step by step",
            ))
    return out


def health_monitor(t: Transition) -> list[Finding]:
    """traffic-pool-health-monitor: every pool with weight > 0 is health-checked (target state)."""
    out = []
    for name, pool in sorted(_pools(t.target_state).items()):
        if _weight(pool) > 0 and pool.get("monitored") is False:
            out.append(Finding(
                f"pool {name!r} has weight {fmt(_weight(pool))} but monitored: false",
                f"set {step_changes_key(t, 'traffic', 'pools', name, 'monitored')}: true (and apply it at weight 0 "
                "first), or set its weight to 0",
            ))
    return out


def drain_before_remove(t: Transition) -> list[Finding]:
    """traffic-drain-before-remove: a pool (or its origin) goes away only after an applied step at weight 0."""
    if t.previous is None:
        return []
    before, after = _pools(t.previous_state), _pools(t.target_state)
    out = []
    for name, pool in sorted(before.items()):
        old = _weight(pool)
        if name not in after and old > 0:
            out.append(Finding(
                f"pool {name!r} is removed while its applied weight is {fmt(old)}",
                f"set {state_key('traffic', 'pools', name, 'weight')} to 0 in one step, apply it, let connections "
                "drain, then remove the pool",
            ))
        elif name in after and after[name].get("server") != pool.get("server") and old > 0:
            out.append(Finding(
                f"pool {name!r} replaces its origin {pool.get('server')!r} -> {after[name].get('server')!r} while "
                f"its applied weight is {fmt(old)}",
                f"drain the pool to weight 0 first ({state_key('traffic', 'pools', name, 'weight')}: 0), or keep "
                f"{state_key('traffic', 'pools', name, 'server')} and add a separate pool for the new origin",
            ))
    return out


def never_zero(t: Transition) -> list[Finding]:
    """traffic-never-zero: the sum of the target weights stays above 0."""
    pools = _pools(t.target_state)
    total = sum(_weight(p) for p in pools.values())
    if total > 0:
        return []
    return [Finding(
        f"the target pool weights sum to {fmt(total)}: the load balancer would have no pool to send traffic to",
        f"keep at least one healthy pool with weight > 0 in {state_key('traffic', 'pools')}",
    )]


# --------------------------------------------------------------------------- resource rules
def load_balancer_weights(props: Mapping[str, Any]) -> list[Finding]:
    """traffic-load-balancer-weights (LoadBalancer): random steering with weights that do not sum to 0.

    ``randomSteering.poolWeights`` is keyed by pool ids; when they are unknown at
    preview, reading them raises and the SDK reports this policy as advisory.
    ``traffic-never-zero`` on the gate is the mandatory twin.
    """
    out = []
    steering = props.get("steeringPolicy")
    if steering != "random":
        out.append(Finding(
            f"steeringPolicy is {steering!r}; pool weights only apply with 'random' steering",
            f"set {state_key('traffic', 'steering')}: random (the program then sets the pool weights from "
            f"{state_key('traffic', 'pools')})",
        ))
    weights = dig(props, "randomSteering", "poolWeights")
    if not isinstance(weights, Mapping) or not weights:
        out.append(Finding("randomSteering.poolWeights is missing",
                           f"set a weight for every pool in {state_key('traffic', 'pools')}"))
        return out
    values = [number(weights[k]) for k in list(weights.__iter__())]
    if sum(v or 0.0 for v in values) <= 0:
        out.append(Finding("every pool weight is 0: no pool would receive traffic",
                           f"keep one pool with weight > 0 in {state_key('traffic', 'pools')}"))
    return out


def pool_has_monitor(props: Mapping[str, Any]) -> list[Finding]:
    """traffic-pool-health-monitor (LoadBalancerPool): a pool that is enabled carries a health monitor.

    Only the presence of ``monitor`` is checked: its value is the monitor's id,
    unknown at preview when the monitor is new.
    """
    if peek(props, "enabled") is False:
        return []
    monitor = peek(props, "monitor")
    if monitor is UNKNOWN or monitor:  # unknown at preview = set to a monitor created in this update
        return []
    return [Finding(
        f"pool {peek(props, 'name')!r} has no health monitor",
        "set bazbii:traffic.pools.<pool>.monitored: true (the program then attaches the load-balancer monitor) "
        "before the pool gets any weight",
    )]


# --------------------------------------------------------------------------- the policies
def pool_monitor_attached(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """traffic-pool-monitor-attached (stack): pools whose server has weight > 0 in the gate's target carry a monitor."""
    t = gate_of(resources)
    if t is None:
        return []
    serving = {p.get("server") for p in _pools(t.target_state).values() if _weight(p) > 0}
    out = []
    for r in resources:
        if r.resource_type != LOAD_BALANCER_POOL:
            continue
        origins = plain(r.props.get("origins") or [], strict=False)
        servers = {o.get("name") for o in origins if isinstance(o, dict)}
        if servers & serving:
            out += [Finding(f.what + f" although {sorted(servers & serving, key=str)} gets traffic in this step", f.fix, r.urn)
                    for f in pool_has_monitor(r.props)]
    return out


CONFIG = {"trafficLadder": ladder_schema(list(DEFAULT_TRAFFIC_LADDER))}

POLICIES = [
    gate_policy(
        "traffic-weight-ladder",
        "A load-balancer pool's weight rises at most to the next rung of the ladder per update.",
        lambda t, c: weight_ladder(t, ladder_setting(c, CONFIG, "trafficLadder")),
        CONFIG,
    ),
    gate_policy(
        "traffic-new-pool-at-zero",
        "A pool gets traffic only after it was applied, health-checked, at weight 0.",
        lambda t, c: new_pool_at_zero(t),
    ),
    gate_policy(
        "traffic-pool-health-monitor",
        "Every pool with weight > 0 is health-checked.",
        lambda t, c: health_monitor(t),
    ),
    gate_policy(
        "traffic-drain-before-remove",
        "A pool or its origin is removed only after an applied step in which its weight was 0.",
        lambda t, c: drain_before_remove(t),
    ),
    gate_policy(
        "traffic-never-zero",
        "The pool weights never sum to 0.",
        lambda t, c: never_zero(t),
    ),
    resource_policy(
        "traffic-load-balancer-weights",
        "The load balancer uses random steering with pool weights that do not sum to 0.",
        (LOAD_BALANCER,),
        lambda props, _t, _n, _c: load_balancer_weights(props),
        preview_unknown="its pool weights are keyed by pool ids, known once the pools exist; traffic-never-zero "
                        "judges the weights on the transition check",
    ),
    stack_policy(
        "traffic-pool-monitor-attached",
        "The LoadBalancerPool of every server that gets traffic has its health monitor attached.",
        pool_monitor_attached,
    ),
]
