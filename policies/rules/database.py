"""Database rules: promote only a gated streaming replica, switch over alone and through the pooler, retire last.

All of them compare ``previous.state.database`` (what was applied) with
``target.state.database`` on the phase gate.

The way back after a switchover is *not* setting the previous step: that
would make the old primary (stopped, fenced, behind) primary again without it
ever having been a gated replica of the new one, which
``db-promote-only-gated-replica`` denies. Rolling back is a new switchover:
re-attach the old primary as a replica (pg_rewind), apply it with its lag gate,
then switch over to it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from bazbii_plan.errors import config_key
from bazbii_plan.facts import DEFAULT_MAX_LAG_BYTES
from bazbii_plan.scope import changed_paths, outside

from ..builders import DEPLOYMENT, gate_of, gate_policy, number_setting, resource_label, stack_policy
from .common import Finding, Transition, dig, fmt, has_key, number
from .keys import state_key, step_changes_key

ALLOWED_AT_SWITCHOVER = ("primary", "replicas", "switchover")


def _db(state: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return dict(dig(state, "database", default={}) or {})


def _switching(t: Transition) -> bool:
    return t.previous is not None and _db(t.previous_state).get("primary") != _db(t.target_state).get("primary")


def promote_only_gated_replica(t: Transition) -> list[Finding]:
    """db-promote-only-gated-replica: the new primary was applied as a streaming replica with a lag gate."""
    if not _switching(t):
        return []
    old, new = _db(t.previous_state), _db(t.target_state)
    old_primary, new_primary = old.get("primary"), new.get("primary")
    replicas = old.get("replicas") or {}
    out = []
    replica = replicas.get(new_primary)
    way_back = ("to move the primary back after a switchover, re-attach the old primary as a replica of the "
                "current one (pg_rewind), apply that with its lag gate, then switch over to it")
    if replica is None:
        out.append(Finding(
            f"{new_primary!r} becomes primary (replacing {old_primary!r}) but was not applied as a streaming replica "
            f"(applied replicas: {sorted(replicas) or 'none'})",
            f"add {state_key('database', 'replicas', new_primary)} with lagGate: true in an earlier step and apply "
            f"it; {way_back}",
        ))
    elif replica.get("lagGate") is not True:
        out.append(Finding(
            f"{new_primary!r} becomes primary but its applied replica has lagGate: {replica.get('lagGate')}",
            f"apply {state_key('database', 'replicas', new_primary, 'lagGate')}: true (and let the lag gate pass) in "
            "an earlier step",
        ))
    switchover_from = (new.get("switchover") or {}).get("from")
    if switchover_from != old_primary:
        out.append(Finding(
            f"the primary moves {old_primary!r} -> {new_primary!r} but database.switchover.from is {switchover_from!r}",
            f"set {step_changes_key(t, 'database', 'switchover')}: {{from: {old_primary}}} in the same step (it "
            "drives the PgBouncer switchover)",
        ))
    return out


def replica_lag_gate(t: Transition, max_lag_bytes: float) -> list[Finding]:
    """db-replica-lag-gate: while replicas exist or a switchover runs, the lag gate is at most maxReplicaLagBytes."""
    new = _db(t.target_state)
    if not (new.get("replicas") or _switching(t)):
        return []
    gate = number(dig(new, "lagGate", "maxBytes"))
    if gate is None or gate <= max_lag_bytes:
        return []
    return [Finding(
        f"database.lagGate.maxBytes is {fmt(gate)}, above the policy limit {fmt(max_lag_bytes)}: a replica that far "
        "behind would lose that much on promotion",
        f"set {step_changes_key(t, 'database', 'lagGate', 'maxBytes')} to {fmt(max_lag_bytes)} or less",
    )]


def _diff_paths(old: Any, new: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _diff_paths(old.get(key), new.get(key), path + (key,))
        return out
    return [] if old == new else [path]


def switchover_alone(t: Transition) -> list[Finding]:
    """db-switchover-alone: the step that moves the primary changes nothing else.

    Allowed to differ: database.primary, database.switchover, the promoted
    server leaving database.replicas, and the roles of the two servers
    involved. (Other tracks not moving is plan-one-step-at-a-time's job.)
    """
    if not _switching(t):
        return []
    old_state, new_state = t.previous_state or {}, t.target_state
    old_primary, new_primary = _db(old_state).get("primary"), _db(new_state).get("primary")
    others = []
    for path in _diff_paths(old_state, new_state):
        if path[:1] == ("database",) and len(path) > 1:
            if path[1] in ("primary", "switchover"):
                continue
            if path[1] == "replicas" and len(path) > 2 and path[2] == new_primary \
                    and dig(new_state, "database", "replicas", new_primary) is None:
                continue
        if path[:1] == ("servers",) and len(path) == 3 and path[2] == "roles" and path[1] in (old_primary, new_primary):
            continue
        others.append(".".join(str(p) for p in path))
    if not others:
        return []
    shown = sorted(dict.fromkeys(others))
    return [Finding(
        f"the switchover {old_primary!r} -> {new_primary!r} also changes {shown[:8]}{' ...' if len(shown) > 8 else ''}",
        "make the switchover a step of its own: move the changes of "
        f"{', '.join('bazbii:' + p for p in shown[:4])}{' ...' if len(shown) > 4 else ''} to an earlier or a later step",
    )]


# Where the applications reach PgBouncer: changing either moves the pooler.
POOLER_LOCATION = ("server", "port")


def pooler_moves_alone(t: Transition) -> list[Finding]:
    """db-pooler-moves-alone: the pooler moves only in a step whose job is to move it.

    Every application connects through PgBouncer, and the switchover PAUSEs it on its host: a pooler
    that moves together with traffic, a release or a resize cannot be told apart from them when
    something breaks, and one that moves in the switchover step would be PAUSEd on a host the
    applications do not use yet (db-switchover-alone refuses that). So the update that changes
    ``database.pooler.server`` or ``.port`` changes nothing but ``database.pooler`` and the roles of
    the old and the new pooler host. A one-step rollback restores a state that was checked.
    """
    if t.previous is None or t.is_rollback or _switching(t):
        return []
    old, new = _db(t.previous_state).get("pooler") or {}, _db(t.target_state).get("pooler") or {}
    moved = [field for field in POOLER_LOCATION if old.get(field) != new.get(field)]
    if not moved:
        return []
    hosts = {old.get("server"), new.get("server")}
    allowed = [("database", "pooler"), *[("servers", host, "roles") for host in sorted(h for h in hosts if h)]]
    stray = outside(changed_paths(t.previous_state or {}, t.target_state), allowed)
    if not stray:
        return []
    shown = ", ".join(config_key(p) for p in stray[:6]) + (" ..." if len(stray) > 6 else "")
    location = " and ".join(f"{state_key('database', 'pooler', f)} {old.get(f)} -> {new.get(f)} (applied: {old.get(f)})"
                            for f in moved)
    return [Finding(
        f"the pooler moves, {location}, in an update that also changes {shown} ({t.moving_description()}): "
        "the pooler moves only in a step whose job is to move it",
        f"keep {step_changes_key(t, 'database', 'pooler', moved[0])} at {old.get(moved[0])} here, and move the pooler "
        "in a step of its own that changes only bazbii:database.pooler and the roles of the two pooler hosts "
        f"(touches: [database.pooler, {', '.join(f'servers.{h}.roles' for h in sorted(h for h in hosts if h))}])",
    )]


def through_pooler(t: Transition) -> list[Finding]:
    """db-switchover-through-pooler: applications reach PostgreSQL only through PgBouncer around a switchover."""
    if not _switching(t):
        return []
    out = []
    for label, state in (("applied", t.previous_state), ("target", t.target_state)):
        connection = _db(state).get("appConnection", "pooler")
        if connection != "pooler":
            out.append(Finding(
                f"the {label} database.appConnection is {connection!r} during a switchover: direct connections are "
                "not paused and would keep writing to the old primary",
                f"apply {state_key('database', 'appConnection')}: pooler in an earlier step, then switch over",
            ))
    return out


def retire_after_switchover(t: Transition) -> list[Finding]:
    """db-retire-after-switchover: an old primary is retired only after the switchover away from it was applied."""
    if t.previous is None:
        return []
    old, new = _db(t.previous_state), _db(t.target_state)
    newly = [s for s in (new.get("retired") or []) if s not in (old.get("retired") or [])]
    out = []
    applied_from = (old.get("switchover") or {}).get("from")
    for server in newly:
        if old.get("primary") == server:
            out.append(Finding(
                f"{server!r} is retired but it is the applied primary",
                f"keep {server!r} out of {state_key('database', 'retired')} until a switchover away from it "
                f"({state_key('database', 'primary')}) was applied in its own step",
            ))
        elif server in (old.get("replicas") or {}):
            out.append(Finding(
                f"{server!r} is retired while it is an applied replica",
                f"remove {state_key('database', 'replicas', server)} in an earlier step (its slot is dropped), then "
                "retire it",
            ))
        elif applied_from != server:
            out.append(Finding(
                f"{server!r} is retired but no applied switchover moved the primary away from it "
                f"(applied switchover.from: {applied_from!r})",
                f"apply the switchover from {server!r} first ({state_key('database', 'switchover', 'from')}: "
                f"{server}) and retire it in a later step",
            ))
    return out


def deployments_through_pooler(
    t: Transition, deployments: list[tuple[str, str, dict[str, Optional[str]]]]
) -> list[Finding]:
    """db-apps-through-pooler (stack): during a switchover every Deployment's DB_HOST/DB_PORT is PgBouncer.

    ``deployments``: ``(urn, name, env)`` with the plain ``value`` env vars of each
    Deployment's containers (None: a variable other than DB_HOST/DB_PORT). A Deployment without DB_HOST does not talk to the
    database directly and is skipped.
    """
    if not _switching(t):
        return []
    db = _db(t.target_state)
    pooler = db.get("pooler") or {}
    server = (dig(t.target_state, "servers", default={}) or {}).get(pooler.get("server")) or {}
    host, port = server.get("address"), number(pooler.get("port"))
    port = 6432.0 if port is None else port
    out = []
    for urn, name, env in deployments:
        if "DB_HOST" not in env:
            continue
        env_port = number(_to_number(env.get("DB_PORT")))
        if env.get("DB_HOST") != host or (env_port is not None and env_port != port):
            out.append(Finding(
                f"Deployment {name} connects to {env.get('DB_HOST')}:{env.get('DB_PORT')} during the switchover, not "
                f"through PgBouncer on {pooler.get('server')} ({host}:{fmt(port)})",
                f"set {state_key('database', 'appConnection')}: pooler in an earlier step (the program then points "
                "DB_HOST/DB_PORT at PgBouncer)",
                urn,
            ))
    return out


def _to_number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- the policies
def apps_through_pooler(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """db-apps-through-pooler (stack): the registered Deployments' plain DB_HOST/DB_PORT, judged against the gate."""
    t = gate_of(resources)
    if t is None:
        return []
    deployments: list[tuple[str, str, dict[str, Optional[str]]]] = []
    for r in resources:
        if r.resource_type != DEPLOYMENT:
            continue
        env: dict[str, Optional[str]] = {}
        for container in dig(r.props, "spec", "template", "spec", "containers", default=[]) or []:
            for var in container.get("env") or []:
                if has_key(var, "value"):  # reading an unknown DB_HOST raises: advisory, never a guess
                    env[var["name"]] = var["value"] if var["name"] in ("DB_HOST", "DB_PORT") else None
        deployments.append((r.urn, resource_label(r.props, r.name), env))
    return deployments_through_pooler(t, deployments)


CONFIG = {
    "maxReplicaLagBytes": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_LAG_BYTES,
                           "description": "upper bound for database.lagGate.maxBytes"},
}

