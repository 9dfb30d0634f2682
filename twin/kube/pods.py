"""One pod bound to this node, from its first sight to its removal: the kubelet's pod worker, in small.

A :class:`PodWorker` gives the pod an IP, writes its volumes, starts its containers (env and argv
resolved at each start), restarts them per ``restartPolicy`` (with a short back-off), kills those
whose liveness or startup probe fails, and reports the pod's status whenever it changes: phase
(Pending / Running / Succeeded / Failed, the kubelet's rules), conditions (PodScheduled,
PodReadyToStartContainers, Initialized, ContainersReady, Ready, honouring ``readinessGates``),
podIP(s), hostIP(s), startTime and containerStatuses.

When the pod gets a deletionTimestamp, every container is stopped within the pod's
``deletionGracePeriodSeconds`` (preStop hook, SIGTERM, SIGKILL at the deadline), the final status is
reported (phase Succeeded if every container exited 0, else Failed) and the pod is deleted with grace
0, as the kubelet does. Init containers, ephemeral containers and sidecars are not supported (the pod
waits with a reason).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from twin.kube import envvars, images, probes, volumes
from twin.kube.api import API_ERRORS, Api, ApiError
from twin.kube.container import ContainerRunner, now_rfc3339
from twin.kube.network import PodNetwork
from twin.kube.objects import PodSetupError

log = logging.getLogger("twin.kube.pods")

TERMINAL = ("Succeeded", "Failed")
SETUP_RETRY_SECONDS = 2.0
IDLE_SECONDS = 30.0


@dataclass
class NodeContext:
    """What every pod worker of one node agent shares."""

    api: Api
    node_name: str
    node_ip: str
    network: PodNetwork
    pods_dir: Path
    python: str  # "python" in an image's program or a command
    project_root: Path  # the containers' working directory (the "image's filesystem")
    taken_ips: Callable[[], set[str]]  # pod IPs the API shows on this node's pods
    fault_dir: Optional[str] = None  # where injected faults are read from (images.fault_file)
    mount_points: volumes.MountPoints = field(default_factory=volumes.MountPoints)

    async def fetch(self, resource: str, namespace: str, name: str) -> Optional[dict]:
        return await self.api.get_or_none(f"/api/v1/namespaces/{namespace}/{resource}/{name}")

    def base_env(self, hostname: str) -> dict[str, str]:
        """What every container's environment starts from (a real image brings its own PATH etc.)."""
        python_bin = str(Path(self.python).parent)
        return {"PATH": f"{python_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8", "HOSTNAME": hostname, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(self.project_root)}


def pod_phase(statuses: list[dict], restart_policy: str, *, deleted: bool) -> str:
    """The kubelet's getPhase over container statuses; ``deleted``: every container is done for good."""
    pending = running = stopped = succeeded = 0
    for status in statuses:
        state, last = status["state"], status.get("lastState") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state or "terminated" in last:
            stopped += 1
            succeeded += (state.get("terminated") or last["terminated"])["exitCode"] == 0
        else:
            pending += 1
    if deleted:
        return "Succeeded" if stopped == succeeded and pending == 0 else "Failed"
    if pending:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"  # between restarts
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if restart_policy == "Never" else "Running"


