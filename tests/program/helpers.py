"""Helpers for the program tests: step combinations, resources by name, manifests from captured inputs."""

from __future__ import annotations

from typing import Any, Iterable

from offline_preview.harness import Evaluation, RegisteredResource

K8S_TYPES = {
    "kubernetes:apps/v1:Deployment",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:batch/v1:Job",
    "kubernetes:core/v1:ConfigMap",
    "kubernetes:core/v1:Service",
    "kubernetes:core/v1:Secret",
}
LB = "cloudflare:index/loadBalancer:LoadBalancer"
POOL = "cloudflare:index/loadBalancerPool:LoadBalancerPool"
MONITOR = "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor"
DNS = "cloudflare:index/dnsRecord:DnsRecord"
TUNNEL = "cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared"
TUNNEL_CONFIG = "cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig"
REMOTE = "command:remote:Command"
LOCAL = "command:local:Command"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
JOB = "kubernetes:batch/v1:Job"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
SERVICE = "kubernetes:core/v1:Service"
DYNAMIC = "pulumi-python:dynamic:Resource"


def name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def names(ev: Evaluation, type_: str | None = None) -> set[str]:
    return {r.name for r in ev.resources if type_ is None or r.type == type_}


def dep_names(resource: RegisteredResource) -> set[str]:
    return {name_of(u) for u in resource.dependencies}


def parent_name(resource: RegisteredResource) -> str:
    return name_of(resource.parent) if resource.parent else ""


def intify(value: Any) -> Any:
    """Numbers come back from the mock round trip as floats; integral ones are ints in a manifest."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: intify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [intify(v) for v in value]
    return value


def manifest(resource: RegisteredResource) -> dict:
    """The Kubernetes object the captured inputs describe (what Pulumi would send)."""
    return intify({k: v for k, v in resource.inputs.items() if not k.startswith("__")})


def pool_weights_by_name(ev: Evaluation, lb_name: str = "traffic-lb") -> dict[str, float]:
    """``{pool name: weight}`` from the LB's ``randomSteering.poolWeights`` (keyed by pool id)."""
    ids = {}
    for pool in ev.by_type(POOL):
        ids[_fake_id(pool)] = pool.name.split("-", 1)[1]
    weights = ev.named(lb_name).inputs["randomSteering"]["poolWeights"]
    return {ids[pool_id]: weight for pool_id, weight in weights.items()}


def _fake_id(resource: RegisteredResource) -> str:
    import hashlib

    return hashlib.sha1(f"{resource.type}::{resource.name}".encode()).hexdigest()[:12]


def resource_id(resource: RegisteredResource) -> str:
    """The id the harness mocks give a resource."""
    return _fake_id(resource)


def walk_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)


def mentions(resource: RegisteredResource, text: str) -> bool:
    return text in resource.name or any(text in s for s in walk_strings(resource.inputs))
