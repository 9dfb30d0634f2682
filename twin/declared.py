"""Does the twin hold what the program declared? The stack's state against the emulator and the API server.

After a ``pulumi up`` the stack's state (``pulumi stack export``) says what each resource is; the twin's
Cloudflare emulator and Kubernetes API server say what there really is. Each function lists the
differences, one line each naming the resource and the field (empty: they match), both ways: a declared
resource that is missing or different, and an object the twin holds that nothing declares any more.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

# Pulumi type -> (the emulator's kind, the fields compared: the resource's output name -> the API's field)
CLOUDFLARE_KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor": ("monitor", {
        "type": "type", "path": "path", "expectedCodes": "expected_codes", "interval": "interval",
        "timeout": "timeout", "retries": "retries", "method": "method"}),
    "cloudflare:index/loadBalancerPool:LoadBalancerPool": ("pool", {
        "name": "name", "enabled": "enabled", "monitor": "monitor", "minimumOrigins": "minimum_origins"}),
    "cloudflare:index/loadBalancer:LoadBalancer": ("load_balancer", {
        "name": "name", "steeringPolicy": "steering_policy", "proxied": "proxied", "defaultPools": "default_pools",
        "fallbackPool": "fallback_pool", "sessionAffinity": "session_affinity"}),
    "cloudflare:index/dnsRecord:DnsRecord": ("dns_record", {
        "name": "name", "type": "type", "content": "content", "ttl": "ttl", "proxied": "proxied"}),
    "cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared": ("tunnel", {
        "name": "name", "configSrc": "config_src"}),
    "cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig": ("tunnel_configuration", {}),
}
K8S_TYPE = re.compile(r"^kubernetes:(?P<group>[\w.]+)/(?P<version>\w+):(?P<kind>\w+)$")


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _resources(export: Mapping[str, Any]) -> list[dict]:
    return export.get("deployment", export).get("resources", [])


def cloudflare_differences(export: Mapping[str, Any], state: Mapping[str, Any]) -> list[str]:
    objects = state["objects"]
    problems: list[str] = []
    declared: dict[str, set[str]] = {}
    for resource in _resources(export):
        if resource["type"] not in CLOUDFLARE_KINDS:
            continue
        kind, fields = CLOUDFLARE_KINDS[resource["type"]]
        outputs, name = resource.get("outputs", {}), resource["urn"].rsplit("::", 1)[-1]
        key = outputs.get("tunnelId") if kind == "tunnel_configuration" else resource.get("id")
        declared.setdefault(kind, set()).add(key)
        record = objects.get(kind, {}).get(key)
        if record is None or record["data"].get("deleted_at"):
            problems.append(f"{name}: declared ({kind} {key}) but the emulator has none")
            continue
        data = record["data"]
        for output, field in fields.items():
            if output in outputs and _number(outputs[output]) != _number(data.get(field)):
                problems.append(f"{name}.{output}: declared {outputs[output]!r}, the emulator has {data.get(field)!r}")
        problems += _compared_nested(name, kind, outputs, data)
    for kind, records in objects.items():
        for key, record in records.items():
            if not record["data"].get("deleted_at") and key not in declared.get(kind, set()):
                problems.append(f"the emulator holds {kind} {key}, which nothing declares")
    return problems


def _compared_nested(name: str, kind: str, outputs: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """The nested values the steps change: pool origins, the load balancer's weights, the tunnel's ingress."""
    problems = []
    if kind == "pool":
        declared = [(o.get("address"), _number(o.get("weight"))) for o in outputs.get("origins", [])]
        held = [(o.get("address"), _number(o.get("weight"))) for o in data.get("origins", [])]
        if declared != held:
            problems.append(f"{name}.origins: declared {declared}, the emulator has {held}")
    elif kind == "load_balancer":
        declared = {k: _number(v) for k, v in ((outputs.get("randomSteering") or {}).get("poolWeights") or {}).items()}
        held = {k: _number(v) for k, v in ((data.get("random_steering") or {}).get("pool_weights") or {}).items()}
        if declared != held:
            problems.append(f"{name}.randomSteering.poolWeights: declared {declared}, the emulator has {held}")
    elif kind == "tunnel_configuration":
        declared = [(r.get("hostname"), r.get("service")) for r in (outputs.get("config") or {}).get("ingresses", [])]
        held = [(r.get("hostname"), r.get("service")) for r in (data.get("config") or {}).get("ingress", [])]
        if declared != held:
            problems.append(f"{name}.config.ingresses: declared {declared}, the emulator has {held}")
    return problems


def declared_kubernetes(export: Mapping[str, Any]) -> list[tuple[str, str, str, dict]]:
    """``(kind, namespace, name, outputs)`` of every Kubernetes object the stack declares."""
    out = []
    for resource in _resources(export):
        match = K8S_TYPE.match(resource["type"])
        if match and "outputs" in resource:
            metadata = resource["outputs"].get("metadata", {})
            out.append((match["kind"], metadata.get("namespace", ""), metadata.get("name", ""), resource["outputs"]))
    return out


def kubernetes_differences(export: Mapping[str, Any], live: Mapping[tuple[str, str, str], Mapping[str, Any]],
                           held: Iterable[tuple[str, str, str]]) -> list[str]:
    """``live``: the API server's object for each declared ``(kind, namespace, name)``; ``held``: every object
    of those kinds the namespace has (what nothing declares any more shows up there)."""
    problems, declared = [], set()
    for kind, namespace, name, outputs in declared_kubernetes(export):
        declared.add((kind, namespace, name))
        obj = live.get((kind, namespace, name))
        if obj is None:
            problems.append(f"{kind} {namespace}/{name}: declared but the API server has none")
            continue
        if kind == "Deployment":
            want, spec, status = outputs["spec"], obj["spec"], obj.get("status", {})
            images = [c["image"] for c in spec["template"]["spec"]["containers"]]
            declared_images = [c["image"] for c in want["template"]["spec"]["containers"]]
            if images != declared_images or spec.get("replicas") != _number(want.get("replicas")):
                problems.append(f"Deployment {name}: declared {declared_images} x{want.get('replicas')}, "
                                f"the API server has {images} x{spec.get('replicas')}")
            replicas = spec.get("replicas", 1)
            if (status.get("readyReplicas") or 0) != replicas or (status.get("updatedReplicas") or 0) != replicas:
                problems.append(f"Deployment {name}: {status.get('readyReplicas') or 0} ready, "
                                f"{status.get('updatedReplicas') or 0} updated of {replicas}")
        elif kind == "ConfigMap" and obj.get("data") != outputs.get("data"):
            problems.append(f"ConfigMap {name}: its data differs from what was declared")
        elif kind == "Service" and [p.get("nodePort") for p in obj["spec"]["ports"]] != \
                [_number(p.get("nodePort")) for p in outputs["spec"]["ports"]]:
            problems.append(f"Service {name}: node ports differ from what was declared")
    for key in held:
        if key not in declared:
            problems.append(f"{key[0]} {key[1]}/{key[2]}: the API server holds it, nothing declares it")
    return problems
