"""The twin's Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Real binaries (k8s.io/kubernetes, etcd) started as plain processes, everything per instance: a state
directory (``mkdtemp`` unless given) holding etcd's data, the certificates, the kubeconfigs and one log
file per component, and free ports on one loopback address, so two control planes never collide::

    with ControlPlane.start(bin_dir) as cp:          # or kube_bin() for $BAZBII_KUBE_BIN
        cp.kubectl("get", "nodes")
        cp.kubeconfig                                # admin kubeconfig (system:masters), certs embedded

``bin_dir`` holds ``etcd`` and ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``,
``kubectl`` (one binary dispatching on its name is fine). There is no kubelet: pods are run by
:mod:`twin.kube.nodeagent`. Choices that follow from that:

* admission without ``ServiceAccount``: it would add a projected token volume to every pod that only
  a kubelet materializes, and no process run here talks to the API;
* ``--endpoint-reconciler-type=none``: the ``kubernetes`` Service gets no endpoints (the API's
  loopback address is not a valid endpoint IP, and nothing here uses that Service);
* the controller-manager runs the workload, endpoint, namespace, service-account, garbage-collection,
  disruption and node-lifecycle controllers (:data:`CONTROLLERS`), no cloud, storage or CSR ones;
* no leader election (one instance of each), etcd without fsync (a throwaway store).

Start-up is measured (:attr:`ControlPlane.start_seconds`); a component that dies while starting
fails the start with its log's tail, and every process is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import httpx

from twin.kube import kubeconfig, procs
from twin.kube.pki import ADMIN_USER, ClusterPki, KeyPair, make_cluster_pki

BIN_ENV = "BAZBII_KUBE_BIN"
DEFAULT_SERVICE_CIDR = "127.0.240.0/20"  # virtual: nothing binds a ClusterIP here (no ClusterIP proxying)
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0

CONTROLLERS = (
    "deployment-controller", "replicaset-controller", "replicationcontroller-controller", "statefulset-controller",
    "daemonset-controller", "job-controller", "cronjob-controller", "ttl-after-finished-controller",
    "endpoints-controller", "endpointslice-controller", "endpointslice-mirroring-controller",
    "serviceaccount-controller", "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
    "namespace-controller", "garbage-collector-controller", "pod-garbage-collector-controller",
    "disruption-controller", "node-lifecycle-controller", "taint-eviction-controller",
    "clusterrole-aggregation-controller",
)


def kube_bin(explicit: Optional[os.PathLike] = None) -> Path:
    """The directory of the Kubernetes binaries: ``explicit``, else ``$BAZBII_KUBE_BIN``."""
    chosen = explicit or os.environ.get(BIN_ENV)
    if not chosen:
        raise RuntimeError(f"no Kubernetes binaries: pass their directory or set {BIN_ENV} "
                           "(it holds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)")
    path = Path(chosen)
    missing = [name for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
               if not os.access(path / name, os.X_OK)]
    if missing:
        raise RuntimeError(f"{path}: missing or not executable: {', '.join(missing)}")
    return path


class ComponentDied(RuntimeError):
    pass


@dataclass
class ControlPlane:
    bin_dir: Path
    state_dir: Path
    address: str
    api_port: int
    pki: ClusterPki
    kubeconfig: Path  # the admin's
    owns_state_dir: bool
    components: list[procs.Component] = field(default_factory=list)
    start_seconds: float = 0.0

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    # ------------------------------------------------------------------ start
    @classmethod
    def start(cls, bin_dir: Optional[os.PathLike] = None, *, state_dir: Optional[Path] = None,
              address: str = "127.0.0.1", api_port: Optional[int] = None,
              service_cidr: str = DEFAULT_SERVICE_CIDR, node_monitor_grace_seconds: int = 40,
              timeout: float = START_TIMEOUT) -> "ControlPlane":
        """Start every component and wait until each one answers healthy; on any failure nothing is left running.

        ``state_dir``: an empty directory, kept after :meth:`stop` (default: a temporary one, removed).

        ``node_monitor_grace_seconds``: how long a node may go without a heartbeat before the
        node-lifecycle controller marks it not ready (the controller-manager's default is 40).
        """
        started = time.monotonic()
        owns = state_dir is None
        root = Path(tempfile.mkdtemp(prefix="bazbii-kube-")) if owns else Path(state_dir)
        root.mkdir(parents=True, exist_ok=True)
        if not owns and any(root.iterdir()):  # etcd would reuse old data under a new CA and keys
            raise ValueError(f"{root}: the state dir of a new control plane must be empty")
        ports = procs.PortReservation(address)
        try:
            service_ip = str(next(ipaddress.ip_network(service_cidr).hosts()))  # the `kubernetes` Service's
            pki = make_cluster_pki(root / "pki", server_ips=[address, service_ip], server_names=[
                "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local"])
            plane = cls(bin_dir=kube_bin(bin_dir), state_dir=root, address=address,
                        api_port=api_port or ports.take(), pki=pki, kubeconfig=root / "admin.kubeconfig",
                        owns_state_dir=owns)
        except BaseException:
            ports.release()
            if owns:
                shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            plane._start_all(ports, service_cidr, node_monitor_grace_seconds, started + timeout)
        except BaseException:
            ports.release()
            plane.stop()
            raise
        plane.start_seconds = time.monotonic() - started
        return plane

    def _client_kubeconfig(self, name: str, pair: KeyPair, user: str) -> Path:
        return kubeconfig.write(self.state_dir / f"{name}.kubeconfig",
                                kubeconfig.render(self.server, self.pki.ca.cert, pair, user=user))

    def _launch(self, name: str, argv: Sequence[str]) -> None:
        self.components.append(procs.start(name, argv, self.state_dir / "logs" / f"{name}.log"))

    def _check_alive(self) -> None:
        for component in self.components:
            if not component.alive():
                raise ComponentDied(f"{component.name} exited with {component.popen.returncode} while starting; "
                                    f"its log ends:\n{component.log_tail()}")

    def _wait(self, what: str, url: str, deadline: float, *, verify) -> None:
        def answers_ok() -> bool:
            try:
                return httpx.get(url, verify=verify, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        procs.wait_until(answers_ok, max(deadline - time.monotonic(), 0.1), what, check=self._check_alive)

    def _start_all(self, ports: procs.PortReservation, service_cidr: str, grace: int, deadline: float) -> None:
        a, pki, state = self.address, self.pki, self.state_dir
        etcd_client, etcd_peer = f"http://{a}:{ports.take()}", f"http://{a}:{ports.take()}"
        cm_port, scheduler_port = ports.take(), ports.take()
        kubeconfig.write(self.kubeconfig, kubeconfig.render(self.server, pki.ca.cert, pki.admin, user=ADMIN_USER))
        cm_kubeconfig = self._client_kubeconfig("controller-manager", pki.controller_manager,
                                                "system:kube-controller-manager")
        scheduler_kubeconfig = self._client_kubeconfig("scheduler", pki.scheduler, "system:kube-scheduler")
        bin_dir = self.bin_dir

        self._launch("etcd", [
            str(bin_dir / "etcd"), "--name", "twin", "--data-dir", str(state / "etcd"),
            "--listen-client-urls", etcd_client, "--advertise-client-urls", etcd_client,
            "--listen-peer-urls", etcd_peer, "--initial-advertise-peer-urls", etcd_peer,
            "--initial-cluster", f"twin={etcd_peer}", "--initial-cluster-state", "new",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        issuer = "https://kubernetes.default.svc.cluster.local"
        self._launch("kube-apiserver", [
            str(bin_dir / "kube-apiserver"), f"--etcd-servers={etcd_client}",
            f"--bind-address={a}", f"--advertise-address={a}", f"--secure-port={self.api_port}",
            f"--tls-cert-file={pki.apiserver.cert}", f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}", f"--cert-dir={state / 'apiserver'}",
            f"--service-account-issuer={issuer}", f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={service_cidr}",
            "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none", "--allow-privileged=true",
            "--enable-priority-and-fairness=false", "--profiling=false", "--v=1",
        ])
        # The controller-manager gives up when the API is not healthy within seconds of its start: start it after.
        self._wait("kube-apiserver /readyz", f"{self.server}/readyz", deadline,
                   verify=ssl.create_default_context(cafile=str(pki.ca.cert)))
        self._launch("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), f"--kubeconfig={cm_kubeconfig}",
            f"--bind-address={a}", f"--secure-port={cm_port}", f"--cert-dir={state / 'controller-manager'}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}", f"--root-ca-file={pki.ca.cert}",
            f"--controllers={','.join(CONTROLLERS)}", f"--node-monitor-grace-period={grace}s",
            "--profiling=false", "--v=1",
        ])
        self._launch("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), f"--kubeconfig={scheduler_kubeconfig}",
            f"--bind-address={a}", f"--secure-port={scheduler_port}", f"--cert-dir={state / 'scheduler'}",
            "--leader-elect=false", "--profiling=false", "--v=1",
        ])
        # No authentication/authorization kubeconfigs for their own ports: nothing but this health check calls
        # them (always allowed), and the delegated authentication would look for a front-proxy CA we do not have.
        # Their serving certificates are self-signed in their cert dirs.
        self._wait("kube-controller-manager /healthz", f"https://{a}:{cm_port}/healthz", deadline, verify=False)
        self._wait("kube-scheduler /healthz", f"https://{a}:{scheduler_port}/healthz", deadline, verify=False)
        ports.release()

    # ------------------------------------------------------------------ use
    def kubectl(self, *args: str, check: bool = True, timeout: float = 60,
                stdin: Optional[str] = None) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-3000:]}")
        return done

    def log_tail(self, name: str, lines: int = 30) -> str:
        return next((c.log_tail(lines) for c in self.components if c.name == name), "")

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Stop every component, newest first (SIGTERM, SIGKILL after a bounded wait); idempotent."""
        while self.components:
            procs.stop(self.components.pop(), timeout=STOP_TIMEOUT)
        if self.owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "ControlPlane":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
