"""The zero-downtime policies, as policy objects, without starting anything.

``POLICIES`` is what ``policies/__main__.py`` hands to ``PolicyPack`` and what
:func:`policies.offline.run_policies` drives offline, so both run the very
same ``validate`` callables. Importing this module never starts the gRPC
server (only constructing a ``PolicyPack`` does).

Every policy is MANDATORY by default (``schema-ddl-lint`` is advice). Each one
reports ``"<policy name>: <what is wrong>. Fix: <how>"``. Thresholds come from
policy config (``pulumi preview --policy-pack-config``), declared below with a
JSON schema and a default; values pass through protobuf, so integers arrive
as floats and are read as numbers.

Gate policies read the phase gate (the program's ``bazbii-phase-gate`` dynamic
resource): the last applied record next to the target record, both derived
from stack config and therefore known at preview, so MANDATORY stays mandatory.
Resource and stack policies cross-check the registered resources; where a
value they need can be unknown at preview (an id created in this update) the
SDK downgrades that run to advisory, which is why every MANDATORY decision also
has a gate twin.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from bazbii_plan import timegates

from .rules import database, dns, kubernetes, plan, schema, traffic
from .rules.common import Finding, Transition, cfg_ladder, cfg_number, dig, has_key, is_gate, number, plain

PACK_NAME = "zero-downtime"
DEFAULT_ENFORCEMENT = EnforcementLevel.MANDATORY

# --------------------------------------------------------------------------- config
DEFAULTS: dict[str, Any] = {
    "trafficLadder": [0, 10, 50, 100],
    "canaryLadder": [0, 10, 50, 100],
    "maxTtlForSwitch": timegates.MAX_TTL_FOR_SWITCH,
    "assumedOldTtlSeconds": timegates.ASSUMED_OLD_TTL_SECONDS,
    "maxReplicaLagBytes": 1024 * 1024,
    "drainSeconds": 15,
    "minRevisionHistory": 2,
}

_LADDER = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 100},
    "minItems": 1,
    "description": "weight rungs in percent; 0 and 100 are always rungs",
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "trafficLadder": dict(_LADDER, default=DEFAULTS["trafficLadder"]),
    "canaryLadder": dict(_LADDER, default=DEFAULTS["canaryLadder"]),
    "maxTtlForSwitch": {"type": "integer", "minimum": 1, "maximum": 86400, "default": DEFAULTS["maxTtlForSwitch"],
                        "description": "a DNS-only record's content may change only at this TTL (s) or lower"},
    "assumedOldTtlSeconds": {"type": "integer", "minimum": 0, "default": DEFAULTS["assumedOldTtlSeconds"],
                             "description": "the old TTL to wait out when the record does not say what it was"},
    "maxReplicaLagBytes": {"type": "integer", "minimum": 1, "default": DEFAULTS["maxReplicaLagBytes"],
                           "description": "upper bound for database.lagGate.maxBytes"},
    "drainSeconds": {"type": "integer", "minimum": 0, "default": DEFAULTS["drainSeconds"],
                     "description": "minimum preStop drain of serving containers (s)"},
    "minRevisionHistory": {"type": "integer", "minimum": 0, "default": DEFAULTS["minRevisionHistory"],
                           "description": "minimum Deployment revisionHistoryLimit (rollback targets kept)"},
}


def schema_for(*keys: str) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties={k: SCHEMAS[k] for k in keys})


def _config(args: Any) -> Mapping[str, Any]:
    return args.get_config() or {}


# --------------------------------------------------------------------------- policy builders
def _report(name: str, report_violation: Callable, findings: Iterable[Finding]) -> None:
    for finding in findings:
        report_violation(finding.render(name), finding.urn)


def gate_policy(
    name: str,
    description: str,
    rule: Callable[[Transition, Mapping[str, Any]], list[Finding]],
    config_keys: tuple[str, ...] = (),
    enforcement: EnforcementLevel = DEFAULT_ENFORCEMENT,
) -> ResourceValidationPolicy:
    """A policy on the phase gate: ``rule(transition, config)``."""

    def validate(args: ResourceValidationArgs, report_violation: Callable) -> None:
        if not is_gate(args.resource_type, args.props):
            return
        _report(name, report_violation, rule(Transition.from_gate(args.props), _config(args)))

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=enforcement,
        config_schema=schema_for(*config_keys) if config_keys else None,
    )


def resource_policy(
    name: str,
    description: str,
    types: tuple[str, ...],
    rule: Callable[[Mapping[str, Any], str, str, Mapping[str, Any]], list[Finding]],
    config_keys: tuple[str, ...] = (),
    enforcement: EnforcementLevel = DEFAULT_ENFORCEMENT,
) -> ResourceValidationPolicy:
    """A policy on resources of ``types``: ``rule(props, resource type, resource name, config)``.

    ``props`` is CrossGuard's (proxied) mapping: a rule that reads a value
    unknown at preview raises, and the SDK reports that run as advisory.
    """

    def validate(args: ResourceValidationArgs, report_violation: Callable) -> None:
        if args.resource_type not in types:
            return
        _report(name, report_violation, rule(args.props, args.resource_type, args.name, _config(args)))

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=enforcement,
        config_schema=schema_for(*config_keys) if config_keys else None,
    )


def stack_policy(
    name: str,
    description: str,
    rule: Callable[[list, Mapping[str, Any]], list[Finding]],
    config_keys: tuple[str, ...] = (),
    enforcement: EnforcementLevel = DEFAULT_ENFORCEMENT,
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: Callable) -> None:
        _report(name, report_violation, rule(list(args.resources), _config(args)))

    return StackValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=enforcement,
        config_schema=schema_for(*config_keys) if config_keys else None,
    )


# --------------------------------------------------------------------------- resource types
LOAD_BALANCER = "cloudflare:index/loadBalancer:LoadBalancer"
LOAD_BALANCER_POOL = "cloudflare:index/loadBalancerPool:LoadBalancerPool"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"


def _gate_of(resources: list) -> Optional[Transition]:
    for r in resources:
        if is_gate(r.resource_type, r.props):
            return Transition.from_gate(r.props)
    return None


def _labels(props: Mapping[str, Any]) -> dict:
    return dict(plain(dig(props, "metadata", "labels", default={}) or {}))


# --------------------------------------------------------------------------- SQL analysis (cached)
@functools.lru_cache(maxsize=64)
def _analyse(stage: str, migration_id: str, files: tuple[tuple[str, str], ...]) -> tuple:
    return tuple(schema.analyse_configmap(stage, migration_id, dict(files)))


def _migration_findings(props: Mapping[str, Any]) -> Optional[tuple]:
    labels = _labels(props)
    migration_id = labels.get(schema.MIGRATION_ID_LABEL)
    stage = labels.get(schema.MIGRATION_STAGE_LABEL)
    if not migration_id or not stage:
        return None
    data = plain(props.get("data") or {})
    files = tuple(sorted((k, v) for k, v in data.items() if isinstance(v, str) and k.endswith(".sql")))
    return _analyse(stage, migration_id, files)


def _job_runs_runner(props: Mapping[str, Any], _type: str, name: str, _config: Mapping[str, Any]) -> list[Finding]:
    labels = _labels(props)
    if schema.MIGRATION_ID_LABEL not in labels:
        return []
    containers = dig(props, "spec", "template", "spec", "containers", default=[]) or []
    commands = [list(plain(c.get("command") or [])) + list(plain(c.get("args") or [])) for c in containers]
    return schema.runs_through_runner(f"Job {dig(props, 'metadata', 'name', default=name)}", commands)


def _sql_rule(select: Callable[[list], list[Finding]]) -> Callable:
    def rule(props: Mapping[str, Any], _type: str, _name: str, _config: Mapping[str, Any]) -> list[Finding]:
        findings = _migration_findings(props)
        return select(list(findings)) if findings is not None else []

    return rule


# --------------------------------------------------------------------------- stack rules
def _contract_deployments(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    t = _gate_of(resources)
    if t is None:
        return []
    migration = dig(t.target_state, "schema", "migration", default={}) or {}
    deployments = []
    for r in resources:
        if r.resource_type == DEPLOYMENT:
            pod = plain(dig(r.props, "spec", "template", "spec", default={}) or {})
            images = [str(c.get("image") or "") for c in (pod.get("containers") or [])]
            deployments.append((r.urn, str(dig(r.props, "metadata", "name", default=r.name)), images))
    return schema.contract_after_deployments_rollout(
        migration.get("stage"), migration.get("contractRequiresAppVersion"), deployments)


def _stage_matches_plan(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    t = _gate_of(resources)
    if t is None:
        return []
    migration = dig(t.target_state, "schema", "migration", default={}) or {}
    configmaps = []
    for r in resources:
        if r.resource_type in (CONFIG_MAP, JOB):
            labels = _labels(r.props)
            if schema.MIGRATION_ID_LABEL in labels or schema.MIGRATION_STAGE_LABEL in labels:
                configmaps.append((r.urn, f"{r.resource_type.rsplit(':', 1)[-1]} {dig(r.props, 'metadata', 'name', default=r.name)}",
                                   labels.get(schema.MIGRATION_ID_LABEL), labels.get(schema.MIGRATION_STAGE_LABEL)))
    return schema.stage_matches_plan(migration, configmaps)


def _pdbs(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    deployments, pdbs = [], []
    for r in resources:
        if r.resource_type == DEPLOYMENT and kubernetes.is_serving(r.props):
            props = r.props
            labels = plain(dig(props, "spec", "template", "metadata", "labels", default={}) or {})
            namespace = dig(props, "metadata", "namespace", default="default")
            deployments.append((r.urn, str(dig(props, "metadata", "name", default=r.name)), namespace, labels,
                                number(dig(props, "spec", "replicas"))))
        elif r.resource_type == PDB:
            spec = plain(dig(r.props, "spec", default={}) or {})
            pdbs.append((str(dig(r.props, "metadata", "name", default=r.name)),
                         dig(r.props, "metadata", "namespace", default="default"),
                         dict((spec.get("selector") or {}).get("matchLabels") or {}),
                         spec.get("minAvailable"), spec.get("maxUnavailable")))
    return kubernetes.pod_disruption_budgets(deployments, pdbs)


def _deployments_through_pooler(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    t = _gate_of(resources)
    if t is None:
        return []
    deployments = []
    for r in resources:
        if r.resource_type != DEPLOYMENT:
            continue
        env = {}
        for container in dig(r.props, "spec", "template", "spec", "containers", default=[]) or []:
            for var in container.get("env") or []:
                if has_key(var, "value"):  # reading an unknown DB_HOST raises: advisory, never a guess
                    env[var["name"]] = var["value"] if var["name"] in ("DB_HOST", "DB_PORT") else None
        deployments.append((r.urn, str(dig(r.props, "metadata", "name", default=r.name)), env))
    return database.deployments_through_pooler(t, deployments)


def _pool_monitor_attached(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """Pools whose server has weight > 0 in the gate's target state carry a monitor."""
    t = _gate_of(resources)
    if t is None:
        return []
    serving = {p.get("server") for p in (dig(t.target_state, "traffic", "pools", default={}) or {}).values()
               if (number(p.get("weight")) or 0) > 0}
    out = []
    for r in resources:
        if r.resource_type != LOAD_BALANCER_POOL:
            continue
        origins = plain(r.props.get("origins") or [], strict=False)
        servers = {o.get("name") for o in origins if isinstance(o, dict)}
        if servers & serving:
            out += [Finding(f.what + f" although {sorted(servers & serving)} gets traffic in this step", f.fix, r.urn)
                    for f in traffic.pool_has_monitor(r.props)]
    return out


