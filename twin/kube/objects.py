"""Reading ConfigMaps and Secrets for a pod, the way the kubelet resolves them (shared by env and volumes)."""

from __future__ import annotations

import base64
from typing import Awaitable, Callable, Optional

# (resource, namespace, name) -> the object, or None when it does not exist
Fetch = Callable[[str, str, str], Awaitable[Optional[dict]]]


class PodSetupError(Exception):
    """A pod's containers cannot start yet; ``reason`` is the waiting reason its status shows."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


async def source_data(fetch: Fetch, resource: str, namespace: str, name: str, *, optional: bool,
                      reason: str) -> Optional[dict[str, bytes]]:
    """Every key of a ConfigMap (``configmaps``) or Secret (``secrets``) as bytes; None for a missing optional one."""
    obj = await fetch(resource, namespace, name)
    if obj is None:
        if optional:
            return None
        kind = "configmap" if resource == "configmaps" else "secret"
        raise PodSetupError(reason, f'{kind} "{name}" not found')
    if resource == "secrets":
        return {key: base64.b64decode(value) for key, value in (obj.get("data") or {}).items()}
    data = {key: value.encode() for key, value in (obj.get("data") or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (obj.get("binaryData") or {}).items()})
    return data
