"""Safety parameters: every setting that guards a move has bounds, and none is weakened while something moves.

A *safety parameter* is a value of the desired state that decides how early a
bad move is noticed or how much it can cost: the replication lag gate, the
load-balancer health monitor, the PgBouncer PAUSE timeout, the rollout's
drain and grace periods, the rollback triggers. :data:`PARAMETERS` lists each
one once, with the direction in which it gets weaker and the policy-config
bound that holds it (JSON schema with its default, in :data:`CONFIG`). The
traffic and canary ladders are policy config themselves; their bounds are
their JSON schema (:data:`policies.builders.LADDER_SCHEMA`).

Two rules read the phase gate:

* ``safety-parameter-bounds``: the target state keeps every parameter within
  its bound (always, whatever moves);
* ``safety-not-weakened``: in a step that moves traffic (pool weights or
  origins, the canary), DNS (a record's content, type or proxying), the
  primary or a schema stage, no parameter is weaker in the target than in the
  applied record. Loosening a guard is a step of its own, reviewed as such;
  a one-step rollback restores an already checked state and is exempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from bazbii_plan.errors import config_key
from bazbii_plan.facts import SWITCHOVER_STALL_TARGET_SECONDS

from ..builders import default_of, gate_policy, list_setting, number_setting
from .common import Finding, Transition, dig, fmt, number

# Which way a parameter gets weaker.
LARGER = "larger"  # a larger value is weaker (a longer interval, more retries, a longer PAUSE)
SMALLER = "smaller"  # a smaller value is weaker (a shorter window, a shorter drain)
MORE_CODES = "more-codes"  # accepting more HTTP status codes as healthy is weaker
CHANGED = "changed"  # any other value is weaker (the health path: another path checks something else)
RANKED = "ranked"  # a value earlier in ``ranks`` (weakest first) is weaker: https -> http, true -> false
WILDCARD = "*"  # a path segment standing for every key of a map (each replica)


@dataclass(frozen=True)
class Parameter:
    path: tuple[str, ...]  # in the desired state (camelCase), = the bazbii: config key; "*": every map key
    weaker: str  # LARGER | SMALLER | MORE_CODES | CHANGED | RANKED
    bound: Optional[str]  # the policy-config property bounding it (None: another policy bounds it, or none needed)
    why: str  # what a weaker value costs
    ranks: tuple = ()  # RANKED: the values, weakest first

    @property
    def key(self) -> str:
        return "bazbii:" + ".".join(self.path)

    def instances(self, *states: Optional[Mapping[str, Any]]) -> list[tuple[str, ...]]:
        """The concrete paths of this parameter in any of ``states`` (a wildcard expands to every key)."""
        paths: list[tuple[str, ...]] = [()]
        for part in self.path:
            if part != WILDCARD:
                paths = [p + (part,) for p in paths]
                continue
            expanded = []
            for p in paths:
                keys: set[str] = set()
                for state in states:
                    node = dig(state, *p)
                    keys.update(node if isinstance(node, Mapping) else ())
                expanded += [p + (k,) for k in sorted(keys)]
            paths = expanded
        return paths


PARAMETERS: tuple[Parameter, ...] = (
    # Bounded by db-replica-lag-gate (maxReplicaLagBytes); weakening is judged here.
    Parameter(("database", "lagGate", "maxBytes"), LARGER, None,
              "a promoted replica may be that many bytes behind"),
    Parameter(("database", "lagGate", "windowSeconds"), SMALLER, "minLagWindowSeconds",
              "a shorter window lets a momentary dip in lag pass the gate"),
    Parameter(("database", "lagGate", "timeoutSeconds"), LARGER, "maxLagTimeoutSeconds",
              "the gate waits longer for a lagging replica before it fails, holding the step (and a switchover) up"),
    Parameter(("database", "replicas", WILDCARD, "lagGate"), RANKED, None,
              "the replica could be promoted without its lag having been gated", ranks=(False, True)),
    Parameter(("database", "replicas", WILDCARD, "consistencyCheck"), RANKED, None,
              "the replica's data is no longer compared with the primary's at a fixed LSN", ranks=(False, True)),
    Parameter(("database", "pooler", "pauseTimeoutSeconds"), LARGER, "maxPauseTimeoutSeconds",
              "PgBouncer may hold every client's transactions that long during a switchover"),
    Parameter(("traffic", "monitor", "interval"), LARGER, "maxMonitorIntervalSeconds",
              "an unhealthy pool keeps traffic longer before the load balancer notices"),
    Parameter(("traffic", "monitor", "timeout"), LARGER, "maxMonitorTimeoutSeconds",
              "a slow origin still counts as healthy"),
    Parameter(("traffic", "monitor", "retries"), LARGER, "maxMonitorRetries",
              "more failed checks are needed before a pool is taken out"),
    Parameter(("traffic", "monitor", "expectedCodes"), MORE_CODES, "allowedExpectedCodes",
              "error responses would count as healthy"),
    Parameter(("traffic", "monitor", "path"), CHANGED, "monitorPaths",
              "the monitor would check something other than the gateway's health endpoint"),
    Parameter(("traffic", "monitor", "type"), RANKED, "monitorTypes",
              "the health check no longer verifies the origin's TLS", ranks=("http", "https")),
    # Bounded by k8s-graceful-shutdown (drainSeconds) and k8s-revision-history (minRevisionHistory).
    Parameter(("app", "rollout", "drainSeconds"), SMALLER, None,
              "pods stop while the gateway still sends them requests"),
    Parameter(("app", "rollout", "terminationGracePeriodSeconds"), SMALLER, "minGracePeriodSeconds",
              "pods are killed before in-flight requests finish"),
    Parameter(("app", "rollout", "minReadySeconds"), SMALLER, "minReadySeconds",
              "a pod that crashes right after its first ready probe still counts as rolled out"),
    Parameter(("app", "rollout", "revisionHistoryLimit"), SMALLER, None,
              "fewer old revisions are kept for `kubectl rollout undo`"),
    Parameter(("app", "rollout", "pdbMaxUnavailable"), LARGER, "maxPdbUnavailable",
              "a node drain may evict more API pods at once"),
    Parameter(("app", "rollout", "readinessPath"), CHANGED, None,
              "pods would be declared ready by a different endpoint than the one that was checked so far"),
    Parameter(("gateway", "healthPath"), CHANGED, None,
              "the gateway's health endpoint, which the load-balancer monitor relies on, would change"),
    Parameter(("rollback", "maxErrorRate"), LARGER, "maxRollbackErrorRate",
              "a step stays in place at a higher error rate before it is rolled back"),
    Parameter(("rollback", "p95Factor"), LARGER, "maxRollbackP95Factor",
              "a step stays in place at a slower p95 before it is rolled back"),
    Parameter(("rollback", "p95TargetMs"), LARGER, "maxRollbackP95TargetMs",
              "a step stays in place at a slower p95 before it is rolled back"),
)

CONFIG: dict[str, dict[str, Any]] = {
    "minLagWindowSeconds": {"type": "number", "exclusiveMinimum": 0, "default": 1,
                            "description": "shortest database.lagGate.windowSeconds (s)"},
    "maxLagTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "default": 300,
                             "description": "longest database.lagGate.timeoutSeconds (s)"},
    "maxPauseTimeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "default": SWITCHOVER_STALL_TARGET_SECONDS,
                               "description": "longest database.pooler.pauseTimeoutSeconds (s): what a transaction "
                                              "begun right before PAUSE may cost every client"},
    "maxMonitorIntervalSeconds": {"type": "integer", "minimum": 10, "default": 60,
                                  "description": "longest traffic.monitor.interval (s)"},
    "maxMonitorTimeoutSeconds": {"type": "integer", "minimum": 1, "default": 5,
                                 "description": "longest traffic.monitor.timeout (s)"},
    "maxMonitorRetries": {"type": "integer", "minimum": 0, "default": 2,
                          "description": "most traffic.monitor.retries"},
    "allowedExpectedCodes": {"type": "array", "minItems": 1, "default": ["200"],
                             "items": {"type": "string", "pattern": "^[1-5]([0-9]{2}|xx)$"},
                             "description": "traffic.monitor.expectedCodes may accept only these codes"},
    "monitorPaths": {"type": "array", "minItems": 1, "default": ["/healthz"],
                     "items": {"type": "string", "pattern": "^/"},
                     "description": "paths traffic.monitor.path may check"},
    "monitorTypes": {"type": "array", "minItems": 1, "default": ["https"],
                     "items": {"type": "string", "enum": ["http", "https"]},
                     "description": "protocols traffic.monitor.type may use"},
    "minGracePeriodSeconds": {"type": "integer", "minimum": 1, "default": 30,
                              "description": "shortest app.rollout.terminationGracePeriodSeconds (s)"},
    "minReadySeconds": {"type": "integer", "minimum": 0, "default": 5,
                        "description": "shortest app.rollout.minReadySeconds (s)"},
    "maxPdbUnavailable": {"type": "integer", "minimum": 1, "default": 1,
                          "description": "most app.rollout.pdbMaxUnavailable"},
    "maxRollbackErrorRate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.01,
                             "description": "highest rollback.maxErrorRate"},
    "maxRollbackP95Factor": {"type": "number", "exclusiveMinimum": 1, "default": 2.0,
                             "description": "highest rollback.p95Factor"},
    "maxRollbackP95TargetMs": {"type": "integer", "minimum": 1, "default": 1000,
                               "description": "highest rollback.p95TargetMs (ms)"},
}


# --------------------------------------------------------------------------- comparing values
def accepted_codes(codes: Any) -> frozenset[int]:
    """HTTP status codes a monitor's ``expectedCodes`` accepts: ``"200"`` -> {200}, ``"2xx"`` -> 200..299."""
    out: set[int] = set()
    for part in str(codes or "").replace(",", " ").split():
        if len(part) == 3 and part[0] in "12345" and part[1:].lower() == "xx":
            out.update(range(int(part[0]) * 100, int(part[0]) * 100 + 100))
        elif part.isdigit():
            out.add(int(part))
    return frozenset(out)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as written in the stack file
    return fmt(value) if number(value) is not None else repr(value)