# --------------------------------------------------------------------------- the policies
def _ladder(config: Mapping[str, Any], key: str) -> list[int]:
    return cfg_ladder(config, key, DEFAULTS[key])


POLICIES = [
    # ---- plan
    gate_policy(
        "plan-fail-closed",
        "When the last applied state cannot be read, only the first step of every track (or an explicit override) is allowed.",
        lambda t, c: plan.fail_closed(t),
    ),
    gate_policy(
        "plan-one-step-at-a-time",
        "At most one track moves per update, by exactly one step forward or one step back.",
        lambda t, c: plan.one_step_at_a_time(t),
    ),
    gate_policy(
        "plan-applied-history-immutable",
        "Applied steps are history: editing, removing or reordering one needs an override; changes go in new steps.",
        lambda t, c: plan.applied_history_immutable(t),
    ),
    gate_policy(
        "plan-requires-met",
        "A step's `requires` (other tracks at or past a step) hold in the applied and the target steps.",
        lambda t, c: plan.requires_met(t),
    ),
    # ---- traffic
    gate_policy(
        "traffic-weight-ladder",
        "A load-balancer pool's weight rises at most to the next rung of the ladder per update.",
        lambda t, c: traffic.weight_ladder(t, _ladder(c, "trafficLadder")),
        ("trafficLadder",),
    ),
    gate_policy(
        "traffic-new-pool-at-zero",
        "A pool gets traffic only after it was applied, health-checked, at weight 0.",
        lambda t, c: traffic.new_pool_at_zero(t),
    ),
    gate_policy(
        "traffic-pool-health-monitor",
        "Every pool with weight > 0 is health-checked.",
        lambda t, c: traffic.health_monitor(t),
    ),
    gate_policy(
        "traffic-drain-before-remove",
        "A pool or its origin is removed only after an applied step in which its weight was 0.",
        lambda t, c: traffic.drain_before_remove(t),
    ),
    gate_policy(
        "traffic-never-zero",
        "The pool weights never sum to 0.",
        lambda t, c: traffic.never_zero(t),
    ),
    resource_policy(
        "traffic-load-balancer-weights",
        "The load balancer uses random steering with pool weights that do not sum to 0.",
        (LOAD_BALANCER,),
        lambda props, _t, _n, _c: traffic.load_balancer_weights(props),
    ),
    stack_policy(
        "traffic-pool-monitor-attached",
        "The LoadBalancerPool of every server that gets traffic has its health monitor attached.",
        _pool_monitor_attached,
    ),
    # ---- dns
    gate_policy(
        "dns-lower-ttl-before-switch",
        "A DNS-only record's content changes only after an applied step at a low TTL that has lasted one old TTL.",
        lambda t, c: dns.lower_ttl_before_switch(
            t, cfg_number(c, "maxTtlForSwitch", DEFAULTS["maxTtlForSwitch"]),
            cfg_number(c, "assumedOldTtlSeconds", DEFAULTS["assumedOldTtlSeconds"])),
        ("maxTtlForSwitch", "assumedOldTtlSeconds"),
    ),
    gate_policy(
        "dns-proxied-moves-with-load-balancer",
        "Proxied records are moved with load-balancer weights, not by changing their content.",
        lambda t, c: dns.proxied_moves_with_load_balancer(t),
    ),
    resource_policy(
        "dns-proxied-record-ttl",
        "Proxied DNS records use the automatic TTL.",
        (DNS_RECORD,),
        lambda props, _t, _n, _c: dns.proxied_record_ttl(props),
    ),
    # ---- database
    gate_policy(
        "db-promote-only-gated-replica",
        "A server becomes primary only if it was applied as a streaming replica with a lag gate.",
        lambda t, c: database.promote_only_gated_replica(t),
    ),
    gate_policy(
        "db-replica-lag-gate",
        "The replication lag gate is no looser than maxReplicaLagBytes.",
        lambda t, c: database.replica_lag_gate(t, cfg_number(c, "maxReplicaLagBytes", DEFAULTS["maxReplicaLagBytes"])),
        ("maxReplicaLagBytes",),
    ),
    gate_policy(
        "db-switchover-alone",
        "The step that moves the primary changes nothing else.",
        lambda t, c: database.switchover_alone(t),
    ),
    gate_policy(
        "db-switchover-through-pooler",
        "Applications reach PostgreSQL only through PgBouncer before and during a switchover.",
        lambda t, c: database.through_pooler(t),
    ),
    stack_policy(
        "db-apps-through-pooler",
        "During a switchover every Deployment reaches PostgreSQL through PgBouncer (DB_HOST/DB_PORT).",
        _deployments_through_pooler,
    ),
    gate_policy(
        "db-retire-after-switchover",
        "An old primary is retired only after the switchover away from it was applied.",
        lambda t, c: database.retire_after_switchover(t),
    ),
    # ---- schema
    gate_policy(
        "schema-contract-after-app-rollout",
        "A contract stage runs only when every app image (applied and target) is at or above the required version.",
        lambda t, c: schema.contract_after_app_rollout(t),
    ),
    stack_policy(
        "schema-contract-after-deployments-rollout",
        "A contract stage runs only when every registered Deployment runs the required version or later.",
        _contract_deployments,
    ),
    stack_policy(
        "schema-stage-matches-plan",
        "The migration Job runs the migration and stage the schema track is at.",
        _stage_matches_plan,
    ),
    resource_policy(
        "schema-destructive-ddl-in-contract-only",
        "Destructive DDL (DROP/RENAME COLUMN, DROP TABLE, ...) runs only in a contract stage.",
        (CONFIG_MAP,),
        _sql_rule(schema.destructive_only_in_contract),
    ),
    resource_policy(
        "schema-safe-ddl",
        "Migration SQL takes no long locks and rewrites nothing (CONCURRENTLY, NOT VALID + VALIDATE, no rewrites, lock_timeout).",
        (CONFIG_MAP,),
        _sql_rule(schema.safe_ddl),
    ),
    resource_policy(
        "schema-migrations-through-runner",
        "A migration Job runs its SQL through the bazbii_db runner (timeouts, retries, single runner, journal).",
        (JOB,),
        _job_runs_runner,
    ),
    resource_policy(
        "schema-ddl-lint",
        "Advice from the SQL linters (squawk) on migration SQL.",
        (CONFIG_MAP,),
        _sql_rule(schema.ddl_lint),
        enforcement=EnforcementLevel.ADVISORY,
    ),
    # ---- kubernetes
    resource_policy(
        "k8s-zero-unavailable",
        "Serving Deployments roll out with maxUnavailable 0.",
        (DEPLOYMENT,),
        lambda props, _t, name, _c: kubernetes.zero_unavailable(props, name),
    ),
    resource_policy(
        "k8s-readiness-probe",
        "Every container of a serving Deployment has a readiness probe.",
        (DEPLOYMENT,),
        lambda props, _t, name, _c: kubernetes.readiness_probe(props, name),
    ),
    resource_policy(
        "k8s-graceful-shutdown",
        "Serving containers drain in preStop for at least drainSeconds, within the termination grace period.",
        (DEPLOYMENT,),
        lambda props, _t, name, c: kubernetes.graceful_shutdown(
            props, name, cfg_number(c, "drainSeconds", DEFAULTS["drainSeconds"])),
        ("drainSeconds",),
    ),
    resource_policy(
        "k8s-revision-history",
        "Deployments keep enough old ReplicaSets to roll back.",
        (DEPLOYMENT,),
        lambda props, _t, name, c: kubernetes.revision_history(
            props, name, cfg_number(c, "minRevisionHistory", DEFAULTS["minRevisionHistory"])),
        ("minRevisionHistory",),
    ),
    stack_policy(
        "k8s-pod-disruption-budget",
        "Every serving Deployment is covered by a PodDisruptionBudget that keeps pods up.",
        _pdbs,
    ),
    gate_policy(
        "k8s-canary-ladder",
        "The canary's share of API pods rises at most one rung of the ladder per update.",
        lambda t, c: kubernetes.canary_ladder(t, _ladder(c, "canaryLadder")),
        ("canaryLadder",),
    ),
    resource_policy(
        "k8s-no-latest-tag",
        "Container images are pinned to a version, never `latest`.",
        (DEPLOYMENT, JOB, CRON_JOB, STATEFUL_SET, DAEMON_SET),
        lambda props, rtype, name, _c: kubernetes.no_latest_tag(props, rtype.rsplit(":", 1)[-1], name),
    ),
    gate_policy(
        "k8s-no-latest-tag-in-state",
        "Images named in the stack config are pinned to a version, never `latest`.",
        lambda t, c: kubernetes.state_images_pinned(t),
    ),
]

POLICY_NAMES = [p.name for p in POLICIES]
assert len(set(POLICY_NAMES)) == len(POLICY_NAMES), "policy names must be unique"
