"""A container's environment from its spec, as the kubelet builds it.

``envFrom`` (configMapRef/secretRef with ``prefix``) first, then ``env`` in order: ``value`` (with
``$(VAR)`` references to variables defined before it expanded, ``$$`` escaping), ``valueFrom``
``secretKeyRef``/``configMapKeyRef`` (read from the API when the container starts; ``optional``
honoured) and ``fieldRef`` (``metadata.name|namespace|uid``, ``metadata.labels['k']``,
``metadata.annotations['k']``, ``spec.nodeName``, ``spec.serviceAccountName``, ``status.hostIP``,
``status.podIP``, ``status.podIPs``). ``resourceFieldRef`` is not supported (the container waits with
``CreateContainerConfigError``, as for a missing key).
"""

from __future__ import annotations

import re
from typing import Optional

from twin.kube.objects import Fetch, PodSetupError, source_data

CONFIG_ERROR = "CreateContainerConfigError"
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined references replaced, undefined ones kept, ``$$`` -> ``$``."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def field_value(pod: dict, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return simple[path]
    match = _SUBSCRIPT.match(path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise PodSetupError(CONFIG_ERROR, f"fieldRef {path!r} is not supported by the twin's node agent")


async def _key(fetch: Fetch, resource: str, namespace: str, ref: dict) -> Optional[str]:
    optional = bool(ref.get("optional"))
    data = await source_data(fetch, resource, namespace, ref["name"], optional=optional, reason=CONFIG_ERROR)
    if data is None or ref["key"] not in data:
        if optional:
            return None
        kind = "configmap" if resource == "configmaps" else "secret"
        raise PodSetupError(CONFIG_ERROR, f'couldn\'t find key {ref["key"]} in {kind} {namespace}/{ref["name"]}')
    return data[ref["key"]].decode(errors="replace")


async def container_env(fetch: Fetch, pod: dict, container: dict, *, pod_ip: str, host_ip: str) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for field_name, resource in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
            ref = source.get(field_name)
            if ref:
                data = await source_data(fetch, resource, namespace, ref["name"], optional=bool(ref.get("optional")),
                                         reason=CONFIG_ERROR)
                env.update({prefix + key: value.decode(errors="replace") for key, value in (data or {}).items()})
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(var.get("value", ""), env)
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            resource, ref = (("secrets", source["secretKeyRef"]) if "secretKeyRef" in source
                             else ("configmaps", source["configMapKeyRef"]))
            value = await _key(fetch, resource, namespace, ref)
            if value is not None:
                env[name] = value
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        else:
            raise PodSetupError(CONFIG_ERROR, f"env {name}: {', '.join(source)} is not supported by the twin's node agent")
    return env