def is_weaker(parameter: Parameter, old: Any, new: Any) -> bool:
    if old is None or new is None:
        return False  # a parameter that appears or goes away is a structural change, judged by the scope rule
    if parameter.weaker == MORE_CODES:
        return not accepted_codes(new) <= accepted_codes(old)
    if parameter.weaker == CHANGED:
        return old != new
    if parameter.weaker == RANKED:
        ranks = list(parameter.ranks)
        return old in ranks and (new not in ranks or ranks.index(new) < ranks.index(old))
    old_n, new_n = number(old), number(new)
    if old_n is None or new_n is None:
        return old != new
    return new_n > old_n if parameter.weaker == LARGER else new_n < old_n


def out_of_bound(parameter: Parameter, value: Any, config: Mapping[str, Any]) -> Optional[str]:
    """Why ``value`` is outside the parameter's policy-config bound (None when within it)."""
    if value is None or parameter.bound is None:
        return None
    if parameter.weaker == MORE_CODES:
        allowed = frozenset().union(*(accepted_codes(c) for c in list_setting(config, CONFIG, parameter.bound)))
        extra = sorted(accepted_codes(value) - allowed)
        if not extra:
            return None
        return f"accepts {len(extra)} status code(s) outside {list_setting(config, CONFIG, parameter.bound)}"
    if parameter.weaker in (CHANGED, RANKED):
        allowed_values = list_setting(config, CONFIG, parameter.bound)
        return None if value in allowed_values else f"is not one of {allowed_values}"
    bound = number_setting(config, CONFIG, parameter.bound)
    n = number(value)
    if n is None:
        return None
    if parameter.weaker == LARGER and n > bound:
        return f"is above the limit {fmt(bound)}"
    if parameter.weaker == SMALLER and n < bound:
        return f"is below the limit {fmt(bound)}"
    return None