POLICIES = [
    gate_policy(
        "db-promote-only-gated-replica",
        "A server becomes primary only if it was applied as a streaming replica with a lag gate.",
        lambda t, c: promote_only_gated_replica(t),
    ),
    gate_policy(
        "db-replica-lag-gate",
        "The replication lag gate is no looser than maxReplicaLagBytes.",
        lambda t, c: replica_lag_gate(t, number_setting(c, CONFIG, "maxReplicaLagBytes")),
        CONFIG,
    ),
    gate_policy(
        "db-switchover-alone",
        "The step that moves the primary changes nothing else.",
        lambda t, c: switchover_alone(t),
    ),
    gate_policy(
        "db-pooler-moves-alone",
        "The pooler (database.pooler.server/port) moves only in a step of its own: nothing else changes but "
        "database.pooler and the roles of the old and new pooler host.",
        lambda t, c: pooler_moves_alone(t),
    ),
    gate_policy(
        "db-switchover-through-pooler",
        "Applications reach PostgreSQL only through PgBouncer before and during a switchover.",
        lambda t, c: through_pooler(t),
    ),
    stack_policy(
        "db-apps-through-pooler",
        "During a switchover every Deployment reaches PostgreSQL through PgBouncer (DB_HOST/DB_PORT).",
        apps_through_pooler,
    ),
    gate_policy(
        "db-retire-after-switchover",
        "An old primary is retired only after the switchover away from it was applied.",
        lambda t, c: retire_after_switchover(t),
    ),
]
