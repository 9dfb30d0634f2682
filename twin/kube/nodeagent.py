"""The node agent: a stand-in for the kubelet (and kube-proxy) that runs pods as local processes.

    python -m twin.kube.nodeagent --node NAME --node-ip IP --kubeconfig PATH \\
        --pod-network 127.0.2.0/24 --state-dir DIR [--nodeport-address IP ...] [--heartbeat-seconds 10]

It registers the Node and keeps its Lease fresh (:mod:`twin.kube.node`), watches the pods and
Services, runs every pod bound to its node (:mod:`twin.kube.pods`: programs from the image table in
:mod:`twin.kube.images`, env, volumes, probes, restarts, preStop and grace periods, status) and
forwards the NodePorts (:mod:`twin.kube.proxy`). SIGTERM or SIGINT stops every pod process (SIGTERM,
SIGKILL after a few seconds) and removes the addresses it added before it exits; the processes also
die with the agent if it is killed.

State dir: ``pods/<namespace>_<name>_<uid>/<container>/<restartCount>.log`` holds each container's
output (``kubectl logs`` does not work: there is no kubelet API to serve it) and ``.../volumes/`` the
pod's volumes while it runs.

The agent needs root (mount namespaces, ``ip addr`` when a pod IP is not local); every container runs
as the agent's user, in the agent's network namespace, with no resource limits (``securityContext``,
``resources``, ``imagePullPolicy``, ``dnsPolicy`` are read by nobody). It authenticates with the
kubeconfig's client certificate (the control plane's admin kubeconfig does).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from twin.kube import procs
from twin.kube.api import API_ERRORS, Api, Reflector
from twin.kube.endpoints import ready_endpoints
from twin.kube.network import PodNetwork
from twin.kube.node import NodeRegistration, NodeSpec, machine_memory
from twin.kube.pods import NodeContext, PodWorker
from twin.kube.proxy import NodePortProxy

log = logging.getLogger("twin.kube.nodeagent")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_GRACE_SECONDS = 5.0
REGISTER_SECONDS = 60.0


class NodeAgent:
    def __init__(self, *, node: NodeSpec, kubeconfig: Path, pod_network: str, state_dir: Path,
                 nodeport_addresses: Sequence[str], python: str, project_root: Path,
                 fault_dir: Optional[Path] = None):
        self.spec = node
        self.api = Api(kubeconfig)
        self.state_dir = state_dir
        self.workers: dict[str, PodWorker] = {}
        self.context = NodeContext(api=self.api, node_name=node.name, node_ip=node.ip,
                                   network=PodNetwork(pod_network, node.ip), pods_dir=state_dir / "pods",
                                   python=python, project_root=project_root, taken_ips=self._taken_ips,
                                   fault_dir=str(fault_dir) if fault_dir else None)
        self.pods = Reflector(self.api, "/api/v1/pods", self._pod_changed)
        self.services = Reflector(self.api, "/api/v1/services", self._service_changed)
        self.proxy = NodePortProxy(list(nodeport_addresses), lambda: self.services.items,
                                   lambda service, port: ready_endpoints(service, port, self.pods.items.values()))
        self._proxy_dirty = asyncio.Event()

    def _mine(self, pod: dict) -> bool:
        return pod["spec"].get("nodeName") == self.spec.name

    def _taken_ips(self) -> set[str]:
        return {p["status"]["podIP"] for p in self.pods.items.values()
                if self._mine(p) and (p.get("status") or {}).get("podIP")}

    def _pod_changed(self, event: str, pod: dict) -> None:
        if not self._mine(pod):
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if event == "DELETED":
            if worker is not None:
                worker.update(None)
            return
        if worker is None:
            worker = self.workers[uid] = PodWorker(self.context, pod)
            worker.task.add_done_callback(lambda _t, uid=uid: self.workers.pop(uid, None))
        worker.update(pod)

    def _service_changed(self, event: str, service: dict) -> None:
        self._proxy_dirty.set()

    async def _keep_proxy_in_sync(self) -> None:
        while True:
            await self._proxy_dirty.wait()
            self._proxy_dirty.clear()
            await self.proxy.sync()

    @staticmethod
    async def _register(registration: NodeRegistration) -> None:
        """Register the Node, trying again while the API is not there yet (bounded)."""
        deadline = asyncio.get_running_loop().time() + REGISTER_SECONDS
        while True:
            try:
                return await registration.register()
            except API_ERRORS as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.warning("registering the node: %s; trying again", exc)
                await asyncio.sleep(1.0)

    async def run(self, stop: asyncio.Event) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        registration = NodeRegistration(self.api, self.spec)
        await self._register(registration)
        tasks = [asyncio.create_task(coro) for coro in (
            registration.heartbeat(), self.pods.run(), self.services.run(), self._keep_proxy_in_sync())]
        log.info("node %s registered (%s); running its pods", self.spec.name, self.spec.ip)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(w.shutdown(SHUTDOWN_GRACE_SECONDS) for w in list(self.workers.values())),
                                 return_exceptions=True)
            await self.proxy.close()
            await self.api.close()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m twin.kube.nodeagent", description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="the Node's name")
    parser.add_argument("--node-ip", required=True, help="its InternalIP (and the default NodePort address)")
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--pod-network", required=True, help="CIDR the pod IPs come from")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--nodeport-address", action="append", dest="nodeport_addresses",
                        help="address to listen on for NodePorts (repeatable; default: the node IP; "
                             "0.0.0.0 for every address of the network namespace)")
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument("--cpu", default=str(os.cpu_count() or 1))
    parser.add_argument("--memory", default=None, help="memory capacity, e.g. 8Gi (default: the machine's)")
    parser.add_argument("--max-pods", type=int, default=110)
    parser.add_argument("--python", default=sys.executable, help="what `python` runs in containers")
    parser.add_argument("--project-root", type=Path, default=PROJECT_ROOT, help="the containers' working directory")
    parser.add_argument("--fault-dir", type=Path, help="where the rehearsal writes injected faults (images.fault_file)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request: too much
    node = NodeSpec(name=args.node, ip=args.node_ip, cpu=args.cpu, memory=args.memory or machine_memory(),
                    max_pods=args.max_pods, heartbeat_seconds=args.heartbeat_seconds)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agent = NodeAgent(node=node, kubeconfig=args.kubeconfig, pod_network=args.pod_network,
                          state_dir=args.state_dir, nodeport_addresses=args.nodeport_addresses or [args.node_ip],
                          python=args.python, project_root=args.project_root, fault_dir=args.fault_dir)
        await agent.run(stop)

    asyncio.run(run())
    return 0


def spawn(*, node: str, node_ip: str, kubeconfig: Path, pod_network: str, state_dir: Path,
          extra_args: Sequence[str] = (), python: str = sys.executable,
          log_path: Optional[Path] = None) -> procs.Component:
    """Start an agent as a child process (log in ``state_dir/agent.log`` unless given); stop it with procs.stop."""
    argv = [python, "-m", "twin.kube.nodeagent", "--node", node, "--node-ip", node_ip,
            "--kubeconfig", str(kubeconfig), "--pod-network", pod_network, "--state-dir", str(state_dir),
            *extra_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    return procs.start(f"node-agent-{node}", argv, log_path or state_dir / "agent.log", env=env, cwd=PROJECT_ROOT)


def wait_node_ready(kubectl: Sequence[str], node: str, agent: procs.Component, timeout: float = 30) -> float:
    """Wait until ``node`` is Ready and carries no taint (schedulable); seconds waited.

    ``kubectl``: the argv prefix reaching the cluster (e.g. ``[kubectl, --kubeconfig=...]``).
    """
    query = ('{range .status.conditions[?(@.type=="Ready")]}{.status}{end}/{.spec.taints}')

    def ready() -> bool:
        done = subprocess.run([*kubectl, "get", "node", node, "-o", f"jsonpath={query}"], capture_output=True,
                              text=True, timeout=20)
        return done.returncode == 0 and done.stdout.strip() == "True/"

    def alive() -> None:
        if not agent.alive():
            raise RuntimeError(f"node agent exited with {agent.popen.returncode}:\n{agent.log_tail()}")

    return procs.wait_until(ready, timeout, f"node {node}", interval=0.3, check=alive)


if __name__ == "__main__":
    sys.exit(main())
