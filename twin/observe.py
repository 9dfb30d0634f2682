"""What the rehearsal adds to the twin: an edge that serves the load by what the Cloudflare emulator
accepted, and a Prometheus that scrapes what the program declares.

    edge = start_edge(twin, time_scale=600)          # HAProxy + nsd + unbound in the edge namespace
    prometheus = start_prometheus(twin)              # Debian's Prometheus in the edge, nothing scraped yet
    prometheus.follow(operator.outputs())            # metricsScrapeConfigs + metricsTargets of the stack

The edge (:mod:`twin.edge`) polls the emulator and applies pools, weights, health checks and records, so the
weights that steer the load are the ones the program declared. Prometheus is configured from the stack's
outputs exactly as production's is (the exporters' ``file_sd`` document and the API pods' Kubernetes
discovery), with these rehearsal differences: the ``file_sd`` path is the twin's; it scrapes every second
(the soaks and windows are compressed by ``bazbii:timeScale``); and Debian's Prometheus is built without
Kubernetes discovery, so :class:`PodDiscovery` stands in for it: it lists the pods the discovery would
select every second and writes them as a ``file_sd`` document with the discovery's own meta labels, under
which the stack's ``relabel_configs`` run unchanged. Prometheus runs on the Kubernetes node (server1), as
a cluster's Prometheus does: the pods' addresses are local there, the exporters on the other servers are
reached over the servers' network, and the transition check (in the edge) queries it at server1's address.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bazbii_plan.gates import pod_meta_label

from .environment import KUBE_NODES, Twin, _first_line, _terminate
from .lab import EDGE, EDGE_ADDRESS, Lab, LabError, free_port
from .server import REPO_ROOT

PROMETHEUS = "/usr/bin/prometheus"
SCRAPE_INTERVAL = "1s"  # a rehearsal's compressed windows need samples every second (production: its own)


@dataclass
class Edge:
    process: subprocess.Popen
    http: str  # ADDR:PORT of HAProxy (the load balancer's hostname answers here)
    dns: str  # nsd (authoritative for the zone)
    resolver: str  # unbound (what clients resolve through, TTLs honoured)
    stats: str  # the edge HAProxy's own exporter

    def stop(self) -> None:
        _terminate(self.process)


def start_edge(twin: Twin, time_scale: float) -> Edge:
    """``python -m twin.edge`` in the edge namespace, following the emulator's only zone."""
    if twin.cloudflare is None:
        raise LabError("the edge follows the Cloudflare emulator: start the twin with cloudflare=...")
    if len(twin.cloudflare.zones) != 1:
        raise LabError(f"the edge serves one zone; the emulator has {sorted(twin.cloudflare.zones)}")
    directory = twin.workdir / "edge"
    directory.mkdir(parents=True, exist_ok=True)
    token_file = directory / "token"
    token_file.write_text(twin.cloudflare.token)
    token_file.chmod(0o600)
    argv = [sys.executable, "-m", "twin.edge", "--cloudflare", twin.cloudflare.base, "--token-file", str(token_file),
            "--zone", next(iter(twin.cloudflare.zones)), "--dir", str(directory), "--address", EDGE_ADDRESS,
            "--time-scale", f"{time_scale:g}"]
    with open(directory / "edge.log", "ab") as log:
        process = twin.lab.popen(EDGE, argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    ports = _first_line(process, 60, "the twin's edge")
    return Edge(process, ports["http"], ports["dns"], ports["resolver"], ports["stats"])


def prometheus_config(scrape_configs: list[dict], file_sd: Path, pods_dir: Path) -> dict[str, Any]:
    """The stack's ``metricsScrapeConfigs`` with the twin's paths: the exporters' ``file_sd`` document, and each
    Kubernetes discovery replaced by the ``file_sd`` document :class:`PodDiscovery` keeps (same meta labels)."""
    configs = copy.deepcopy(scrape_configs)
    for config in configs:
        if "file_sd_configs" in config:
            config["file_sd_configs"] = [{"files": [str(file_sd)], "refresh_interval": "1s"}]
        if config.pop("kubernetes_sd_configs", None) is not None:
            config["file_sd_configs"] = [{"files": [str(pods_dir / f"{config['job_name']}.json")],
                                          "refresh_interval": "1s"}]
    return {"global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                       "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": configs}


def pod_targets(pods: dict) -> list[dict]:
    """The targets Prometheus's Kubernetes pod discovery gives for a pod list: one per container port, with the
    discovery's meta labels (``__meta_kubernetes_pod_*``), as ``file_sd`` groups."""
    groups = []
    for pod in pods.get("items", []):
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        if not status.get("podIP"):
            continue  # the discovery lists no address for a pod without one
        ready = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"), "false")
        common = {"__meta_kubernetes_namespace": meta.get("namespace", ""),
                  "__meta_kubernetes_pod_name": meta["name"],
                  "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
                  "__meta_kubernetes_pod_phase": status.get("phase", ""),
                  "__meta_kubernetes_pod_ready": ready.lower(),
                  "__meta_kubernetes_pod_ip": status["podIP"],
                  **{pod_meta_label(k): v for k, v in (meta.get("labels") or {}).items()}}
        for container in spec.get("containers") or []:
            for port in container.get("ports") or []:
                groups.append({"targets": [f"{status['podIP']}:{port['containerPort']}"], "labels": {
                    **common, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}})
    return groups


class PodDiscovery:
    """Stands in for Prometheus's Kubernetes pod discovery (Debian builds Prometheus without it): every
    second, the pods each replaced discovery selects (its namespaces and label selectors), as ``file_sd``."""

    def __init__(self, twin: Twin, directory: Path):
        self.twin, self.directory = twin, directory
        self.jobs: dict[str, list[dict]] = {}  # job name -> its kubernetes_sd_configs
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pod-discovery", daemon=True)
        self.thread.start()

    def follow(self, scrape_configs: list[dict]) -> None:
        self.jobs = {c["job_name"]: c["kubernetes_sd_configs"] for c in scrape_configs if "kubernetes_sd_configs" in c}
        self.refresh()

    def refresh(self) -> None:
        for job, discoveries in dict(self.jobs).items():
            groups = []
            for discovery in discoveries:
                if discovery.get("role") != "pod":
                    raise LabError(f"job {job}: the twin discovers pods only, not role {discovery.get('role')!r}")
                selector = ",".join(s["label"] for s in discovery.get("selectors") or [] if s.get("label"))
                for namespace in (discovery.get("namespaces") or {}).get("names") or ["--all-namespaces"]:
                    where = ["-A"] if namespace == "--all-namespaces" else ["-n", namespace]
                    listed = self.twin.kubectl("get", "pods", *where, *(["-l", selector] if selector else []),
                                               "-o", "json", check=True)
                    groups += pod_targets(json.loads(listed.stdout))
            path = self.directory / f"{job}.json"
            text = json.dumps(groups, sort_keys=True)
            if not path.exists() or path.read_text() != text:
                partial = path.with_suffix(".partial")
                partial.write_text(text)
                partial.replace(path)

    def _run(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.refresh()
            except (LabError, OSError, ValueError, subprocess.SubprocessError):
                continue  # the API server restarting, a pod list mid-change: the next second's list

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


@dataclass
class Prometheus:
    process: subprocess.Popen
    url: str  # what bazbii:metrics.endpoint is set to
    directory: Path
    lab: Lab
    pods: PodDiscovery

    @property
    def file_sd(self) -> Path:
        return self.directory / "targets.json"

    def follow(self, outputs: dict) -> bool:
        """Scrape what the stack's outputs declare now; True when the scrape configuration changed (reloaded)."""
        # file_sd is re-read by Prometheus itself when the document changes (an atomic rename).
        partial = self.file_sd.with_suffix(".partial")
        partial.write_text(json.dumps(outputs.get("metricsTargets") or []))
        partial.replace(self.file_sd)
        scrape_configs = outputs.get("metricsScrapeConfigs") or []
        self.pods.follow(scrape_configs)
        config = yaml.safe_dump(prometheus_config(scrape_configs, self.file_sd, self.directory), sort_keys=False)
        path = self.directory / "prometheus.yml"
        if path.exists() and path.read_text() == config:
            return False
        path.write_text(config)
        self.process.send_signal(signal.SIGHUP)
        return True

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return self._get(url)["data"]["result"]

    def targets(self) -> list[str]:
        """One line per active target: job, URL, health and its last scrape error (for a failure's message)."""
        active = self._get(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
        return [f"{t['labels'].get('job')} {t['scrapeUrl']} {t['health']} {t.get('lastError', '')}" for t in active]

    def _get(self, url: str) -> dict:
        # From the edge, where the operator (and the transition check) stands.
        return json.loads(self.lab.in_edge(_http_get, url))

    def stop(self) -> None:
        self.pods.stop()
        _terminate(self.process)


def start_prometheus(twin: Twin) -> Prometheus:
    """Debian's Prometheus on the (first) Kubernetes node, with nothing to scrape yet (:meth:`Prometheus.follow`
    adds it)."""
    node = next((n for n in KUBE_NODES if n in twin.servers), None)
    if node is None or twin.kube is None:
        raise LabError("the rehearsal's Prometheus runs on a Kubernetes node: start the twin with a cluster")
    address = twin.servers[node].address
    directory = twin.workdir / "prometheus"
    (directory / "tsdb").mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config([], directory / "targets.json",
                                                                               directory)))
    port = twin.lab.in_namespace(node, free_port, address)
    argv = [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address={address}:{port}", "--storage.tsdb.retention.time=1d"]
    with open(directory / "prometheus.log", "ab") as log:
        process = twin.lab.popen(node, argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{address}:{port}"
    prometheus = Prometheus(process, url, directory, twin.lab, PodDiscovery(twin, directory))
    deadline = time.monotonic() + 60
    while True:
        try:
            prometheus._get(f"{url}/api/v1/status/buildinfo")
            return prometheus
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _terminate(process)
                raise LabError(f"Prometheus did not start (log: {directory / 'prometheus.log'})") from None
            time.sleep(0.3)


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()
