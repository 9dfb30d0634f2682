"""Which pods a Service sends traffic to: the EndpointSlice controller's rule, computed from the pods.

Computed here rather than read from EndpointSlices because the API server refuses endpoint addresses
in 127.0.0.0/8 (``ValidateEndpointIP``): with a loopback pod network the controllers' EndpointSlices
(and Endpoints) can never hold our pods. The rule is the controller's: a pod of the Service's
namespace whose labels match its selector, with a pod IP, not terminal; *ready* when its Ready
condition is True and it is not terminating (``publishNotReadyAddresses`` counts every such pod).
Only ready endpoints get new connections (no fallback to terminating ones).
"""

from __future__ import annotations

from typing import Iterable, Optional


def is_ready(pod: dict) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def target_port(pod: dict, service_port: dict) -> Optional[int]:
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == service_port.get("protocol", "TCP"):
                return port["containerPort"]
    return None


def ready_endpoints(service: dict, service_port: dict, pods: Iterable[dict]) -> list[tuple[str, int]]:
    """(pod IP, port) of every ready endpoint of ``service_port``, in a stable order."""
    selector = service["spec"].get("selector") or {}
    if not selector:
        return []  # a Service without selector has hand-made endpoints: not supported
    namespace = service["metadata"]["namespace"]
    publish_all = bool(service["spec"].get("publishNotReadyAddresses"))
    found = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("namespace") != namespace or not status.get("podIP"):
            continue
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        labels = meta.get("labels") or {}
        if any(labels.get(key) != value for key, value in selector.items()):
            continue
        if not publish_all and (meta.get("deletionTimestamp") or not is_ready(pod)):
            continue
        port = target_port(pod, service_port)
        if port is not None:
            found.append((status["podIP"], port))
    return sorted(found)