class PodWorker:
    def __init__(self, node: NodeContext, pod: dict):
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid = meta["uid"]
        self.path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self.directory = node.pods_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.gone = False  # removed from the API
        self.ip: Optional[str] = None  # stays in the status after the pod finished
        self.holds_ip = False  # the address is still ours (a finished pod gives it back)
        self.start_time: Optional[str] = None
        self.runners: dict[str, ContainerRunner] = {}
        self.sources: Optional[dict[str, Path]] = None  # volume name -> directory, once written
        self.setup_error: Optional[PodSetupError] = None
        self.acquired: list[volumes.Mount] = []
        self.transitions: dict[str, tuple[str, str]] = {}  # condition type -> (status, lastTransitionTime)
        self.reported: Optional[dict] = None
        self.finished = (pod.get("status") or {}).get("phase") in TERMINAL  # e.g. a Job's pod before a restart
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"pod {meta['namespace']}/{meta['name']}")

    # ------------------------------------------------------------------ input
    def update(self, pod: Optional[dict]) -> None:
        if pod is None:
            self.gone = True
        else:
            self.pod = pod
        self.wake.set()

    @property
    def deleting(self) -> bool:
        return self.gone or bool(self.pod["metadata"].get("deletionTimestamp"))

    @property
    def restart_policy(self) -> str:
        return self.pod["spec"].get("restartPolicy", "Always")

    def _changed(self) -> None:
        self.wake.set()

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        try:
            while not self.deleting:
                self.wake.clear()
                try:
                    retry = await self._step() if not self.finished else IDLE_SECONDS
                except API_ERRORS as exc:
                    log.warning("pod %s: %s; trying again", self.path, exc)
                    retry = SETUP_RETRY_SECONDS
                if not await self._report():
                    retry = min(retry, 1.0)
                try:
                    await asyncio.wait_for(self.wake.wait(), retry)
                except asyncio.TimeoutError:
                    pass
            await self._terminate()
        except Exception:
            log.exception("pod %s: worker failed; stopping its containers", self.path)
            await self.shutdown(grace_seconds=2)

    async def _step(self) -> float:
        """Bring the containers toward the spec once; seconds until the next look (a back-off, a retry)."""
        unsupported = [kind for kind in ("initContainers", "ephemeralContainers") if self.pod["spec"].get(kind)]
        if unsupported:
            self.setup_error = PodSetupError("Unsupported", f"{', '.join(unsupported)}: not supported by the "
                                                            "twin's node agent")
            return IDLE_SECONDS
        if self.start_time is None:
            self.start_time = now_rfc3339()
        if self.ip is None and self.pod["spec"].get("hostNetwork"):
            self.ip = self.node.node_ip
        elif self.ip is None:
            try:
                self.ip = await self.node.network.acquire(self.node.taken_ips())
            except (RuntimeError, OSError) as exc:  # the network is full, or `ip addr add` failed
                self.setup_error = PodSetupError("ContainerCreating", f"no pod IP: {exc}")
                return SETUP_RETRY_SECONDS
            self.holds_ip = True
        if self.sources is None:
            try:
                self.sources = await volumes.materialize(self.node.fetch, self.pod, self.directory / "volumes")
                self.setup_error = None
            except PodSetupError as exc:
                self.setup_error = exc
                return SETUP_RETRY_SECONDS
        retry = IDLE_SECONDS
        for spec in self.pod["spec"]["containers"]:
            runner = self.runners.get(spec["name"])
            if runner is None:
                runner = self.runners[spec["name"]] = ContainerRunner(spec, self.directory / spec["name"],
                                                                      self._changed)
            retry = min(retry, await self._tend(runner))
        if all(not r.running and r.exit_code is not None and not self._restarts(r) for r in self.runners.values()):
            self.finished = True
            await self._release()
        return retry

    def _restarts(self, runner: ContainerRunner) -> bool:
        return self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and runner.exit_code != 0)

    async def _tend(self, runner: ContainerRunner) -> float:
        if runner.running:
            if runner.unhealthy:
                log.info("pod %s: container %s failed its probe; killing it", self.path, runner.name)
                runner.stop(self._grace())
            return IDLE_SECONDS
        if runner.ever_started:
            if not self._restarts(runner):
                return IDLE_SECONDS
            if "terminated" in runner.state:
                runner.back_off()
            delay = runner.restart_at - time.monotonic()
            if delay > 0:
                return delay
        try:
            await self._start(runner)
        except (PodSetupError, images.ImageNotInTable) as exc:
            reason = exc.reason if isinstance(exc, PodSetupError) else "ErrImagePull"
            runner.wait(reason, str(exc))
            return SETUP_RETRY_SECONDS
        return IDLE_SECONDS

    async def _start(self, runner: ContainerRunner) -> None:
        spec = runner.spec
        ports = spec.get("ports") or []
        program = images.program_for(spec.get("image", ""), images.Launch(
            self.pod["metadata"]["name"], self.ip, ports[0]["containerPort"] if ports else None,
            self.node.fault_dir))
        spec_env = await envvars.container_env(self.node.fetch, self.pod, spec, pod_ip=self.ip,
                                               host_ip=self.node.node_ip)
        env = {**self.node.base_env(self.pod["metadata"]["name"]), "HOST": self.ip,
               **({"PORT": str(ports[0]["containerPort"])} if ports else {}),
               **images.container_env(program, spec_env)}
        argv = [envvars.expand(arg, env) for arg in images.container_argv(spec, program, self.node.python)]
        mounts = volumes.container_mounts(self.pod, spec, self.sources)
        for mount in mounts:
            if mount not in self.acquired:
                self.node.mount_points.acquire(mount)
                self.acquired.append(mount)
        cwd = spec.get("workingDir") if spec.get("workingDir") and os.path.isdir(spec["workingDir"]) \
            else str(self.node.project_root)
        target = probes.Target(pod_ip=self.ip, ports={p["name"]: p["containerPort"] for p in ports if p.get("name")},
                               env=env, cwd=cwd)
        await runner.start(volumes.in_mount_namespace(argv, mounts), env, cwd, target)

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        if meta.get("deletionGracePeriodSeconds") is not None and not self.gone:
            return float(meta["deletionGracePeriodSeconds"])
        return float(spec.get("terminationGracePeriodSeconds", 30))

    # ------------------------------------------------------------------ status
    def _condition(self, kind: str, true: bool, reason: str = "") -> dict:
        status = "True" if true else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = (status, now_rfc3339())
        condition = {"type": kind, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": self.transitions[kind][1]}
        return {**condition, "reason": reason} if reason else condition

    def _status(self, *, deleted: bool = False) -> dict:
        statuses = []
        for spec in self.pod["spec"]["containers"]:
            runner = self.runners.get(spec["name"])
            if runner is None:
                waiting = {"reason": self.setup_error.reason, "message": str(self.setup_error)} \
                    if self.setup_error else {"reason": "ContainerCreating"}
                statuses.append({"name": spec["name"], "image": spec.get("image", ""), "imageID": "", "ready": False,
                                 "started": False, "restartCount": 0, "state": {"waiting": waiting}, "lastState": {}})
            else:
                statuses.append(runner.status())
        phase = pod_phase(statuses, self.restart_policy, deleted=deleted)
        terminal = phase in TERMINAL
        containers_ready = not terminal and all(s["ready"] for s in statuses)
        current = {c["type"]: c.get("status") for c in (self.pod.get("status") or {}).get("conditions") or []}
        gates_ok = all(current.get(g["conditionType"]) == "True" for g in self.pod["spec"].get("readinessGates") or [])
        not_ready = "PodCompleted" if terminal else ("ContainersNotReady" if not containers_ready else "")
        status = {
            "phase": phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", self.ip is not None and not terminal),
                self._condition("Initialized", True),
                self._condition("ContainersReady", containers_ready, not_ready),
                self._condition("Ready", containers_ready and gates_ok,
                                not_ready or ("" if gates_ok else "ReadinessGatesNotReady")),
            ],  # PodScheduled is the scheduler's, left as it set it (conditions merge by type)
            "hostIP": self.node.node_ip, "hostIPs": [{"ip": self.node.node_ip}],
            "containerStatuses": statuses,
        }
        if self.start_time:
            status["startTime"] = self.start_time
        if self.ip:
            status.update(podIP=self.ip, podIPs=[{"ip": self.ip}])
        return status

    async def _report(self, *, deleted: bool = False) -> bool:
        """Send the status if it changed; False when the API did not take it (retried soon)."""
        if self.gone or (self.finished and self.reported is None and self._already_terminal()):
            return True
        status = self._status(deleted=deleted)
        if status == self.reported:
            return True
        try:
            await self.node.api.patch(f"{self.path}/status", {"metadata": {"uid": self.uid}, "status": status})
        except API_ERRORS as exc:
            if isinstance(exc, ApiError) and exc.status == 404:
                self.gone = True
                return True
            log.warning("pod %s: status not reported: %s", self.path, exc)
            return False
        self.reported = status
        return True

    def _already_terminal(self) -> bool:
        """A pod already terminal in the API before this worker ran anything: its status is left as it is."""
        return not self.runners and (self.pod.get("status") or {}).get("phase") in TERMINAL

    # ------------------------------------------------------------------ the end
    async def _terminate(self) -> None:
        grace = self._grace()
        await asyncio.gather(*(runner.stop(grace) for runner in self.runners.values()))
        await self._release()
        while not self.gone:  # until the API has the final status and the pod is gone, as the kubelet insists
            try:
                if await self._report(deleted=True):
                    await self.node.api.delete(self.path, {"gracePeriodSeconds": 0,
                                                           "preconditions": {"uid": self.uid}})
                    return
            except API_ERRORS as exc:
                if isinstance(exc, ApiError) and exc.status in (404, 409):  # gone, or another pod by that name
                    return
                log.warning("pod %s: not deleted yet: %s", self.path, exc)
            await asyncio.sleep(1.0)

    async def _release(self) -> None:
        """Give back what the pod held on this machine (its processes must be gone or going)."""
        for runner in self.runners.values():
            if runner.running:
                runner.kill_now()
        for mount in self.acquired:
            self.node.mount_points.release(mount)
        self.acquired.clear()
        if self.sources is not None:
            volumes.remove(self.directory / "volumes")
        if self.holds_ip:
            self.holds_ip = False
            await self.node.network.release(self.ip)

    async def shutdown(self, grace_seconds: float) -> None:
        """The agent is exiting: stop the containers (no preStop, a short grace) and free everything; no API calls."""
        if self.task is not asyncio.current_task():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.gather(*(runner.stop(grace_seconds, pre_stop=False) for runner in self.runners.values()))
        await self._release()