# --------------------------------------------------------------------------- what moves
def _moved(old: Any, new: Any, fields: tuple[str, ...]) -> bool:
    old, new = old or {}, new or {}
    names = set(old) | set(new)
    return any(name not in old or name not in new or any((old[name] or {}).get(f) != (new[name] or {}).get(f)
                                                          for f in fields) for name in names)


def _traffic_moved(old_pools: Any, new_pools: Any) -> bool:
    """A pool's weight changes (an absent pool weighs 0), or a pool that carries traffic changes its origin."""
    old_pools, new_pools = old_pools or {}, new_pools or {}
    for name in set(old_pools) | set(new_pools):
        old, new = old_pools.get(name) or {}, new_pools.get(name) or {}
        old_weight, new_weight = number(old.get("weight")) or 0.0, number(new.get("weight")) or 0.0
        if old_weight != new_weight or (max(old_weight, new_weight) > 0 and old.get("server") != new.get("server")):
            return True
    return False


MOVES: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], bool]], ...] = (
    ("traffic", lambda o, n: _traffic_moved(dig(o, "traffic", "pools"), dig(n, "traffic", "pools"))),
    ("the canary", lambda o, n: (dig(o, "app", "canary") or {}).get("weight") != (dig(n, "app", "canary") or {}).get("weight")
     or (dig(o, "app", "canary") or {}).get("image") != (dig(n, "app", "canary") or {}).get("image")),
    ("DNS", lambda o, n: _moved(dig(o, "dns", "records"), dig(n, "dns", "records"), ("content", "type", "proxied"))),
    ("the primary", lambda o, n: dig(o, "database", "primary") != dig(n, "database", "primary")),
    ("a schema stage", lambda o, n: {k: (dig(o, "schema", "migration") or {}).get(k) for k in ("id", "stage")}
     != {k: (dig(n, "schema", "migration") or {}).get(k) for k in ("id", "stage")}),
)


