"""The twin as one object: the lab's network, the servers and the services production talks to.

    with Twin.start_new(workdir) as twin:
        twin.servers["server1"].ssh("uptime")
        twin.pulumi_prefix()        # run `pulumi` from where the operator stands (the edge)

What runs where, as in production:

==============  =================================================================================
servers         each plan server is a namespace of its own with its sshd (:mod:`twin.server`); the
                program's remote commands run there for real
edge            what is outside the servers: the operator's ``pulumi``, the Cloudflare API emulator,
                the Kubernetes API server (:mod:`twin.lab`)
==============  =================================================================================

Every server of the plan exists from the start, as a machine bought in the console before the step
that declares it; its console spec (:class:`twin.server.Spec`) is what the plan declares for it.
"""

from __future__ import annotations

import json
import secrets
import select
import urllib.request
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .lab import DEFAULT_SERVERS, EDGE, EDGE_ADDRESS, Lab, LabError
from .server import REPO_ROOT, Spec, TwinServer, keygen
from .kube.images import fault_file
from .wheelhouse import ensure_wheelhouse

# The Kubernetes nodes (the API servers of the plan) and their pods' addresses inside the node.
KUBE_NODES = {"server1": "127.0.2.0/24"}
# The cluster's own setup, which production has before the program runs: the app's namespace.
KUBE_NAMESPACES = ("bazbii",)
KUBE_START_TIMEOUT = 120.0
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"  # the Kubernetes provider labels what it creates
IDLE_SCHEDULING = ("chrt", "--idle", "0")  # util-linux: SCHED_IDLE for the command and what it starts

# The plan's machines as its stack file declares them at their first step (Pulumi.prod.yaml).
DEFAULT_SPECS = {
    "server1": Spec(vcpu=2, memory_gb=4, disk_gb=100),
    "server2": Spec(vcpu=2, memory_gb=4, disk_gb=100),
    "server3": Spec(vcpu=4, memory_gb=8, disk_gb=500),
}


@dataclass
class Kubernetes:
    """The twin's cluster: the control plane's process (in the edge) and a node agent per node (in its server)."""

    bin_dir: Path
    server: str
    kubeconfig: Path
    control_plane: subprocess.Popen
    fault_dir: Path  # every node agent's --fault-dir
    agents: dict[str, subprocess.Popen] = field(default_factory=dict)

    def kubectl_argv(self, *args: str) -> list[str]:
        return [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]

    def fail_requests(self, image: str, tag: str, share: float) -> None:
        """Every pod of ``image`` at ``tag`` answers 500 to ``share`` of its requests from now on (0: none),
        the pods already running too (twin.kube.images.fault_file)."""
        path = Path(fault_file(str(self.fault_dir), image, tag))
        staged = path.with_name(path.name + ".new")
        staged.write_text(f"{share:g}\n")
        staged.replace(path)  # a pod never reads half a file


@dataclass
class Cloudflare:
    """The Cloudflare API emulator's process (in the edge) and how to reach it."""

    process: subprocess.Popen
    api_url: str  # what cloudflare:baseUrl is set to
    token: str  # what cloudflare:apiToken is set to (a secret)
    accounts: list[str]
    zones: dict[str, str]

    @property
    def base(self) -> str:
        return self.api_url.rsplit("/client/v4", 1)[0]


