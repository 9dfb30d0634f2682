"""Turn pure rule functions into CrossGuard policy objects (the one place that knows ``pulumi_policy``'s shapes).

Each rules module (:mod:`policies.rules`) declares its policies beside its rule
functions with the builders below, and exports them as ``POLICIES``;
:mod:`policies.pack` only concatenates those lists. Importing this module never
starts the gRPC server (only constructing a ``PolicyPack`` does).

Every policy is MANDATORY by default. Each reports ``"<policy name>: <what is
wrong>. Fix: <how>"``. Thresholds come from policy config (``pulumi preview
--policy-pack-config``): a rules module declares each property as a JSON
schema with its ``default`` (``CONFIG``), and a policy names the properties it
reads. Values pass through protobuf, so integers arrive as floats and are read
as numbers.

Gate policies read the phase gate (the program's ``bazbii-phase-gate`` dynamic
resource): the last applied record next to the target record, both derived
from stack config and therefore known at preview, so MANDATORY stays mandatory.
Resource and stack policies cross-check the registered resources; where a
value they need can be unknown at preview (an id created in this update) the
SDK downgrades that run to advisory, which is why every MANDATORY decision also
has a gate twin.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from .rules.common import GATE_TYPE, Finding, Transition, cfg_ladder, cfg_number, dig, is_gate, plain

PACK_NAME = "zero-downtime"
DEFAULT_ENFORCEMENT = EnforcementLevel.MANDATORY

# --------------------------------------------------------------------------- resource types the rules read
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

# --------------------------------------------------------------------------- config
LADDER_SCHEMA = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 100},
    "uniqueItems": True,
    # A ladder of only 0 and 100 would let weight jump 0 -> 100 in one step: one rung must lie between them.
    "not": {"items": {"enum": [0, 100]}},
    "minItems": 1,
    "description": "weight rungs in percent; 0 and 100 are always rungs, and at least one rung lies between them",
}


def ladder_schema(default: list[int]) -> dict[str, Any]:
    return dict(LADDER_SCHEMA, default=list(default))


def default_of(schemas: Mapping[str, Mapping[str, Any]], key: str) -> Any:
    return schemas[key]["default"]


def number_setting(config: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]], key: str) -> float:
    """A numeric policy-config property, or the schema's default when it is absent."""
    return cfg_number(config, key, default_of(schemas, key))


def ladder_setting(config: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]], key: str) -> list[int]:
    return cfg_ladder(config, key, default_of(schemas, key))


def list_setting(config: Mapping[str, Any], schemas: Mapping[str, Mapping[str, Any]], key: str) -> list:
    value = config.get(key) if config else None
    return list(value) if isinstance(value, (list, tuple)) and value else list(default_of(schemas, key))


def _schema(config: Optional[Mapping[str, Mapping[str, Any]]]) -> Optional[PolicyConfigSchema]:
    return PolicyConfigSchema(properties={key: dict(schema) for key, schema in config.items()}) if config else None


def _config(args: Any) -> Mapping[str, Any]:
    return args.get_config() or {}


def _report(name: str, report_violation: Callable, findings: Iterable[Finding]) -> None:
    for finding in findings:
        report_violation(finding.render(name), finding.urn)


# --------------------------------------------------------------------------- policy builders
def _resource_policy(name: str, description: str, validate: Callable, config: Optional[Mapping[str, Mapping[str, Any]]],
                     enforcement: EnforcementLevel) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(name=name, description=description, validate=validate,
                                    enforcement_level=enforcement, config_schema=_schema(config))


def gate_policy(
    name: str,
    description: str,
    rule: Callable[[Transition, Mapping[str, Any]], list[Finding]],
    config: Optional[Mapping[str, Mapping[str, Any]]] = None,
    enforcement: EnforcementLevel = DEFAULT_ENFORCEMENT,
) -> ResourceValidationPolicy:
    """A policy on the phase gate: ``rule(transition, config)``; ``config``: property -> JSON schema (with default)."""

    def validate(args: ResourceValidationArgs, report_violation: Callable) -> None:
        transition = gate_view(args, args.resource_type)
        if transition is not None:
            _report(name, report_violation, rule(transition, _config(args)))

    return _resource_policy(name, description, validate, config, enforcement)


# The attribute a policy carries when it reads values a real ``pulumi preview`` cannot know yet (other
# resources' outputs): there the SDK reports it as "can't run policy ... during preview" (advisory); it runs
# at ``pulumi up``, once those resources are applied. Its value says why, and which rule on the transition
# check is its mandatory twin for the preview.
PREVIEW_UNKNOWN = "preview_unknown"


def _with_preview_unknown(policy, why: str):
    setattr(policy, PREVIEW_UNKNOWN, why)
    return policy


def resource_policy(
    name: str,
    description: str,
    types: tuple[str, ...],
    rule: Callable[[Mapping[str, Any], str, str, Mapping[str, Any]], list[Finding]],
    config: Optional[Mapping[str, Mapping[str, Any]]] = None,
    enforcement: EnforcementLevel = DEFAULT_ENFORCEMENT,
    preview_unknown: str = "",
) -> ResourceValidationPolicy:
    """A policy on resources of ``types``: ``rule(props, resource type, resource name, config)``.

    ``props`` is CrossGuard's (proxied) mapping: a rule that reads a value
    unknown at preview raises, and the SDK reports that run as advisory
    (``preview_unknown`` says that it does, and why).
    """

    def validate(args: ResourceValidationArgs, report_violation: Callable) -> None:
        if args.resource_type not in types:
            return
        _report(name, report_violation, rule(args.props, args.resource_type, args.name, _config(args)))

    return _with_preview_unknown(_resource_policy(name, description, validate, config, enforcement), preview_unknown)


def stack_policy(
    name: str,
    description: str,
    rule: Callable[[list, Mapping[str, Any]], list[Finding]],
    config: Optional[Mapping[str, Mapping[str, Any]]] = None,
    enforcement: EnforcementLevel = DEFAULT_ENFORCEMENT,
    preview_unknown: str = "",
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: Callable) -> None:
        _report(name, report_violation, rule(list(args.resources), _config(args)))

    return _with_preview_unknown(StackValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=enforcement,
        config_schema=_schema(config),
    ), preview_unknown)


# --------------------------------------------------------------------------- helpers for stack rules
def gate_view(resource: Any, resource_type: str) -> Optional[Transition]:
    """The transition, when ``resource`` (a resource policy's args, a stack policy's resource) is the phase gate.

    The type is read first: reading props makes their proxy. Each policy gets its own copy. A driver may
    offer the props as a fresh plain copy (``plain_props()``, None when they hold a value unknown at preview):
    the offline preview does, as a fresh proxy per policy and a copy through it were half of ``./preview
    --all``. Under the Pulumi CLI every policy reads its own proxy.
    """
    if resource_type != GATE_TYPE:
        return None
    plain_props = getattr(resource, "plain_props", None)
    data = plain_props() if plain_props is not None else None
    if data is not None:
        return Transition.from_data(data) if is_gate(resource_type, data) else None
    return Transition.from_gate(resource.props) if is_gate(resource_type, resource.props) else None


def gate_of(resources: list) -> Optional[Transition]:
    """The phase gate's transition among a stack policy's resources (None when the gate is absent)."""
    return next((t for t in (gate_view(r, r.resource_type) for r in resources) if t is not None), None)


def metadata_labels(props: Mapping[str, Any]) -> dict:
    return dict(plain(dig(props, "metadata", "labels", default={}) or {}))


def resource_label(props: Mapping[str, Any], fallback: str) -> str:
    return str(dig(props, "metadata", "name", default=fallback))