def what_moves(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [name for name, moved in MOVES if moved(old, new)]


# --------------------------------------------------------------------------- the rules
def parameter_bounds(t: Transition, config: Mapping[str, Any]) -> list[Finding]:
    """safety-parameter-bounds: every bounded safety parameter of the target state is within its bound."""
    out = []
    for parameter in PARAMETERS:
        bound = parameter.bound
        if bound is None:
            continue  # bounded by another policy, or needs no bound: out_of_bound finds nothing
        for path in parameter.instances(t.target_state):
            value = dig(t.target_state, *path)
            problem = out_of_bound(parameter, value, config)
            if problem:
                key = config_key(path)
                out.append(Finding(
                    f"{key} is {_show(value)}, which {problem} (policy config {bound}): {parameter.why}",
                    f"set {key} back within the bound (e.g. {_show(default_of(CONFIG, bound))})",
                ))
    return out


def not_weakened(t: Transition) -> list[Finding]:
    """safety-not-weakened: in a step that moves traffic, DNS, the primary or a schema stage, no guard loosens."""
    if t.previous is None or t.is_rollback:
        return []
    moving = what_moves(t.previous_state or {}, t.target_state)
    if not moving:
        return []
    out = []
    for parameter in PARAMETERS:
        for path in parameter.instances(t.previous_state, t.target_state):
            old, new = dig(t.previous_state, *path), dig(t.target_state, *path)
            if is_weaker(parameter, old, new):
                key = config_key(path)
                out.append(Finding(
                    f"{key} is weakened {_show(old)} -> {_show(new)} in a step that moves "
                    f"{' and '.join(moving)} ({t.moving_description()}): {parameter.why}",
                    f"keep {key} at {_show(old)} in this step; loosen it, if at all, in a step of its own "
                    "that moves nothing",
                ))
    return out


# --------------------------------------------------------------------------- the policies
# maxBytes is bounded by db-replica-lag-gate (maxReplicaLagBytes), drainSeconds by k8s-graceful-shutdown and
# revisionHistoryLimit by k8s-revision-history: one bound each, in the module that already holds it.
POLICIES = [
    gate_policy(
        "safety-parameter-bounds",
        "Every safety parameter of the target state (lag gate, monitor, PAUSE timeout, grace, rollback triggers) "
        "is within its policy-config bound.",
        parameter_bounds,
        CONFIG,
    ),
    gate_policy(
        "safety-not-weakened",
        "No safety parameter is weaker than applied in a step that moves traffic, DNS, the primary or a schema stage.",
        lambda t, c: not_weakened(t),
    ),
]
