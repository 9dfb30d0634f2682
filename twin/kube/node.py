"""The Node object of this agent: registration, status and the heartbeat Lease, as the kubelet keeps them.

The Node is created (or taken over) with the usual labels, then its status says Ready with
capacity/allocatable (cpu, memory, pods), addresses (InternalIP = the node IP, Hostname) and
nodeInfo (the API server's version as kubeletVersion). The Lease ``kube-node-lease/<node>`` is
renewed every ``heartbeat_seconds`` (the kubelet: 10 s of a 40 s lease): that is what the
node-lifecycle controller watches; the status itself is re-sent every :data:`STATUS_SECONDS`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import platform
from dataclasses import dataclass

from twin.kube.api import API_ERRORS, MERGE, Api, ApiError

log = logging.getLogger("twin.kube.node")

STATUS_SECONDS = 60.0
LEASE_NAMESPACE = "kube-node-lease"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str
    cpu: str
    memory: str
    max_pods: int = 110
    heartbeat_seconds: float = 10.0

    def capacity(self) -> dict[str, str]:
        return {"cpu": self.cpu, "memory": self.memory, "pods": str(self.max_pods)}


def machine_memory() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{line.split()[1]}Ki"
    return "1Gi"


def _micro_time() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _condition(kind: str, status: str, reason: str, message: str, now: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now}


class NodeRegistration:
    def __init__(self, api: Api, spec: NodeSpec):
        self.api, self.spec = api, spec
        self.path = f"/api/v1/nodes/{spec.name}"
        self.uid = ""
        self.kubelet_version = "v0.0.0"
        self._ready_since = ""

    async def register(self) -> None:
        version = await self.api.get("/version")
        self.kubelet_version = version.get("gitVersion", self.kubelet_version)
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        labels = {"kubernetes.io/hostname": self.spec.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch}
        try:
            node = await self.api.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                                           "metadata": {"name": self.spec.name, "labels": labels}})
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = await self.api.patch(self.path, {"metadata": {"labels": labels}})
        self.uid = node["metadata"]["uid"]
        await self.report_status()
        await self.renew_lease()

    async def report_status(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._ready_since = self._ready_since or now
        ready = _condition("Ready", "True", "KubeletReady", "the twin's node agent is posting ready status", now)
        ready["lastTransitionTime"] = self._ready_since
        pressure = [_condition(kind, "False", f"KubeletHas{label}", f"no {label.lower()} here", now)
                    for kind, label in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                        ("PIDPressure", "SufficientPID"))]
        capacity = self.spec.capacity()
        uname = os.uname()
        await self.api.patch(f"{self.path}/status", {"status": {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [*pressure, ready],
            "addresses": [{"type": "InternalIP", "address": self.spec.ip}, {"type": "Hostname", "address": self.spec.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": uname.release,
                         "osImage": "bazbii twin", "containerRuntimeVersion": "process://twin",
                         "kubeletVersion": self.kubelet_version, "kubeProxyVersion": self.kubelet_version,
                         "operatingSystem": "linux", "architecture": platform.machine()},
        }})

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.spec.name}"
        spec = {"holderIdentity": self.spec.name, "renewTime": _micro_time(),
                "leaseDurationSeconds": int(self.spec.heartbeat_seconds * 4)}
        try:
            await self.api.patch(path, {"spec": spec}, content_type=MERGE)
        except ApiError as exc:
            if exc.status != 404:
                raise
            await self.api.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.spec.name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.spec.name, "uid": self.uid}]},
                "spec": spec})

    async def heartbeat(self) -> None:
        """Renew the lease every heartbeat, the status every STATUS_SECONDS, until cancelled."""
        loop = asyncio.get_running_loop()
        status_due = loop.time() + STATUS_SECONDS
        while True:
            await asyncio.sleep(self.spec.heartbeat_seconds)
            try:
                await self.renew_lease()
                if loop.time() >= status_due:
                    await self.report_status()
                    status_due = loop.time() + STATUS_SECONDS
            except API_ERRORS as exc:
                log.warning("heartbeat: %s", exc)