@dataclass
class Twin:
    workdir: Path
    lab: Lab
    servers: dict[str, TwinServer] = field(default_factory=dict)
    owns_workdir: bool = False
    kube: Optional[Kubernetes] = None
    cloudflare: Optional[Cloudflare] = None
    # What production runs on other machines (the operator's `pulumi` with the program, the policy pack and the
    # providers it starts, the managed Kubernetes control plane, Cloudflare's API) shares the servers' cores on
    # the twin. A rehearsal judged on the serving path's latency runs them under SCHED_IDLE: they get only the
    # CPU the servers leave, and a server's process that wakes takes the core at once, as if they were on
    # machines of their own. (Niceness 10 was not enough: their bursts still delayed the servers' wake-ups.)
    elsewhere_idle: bool = False
    # Where the twin's files (every server's data, etcd, Prometheus) and its operator's workspace are made
    # (None: the system's temporary directory).
    scratch: Optional[Path] = None

    @property
    def operator_key(self) -> Path:
        return self.workdir / "operator" / "id_ed25519"

    def operator_private_key(self) -> str:
        return self.operator_key.read_text()

    @property
    def edge_address(self) -> str:
        return EDGE_ADDRESS

    @classmethod
    def start_new(cls, workdir: Optional[Path] = None, specs: Optional[Mapping[str, Spec]] = None,
                  addresses: Optional[Mapping[str, str]] = None, kube_bin: Optional[Path] = None,
                  cloudflare: Optional[Mapping[str, Mapping[str, str]]] = None,
                  elsewhere_idle: bool = False, scratch: Optional[Path] = None) -> "Twin":
        """Start the lab and the servers; with ``kube_bin`` (the engine build's bin directory) the cluster, with
        ``cloudflare`` (``{"accounts": [...], "zones": {id: name}}``) the Cloudflare API emulator too.
        ``elsewhere_idle``, ``scratch``: see the attributes."""
        owns = workdir is None
        workdir = Path(workdir or tempfile.mkdtemp(prefix="bazbii-twin-", dir=scratch))
        specs = dict(specs or DEFAULT_SPECS)
        addresses = dict(addresses or {name: DEFAULT_SERVERS[name] for name in specs})
        twin = cls(workdir=workdir, lab=Lab(workdir / "lab", servers=addresses), owns_workdir=owns,
                   elsewhere_idle=elsewhere_idle, scratch=scratch)
        try:
            twin._start(specs)
            if cloudflare is not None:
                twin._start_cloudflare(list(cloudflare["accounts"]), dict(cloudflare["zones"]))
            if kube_bin is not None:
                twin._start_kubernetes(Path(kube_bin))
        except BaseException:
            twin.stop()
            raise
        return twin

    def _start(self, specs: Mapping[str, Spec]) -> None:
        (self.workdir / "operator").mkdir(parents=True, exist_ok=True)
        keygen(self.operator_key, "bazbii-twin-operator")
        wheelhouse = ensure_wheelhouse()
        self.lab.start()
        for name, spec in specs.items():
            server = TwinServer(self.lab, name, spec, self.workdir / "servers" / name, self.operator_key, wheelhouse,
                                extra_visible=[self.workdir])
            self.servers[name] = server
            server.start()

    def _start_cloudflare(self, accounts: Sequence[str], zones: Mapping[str, str]) -> None:
        """The API emulator in the edge; the servers' cloudflared learn where its edge side is."""
        directory = self.workdir / "cloudflare"
        directory.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(24)  # 48 characters: a shape the provider accepts for an API token
        (directory / "token").write_text(token)
        (directory / "token").chmod(0o600)
        argv = [sys.executable, "-m", "twin.cloudflare", "--listen", f"{EDGE_ADDRESS}:0",
                "--token-file", str(directory / "token"), "--state", str(directory / "state.json")]
        argv += [arg for account in accounts for arg in ("--account", account)]
        argv += [arg for zone_id, name in zones.items() for arg in ("--zone", f"{zone_id}={name}")]
        log = open(directory / "emulator.log", "ab")
        process = self.lab.popen(EDGE, self.elsewhere(argv), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log,
                                 text=True)
        log.close()
        url = _first_line(process, 30, "the Cloudflare API emulator", parse=str.strip)
        self.cloudflare = Cloudflare(process, url, token, list(accounts), dict(zones))
        for server in self.servers.values():
            server.set_edge(cloudflareTwinUrl=self.cloudflare.base)

    def _cloudflare_view(self, path: str):
        if self.cloudflare is None:
            raise LabError("this twin has no Cloudflare emulator")

        def read():
            request = urllib.request.Request(f"{self.cloudflare.base}{path}",
                                             headers={"Authorization": f"Bearer {self.cloudflare.token}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)

        return self.lab.in_edge(read)

    def cloudflare_state(self) -> dict:
        """The emulator's whole state (``GET /_twin/state``), read from the edge."""
        return self._cloudflare_view("/_twin/state")

    def cloudflare_requests(self) -> list[dict]:
        """Every Cloudflare API call the emulator received (``GET /_twin/requests``)."""
        return self._cloudflare_view("/_twin/requests")

    def _start_kubernetes(self, bin_dir: Path) -> None:
        """The control plane in the edge (as a managed one would be), a node agent inside each node's server."""
        state = self.workdir / "kube"
        log = open(self.workdir / "kube-control-plane.log", "ab")
        plane = self.lab.popen(EDGE, self.elsewhere([sys.executable, "-m", "twin.kube", "--bin", str(bin_dir),
                                                     "--address", EDGE_ADDRESS,
                                                     "--state-dir", str(state / "control-plane")]),
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        started = _first_line(plane, KUBE_START_TIMEOUT, "the Kubernetes control plane")
        self.kube = Kubernetes(bin_dir=bin_dir, server=started["server"], kubeconfig=Path(started["kubeconfig"]),
                               control_plane=plane, fault_dir=state / "faults")
        self.kube.fault_dir.mkdir()
        for node, pod_network in KUBE_NODES.items():
            if node not in self.servers:
                continue
            server = self.servers[node]
            agent_state = state / "nodes" / node
            agent_state.mkdir(parents=True)
            with open(agent_state.parent / f"{node}.log", "ab") as agent_log:
                self.kube.agents[node] = server.popen_inside(
                    [sys.executable, "-m", "twin.kube.nodeagent", "--node", node, "--node-ip", server.address,
                     "--kubeconfig", str(self.kube.kubeconfig), "--pod-network", pod_network,
                     "--state-dir", str(agent_state), "--nodeport-address", "0.0.0.0",
                     "--fault-dir", str(self.kube.fault_dir)],
                    stdout=agent_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + KUBE_START_TIMEOUT
        for node in self.kube.agents:
            while self.kubectl("get", "node", node, "-o",
                               'jsonpath={.status.conditions[?(@.type=="Ready")].status}').stdout.strip() != "True":
                if self.kube.agents[node].poll() is not None or time.monotonic() > deadline:
                    raise LabError(f"node {node} did not become Ready (log: {state / 'nodes' / f'{node}.log'})")
                time.sleep(0.3)
        for namespace in KUBE_NAMESPACES:
            self.kubectl("create", "namespace", namespace, check=True)

    def kubernetes_objects(self, namespace: str, kinds: Sequence[str]) -> dict[tuple[str, str, str], dict]:
        """``(kind, namespace, name) -> object`` of what the cluster holds of ``kinds`` that Pulumi manages."""
        listed = json.loads(self.kubectl("get", ",".join(kinds), "-n", namespace, "-o", "json", check=True).stdout)
        return {(item["kind"], item["metadata"].get("namespace", ""), item["metadata"]["name"]): item
                for item in listed["items"]
                if item["metadata"].get("labels", {}).get(MANAGED_BY_LABEL) == "pulumi"}

    def kubectl(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        """kubectl as the cluster's admin, from the edge."""
        if self.kube is None:
            raise LabError("this twin has no Kubernetes (start it with kube_bin)")
        done = self.lab.run(EDGE, self.kube.kubectl_argv(*args), timeout=timeout)
        if check and done.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)}: {done.stderr.strip()[-2000:]}")
        return done

    def __enter__(self) -> "Twin":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.kube is not None:
            # Agents first: they end their pods' processes (graceful), then the control plane.
            for process in [*self.kube.agents.values(), self.kube.control_plane]:
                _terminate(process)
        if self.cloudflare is not None:
            _terminate(self.cloudflare.process)
        for server in self.servers.values():
            server.stop()
        self.lab.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ where the operator stands
    def pulumi_prefix(self) -> list[str]:
        """Prefix for commands that run where the operator's ``pulumi`` runs (the edge namespace)."""
        return self.lab.edge_command(self.elsewhere([]))

    def elsewhere(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as what production runs on other machines (:attr:`elsewhere_idle`; children inherit it)."""
        return [*IDLE_SCHEDULING, *argv] if self.elsewhere_idle else list(argv)


def _first_line(process: subprocess.Popen, timeout: float, what: str, parse=json.loads):
    """The line a started service prints once it is up (JSON unless ``parse`` says otherwise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"{what} exited ({process.returncode}) before it was up")
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
            if line.strip():
                return parse(line)
    raise LabError(f"{what} was not up within {timeout:g} s")


def _terminate(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
