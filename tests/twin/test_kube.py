"""The twin's Kubernetes with real workloads: a real control plane and our node agent on loopback.

One control plane and one node agent serve the whole module (host network namespace, a random
127.x.y.0/24 pod network so that two runs at once do not meet), every test in its own namespace.
The API image runs the rehearsal's real API against a throwaway PostgreSQL. The last test applies a
Deployment with the real ``pulumi`` CLI and the real pulumi-resource-kubernetes provider, whose await
logic must pass.

Needs ``BAZBII_KUBE_BIN`` (etcd and the Kubernetes binaries; else the engine build's) and, for the Pulumi test,
``BAZBII_ENGINE_BIN`` (or the engine build); skipped without them. Runs as root (mount namespaces).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from twin.kube import kubeconfig, nodeagent, procs
from twin.kube.api import ssl_context
from engine.build import EngineUnavailable, installed
from twin.kube.control import ControlPlane, kube_bin
from twin.kube.endpoints import ready_endpoints
from twin.kube.images import fault_file

pytestmark = pytest.mark.engine

HEARTBEAT_SECONDS = 2
NODE_GRACE_SECONDS = 12  # the controller-manager's node-monitor-grace-period for this module
API_IMAGE = "registry.example/bazbii/api:{}"
WORKER_IMAGE = "registry.example/bazbii/worker:{}"
_names = itertools.count()


# ---------------------------------------------------------------------------------------------- fixtures
@dataclass
class Node:
    name: str
    ip: str
    agent: procs.Component
    state_dir: Path


class ApiReader:
    """Reads the API as the admin, for checks kubectl would make slow (tight polling)."""

    def __init__(self, path: Path):
        credentials = kubeconfig.load(path)
        self.client = httpx.Client(base_url=credentials.server, verify=ssl_context(credentials), timeout=10)

    def get(self, path: str) -> dict:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def exists(self, path: str) -> bool:
        return self.client.get(path).status_code == 200


@pytest.fixture(scope="module")
def cluster():
    try:
        bin_dir = kube_bin()  # $BAZBII_KUBE_BIN
    except RuntimeError:
        try:  # else the engine build's (./test builds it)
            engine = installed()
            engine.need("kube", "etcd")
            bin_dir = kube_bin(engine.bin)
        except (EngineUnavailable, RuntimeError) as exc:
            pytest.skip(f"no Kubernetes binaries: set BAZBII_KUBE_BIN or build the engine ({exc})")
    plane = ControlPlane.start(bin_dir, node_monitor_grace_seconds=NODE_GRACE_SECONDS)
    print(f"control plane ready in {plane.start_seconds:.1f} s")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def api(cluster) -> ApiReader:
    reader = ApiReader(cluster.kubeconfig)
    yield reader
    reader.client.close()


@pytest.fixture(scope="module")
def node(cluster, api, tmp_path_factory):
    network = f"127.{random.randrange(64, 250)}.{random.randrange(0, 256)}"
    name, ip = "twin-node", f"{network}.1"
    state_dir = tmp_path_factory.mktemp("node-agent")
    (state_dir / "faults").mkdir()
    agent = nodeagent.spawn(node=name, node_ip=ip, kubeconfig=cluster.kubeconfig, pod_network=f"{network}.0/24",
                            state_dir=state_dir, extra_args=["--heartbeat-seconds", str(HEARTBEAT_SECONDS),
                                                             "--fault-dir", str(state_dir / "faults")])
    try:
        nodeagent.wait_node_ready([str(cluster.bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"], name, agent)
        yield Node(name, ip, agent, state_dir)
    finally:
        try:
            pids = _running_container_pids(api, name)
        finally:
            code = procs.stop(agent, timeout=20)
    # The agent's own exit stops what it runs: checked after every test of the module used it.
    assert code == 0, f"node agent exited with {code}:\n{agent.log_tail()}"
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "pod processes outlived the agent"


def _running_container_pids(api: ApiReader, node_name: str) -> list[int]:
    pods = api.get(f"/api/v1/pods?fieldSelector=spec.nodeName={node_name}")["items"]
    return [int(s["containerID"].split("://")[1]) for p in pods
            for s in (p.get("status") or {}).get("containerStatuses") or [] if "running" in s["state"]]


@pytest.fixture(scope="module")
def database():
    from testsupport.localcluster import LocalCluster, make_workdir, remove_workdir

    workdir = make_workdir("bazbii-twin-kube-pg-")
    postgres = LocalCluster.init(workdir, "primary")
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.stop(mode="immediate")
        remove_workdir(workdir)


@pytest.fixture
def database_name(database, namespace) -> str:
    """A database of the test's own, named as its namespace."""
    with psycopg.connect(database.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{namespace}"')
    return namespace


@pytest.fixture
def database_url(database, database_name) -> str:
    return f"postgresql://{database.superuser}:{database.password}@127.0.0.1:{database.port}/{database_name}"


@pytest.fixture
def namespace(cluster, node):
    name = f"t{next(_names)}-{random.randrange(16 ** 6):06x}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# ---------------------------------------------------------------------------------------------- helpers
def apply(cluster: ControlPlane, namespace: str, *objects: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                         "items": list(objects)}))


def http_deployment(name: str, *, replicas: int = 1, pre_stop_seconds: int = 0, grace: int = 10) -> dict:
    """A Deployment of a plain HTTP server given as an explicit command (no image-table entry needed)."""
    container = {
        "name": "web", "image": "registry.example/twin-test/any:1",
        "command": ["python", "-m", "http.server", "$(PORT)", "--bind", "$(HOST)"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    if pre_stop_seconds:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": pre_stop_seconds}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "terminationGracePeriodSeconds": grace, "containers": [container]}}}}


def api_deployment(version: str, *, replicas: int = 2) -> dict:
    """The program's API Deployment in small: rolling update with maxUnavailable 0, readiness, preStop sleep."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": "api"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "api", "image": API_IMAGE.format(version),
                "ports": [{"name": "http", "containerPort": 8000}],
                "env": [{"name": "DATABASE_URL",
                         "valueFrom": {"secretKeyRef": {"name": "bazbii-db", "key": "DATABASE_URL"}}}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1,
                                   "failureThreshold": 3},
                "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
            }]}}}}


def node_port_service(name: str, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {
        "type": "NodePort", "selector": selector,
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def job(name: str, command: list[str], **pod_spec) -> dict:
    container = {"name": "main", "image": API_IMAGE.format("1.9.0"), "command": command,
                 **pod_spec.pop("container", {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [container], **pod_spec}}}}


def node_port(cluster: ControlPlane, namespace: str, service: str) -> int:
    return int(cluster.kubectl("get", "service", service, "-n", namespace,
                               "-o", "jsonpath={.spec.ports[0].nodePort}").stdout)


def wait_for(cluster: ControlPlane, namespace: str, what: str, condition: str, timeout: int = 60) -> None:
    done = cluster.kubectl("wait", "-n", namespace, what, f"--for={condition}", f"--timeout={timeout}s",
                           check=False, timeout=timeout + 10)
    assert done.returncode == 0, (f"{what} not {condition}: {done.stderr}\n"
                                  + cluster.kubectl("get", "-n", namespace, "all", "-o", "wide").stdout)


def job_outcome(api: ApiReader, namespace: str, name: str, timeout: float = 60) -> str:
    """``Complete`` or ``Failed``, whichever condition the Job reaches first."""
    outcome = []

    def finished() -> bool:
        conditions = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}").get("status", {}).get("conditions")
        outcome[:] = [c["type"] for c in conditions or [] if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        return bool(outcome)

    procs.wait_until(finished, timeout, f"job {name} finished", interval=0.2)
    return outcome[0]


def assert_job(api: ApiReader, node: Node, namespace: str, name: str, expected: str) -> None:
    outcome = job_outcome(api, namespace, name)
    assert outcome == expected, f"job {name} is {outcome}; its containers wrote:\n{container_output(node, namespace)}"


def container_output(node: Node, namespace: str) -> str:
    """The tail of every container log of the namespace's pods (the agent's state dir keeps them)."""
    logs = sorted(node.state_dir.glob(f"pods/{namespace}_*/*/*.log"))
    return "\n".join(f"--- {log.relative_to(node.state_dir)}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)


def pods(api: ApiReader, namespace: str, selector: str) -> list[dict]:
    return api.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]


def is_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


class Load(threading.Thread):
    """Sequential GETs on one URL, each on a new connection, until stopped: every outcome is counted."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.versions: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        # No keep-alive: each request is a new connection, so each one picks an endpoint anew.
        with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stopping.is_set():
                self._request(client)
                time.sleep(0.01)

    def _request(self, client: httpx.Client) -> None:
        try:
            response = client.get(self.url)
        except httpx.HTTPError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code == 200:
            self.versions.append(response.headers.get("x-api-version", "?"))
        else:
            self.failures.append(f"HTTP {response.status_code}")


class PodCensus(threading.Thread):
    """Samples the pods of a selector: the most pods alive at once and the fewest ready ones."""

    def __init__(self, api: ApiReader, namespace: str, selector: str):
        super().__init__(daemon=True)
        self.api, self.namespace, self.selector = api, namespace, selector
        self.stopping = threading.Event()
        self.most_alive, self.fewest_ready = 0, sys.maxsize

    def run(self) -> None:
        while not self.stopping.is_set():
            alive = [p for p in pods(self.api, self.namespace, self.selector) if not p["metadata"].get("deletionTimestamp")]
            self.most_alive = max(self.most_alive, len(alive))
            self.fewest_ready = min(self.fewest_ready, sum(is_ready(p) for p in alive))
            time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- tests
def test_node_is_ready_and_its_heartbeat_keeps_it_ready(cluster, api, node):
    got = api.get(f"/api/v1/nodes/{node.name}")
    assert {"type": "InternalIP", "address": node.ip} in got["status"]["addresses"]
    assert got["status"]["allocatable"]["pods"] == "110"
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.name}"
    renewals = {api.get(lease_path)["spec"]["renewTime"]}
    deadline = time.monotonic() + 2.5 * HEARTBEAT_SECONDS
    while time.monotonic() < deadline:
        ready = [c for c in api.get(f"/api/v1/nodes/{node.name}")["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", ready
        renewals.add(api.get(lease_path)["spec"]["renewTime"])
        time.sleep(0.3)
    assert len(renewals) >= 3, f"lease renewed {len(renewals) - 1} times in {2.5 * HEARTBEAT_SECONDS} s"


def test_api_deployment_rolls_one_pod_at_a_time_while_its_node_port_keeps_answering(
        cluster, api, node, namespace, database_url):
    apply(cluster, namespace,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bazbii-db"},
           "stringData": {"DATABASE_URL": database_url}},
          api_deployment("1.9.0"), node_port_service("api", {"app": "api"}))
    wait_for(cluster, namespace, "deployment/api", "condition=Available")
    url = f"http://{node.ip}:{node_port(cluster, namespace, 'api')}/readyz"
    assert httpx.get(url, timeout=5).headers["x-api-version"] == "1.9.0"

    load, census = Load(url), PodCensus(api, namespace, "app=api")
    load.start()
    census.start()
    try:
        time.sleep(0.5)
        cluster.kubectl("-n", namespace, "set", "image", "deployment/api", f"api={API_IMAGE.format('2.0.0')}")
        rollout = cluster.kubectl("-n", namespace, "rollout", "status", "deployment/api", "--timeout=90s",
                                  check=False, timeout=100)
        assert rollout.returncode == 0, rollout.stderr
        time.sleep(1.5)  # the old pods' preStop drain ends; requests keep flowing meanwhile
    finally:
        load.stopping.set()
        census.stopping.set()
        load.join()
        census.join()
    assert not load.failures, f"{len(load.failures)} failed of {len(load.versions) + len(load.failures)}: {load.failures[:5]}"
    assert len(load.versions) > 100
    assert load.versions[0] == "1.9.0" and set(load.versions[-10:]) == {"2.0.0"}
    # maxSurge 1, maxUnavailable 0: never more than 3 pods, never fewer than 2 ready
    assert census.most_alive == 3 and census.fewest_ready == 2, vars(census)
    assert len([p for p in pods(api, namespace, "app=api") if not p["metadata"].get("deletionTimestamp")]) == 2

    # A fault injected into the running release (the engine rehearsal's canary-errors): the pods of that image
    # fail the share of requests its fault file says, from the moment it says so until it says 0.
    posts = url.replace("/readyz", "/posts/1")
    fault = Path(fault_file(str(node.state_dir / "faults"), "api", "2.0.0"))
    injected = lambda: httpx.get(posts, timeout=5).json() == {"error": "injected fault"}  # noqa: E731
    assert not injected()
    fault.write_text("1\n")
    procs.wait_until(injected, 5, "the running pods taking the fault up")
    fault.write_text("0\n")
    procs.wait_until(lambda: not injected(), 5, "the fault cleared")


def test_worker_image_runs_the_rehearsal_worker_with_its_version_and_the_database_from_db_env(
        cluster, api, node, namespace, database, database_name):
    from rehearsal.bootstrap import JOBS

    with psycopg.connect(database.dsn(dbname=database_name), autocommit=True) as conn:
        conn.execute("CREATE TABLE posts (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id int, "
                     "title text, content text, category text)")
        conn.execute(JOBS)
        conn.execute("INSERT INTO posts (user_id, title) VALUES (1, 'queued before the worker')")
        conn.execute("INSERT INTO jobs (post_id, kind) SELECT id, 'index' FROM posts")
    worker = api_deployment("2.0.0", replicas=1)  # the program's probe shape, on the worker image
    container = worker["spec"]["template"]["spec"]["containers"][0]
    worker["metadata"]["name"] = "worker"
    container.update(name="worker", image=WORKER_IMAGE.format("2.0.0"), env=[
        {"name": "DB_HOST", "value": "127.0.0.1"}, {"name": "DB_PORT", "value": str(database.port)},
        {"name": "DB_NAME", "value": database_name}, {"name": "DB_USER", "value": database.superuser},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}])
    container["livenessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 2}
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                               "stringData": {"password": database.password}}, worker)
    wait_for(cluster, namespace, "deployment/worker", "condition=Available")

    def job_done() -> bool:
        with psycopg.connect(database.dsn(dbname=database_name)) as conn:
            return conn.execute("SELECT done_by, category FROM jobs JOIN posts ON posts.id = post_id").fetchone() \
                == ("2.0.0", "general")

    procs.wait_until(job_done, 20, "the queued job done by worker 2.0.0", interval=0.3)
    (pod,) = pods(api, namespace, "app=api")  # api_deployment's labels, kept
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, container_output(node, namespace)


def test_pre_stop_sleep_delays_the_end_of_a_deleted_pod_which_serves_meanwhile(cluster, api, node, namespace):
    apply(cluster, namespace, http_deployment("slow-stop", pre_stop_seconds=3, grace=20))
    wait_for(cluster, namespace, "deployment/slow-stop", "condition=Available")
    (pod,) = pods(api, namespace, "app=slow-stop")
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    started = time.monotonic()
    cluster.kubectl("-n", namespace, "delete", "pod", name, "--wait=false")
    time.sleep(1.5)
    assert api.get(path)["metadata"].get("deletionTimestamp")
    assert httpx.get(f"http://{ip}:8080/", timeout=2).status_code == 200  # still serving during the hook
    procs.wait_until(lambda: not api.exists(path), 25, f"pod {name} removed", interval=0.1)
    ended = time.monotonic() - started
    assert 3.0 <= ended < 10, f"pod removed {ended:.1f} s after its deletion (preStop sleep 3 s, grace 20 s)"


def test_job_with_restart_policy_never_completes_running_the_project_python(cluster, api, node, namespace):
    apply(cluster, namespace, job("ok", ["python", "-c", "import bazbii_db.migrations"]))
    assert_job(api, node, namespace, "ok", "Complete")
    (pod,) = pods(api, namespace, "job-name=ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_failing_job_is_failed_with_the_exit_code_of_its_container(cluster, api, node, namespace):
    apply(cluster, namespace, job("broken", ["python", "-c", "raise SystemExit(3)"]))
    assert_job(api, node, namespace, "broken", "Failed")
    (pod,) = pods(api, namespace, "job-name=broken")
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_config_map_volume_appears_read_only_at_its_mount_path_in_the_container_only(
        cluster, api, node, namespace, tmp_path):
    mount_path = tmp_path / "etc" / "bazbii"  # missing on this machine: the agent makes the mount point
    flags = '{"new_category_ui": {"rollout": 10}}'
    check = ('test "$(cat "$MOUNT/conf/flags.json")" = "$EXPECTED" && test ! -e "$MOUNT/other" '
             '&& ! touch "$MOUNT/conf/written" 2>/dev/null')
    apply(cluster, namespace,
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flags"},
           "data": {"flags.json": flags, "other": "not projected"}},
          job("reads-flags", ["sh", "-c", check],
              container={"env": [{"name": "MOUNT", "value": str(mount_path)},
                                 {"name": "EXPECTED", "valueFrom": {"configMapKeyRef": {"name": "flags",
                                                                                       "key": "flags.json"}}}],
                         "volumeMounts": [{"name": "flags", "mountPath": str(mount_path)}]},
              volumes=[{"name": "flags", "configMap": {"name": "flags",
                                                       "items": [{"key": "flags.json", "path": "conf/flags.json"}]}}]))
    assert_job(api, node, namespace, "reads-flags", "Complete")
    assert not (mount_path / "conf").exists(), "the bind mount leaked out of the container's mount namespace"
    assert not (tmp_path / "etc").exists(), "the mount point the agent made was not removed"


def test_exec_probe_runs_in_the_container_mounts_and_a_failing_liveness_probe_restarts_it(
        cluster, api, node, namespace, tmp_path):
    mount_path = tmp_path / "marker"  # only the container's mount namespace has it
    pod = http_deployment("probed")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "marker", "mountPath": str(mount_path)}]
    container["readinessProbe"] = {"exec": {"command": ["test", "-f", f"{mount_path}/present"]}, "periodSeconds": 1}
    container["livenessProbe"] = {"httpGet": {"path": "/missing", "port": "http"}, "initialDelaySeconds": 4,
                                  "periodSeconds": 1, "failureThreshold": 1}
    pod["spec"]["volumes"] = [{"name": "marker", "configMap": {"name": "marker"}}]
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "marker"},
                               "data": {"present": "yes"}},
          {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed", **pod["metadata"]}, "spec": pod["spec"]})
    wait_for(cluster, namespace, "pod/probed", "condition=Ready", timeout=30)
    path = f"/api/v1/namespaces/{namespace}/pods/probed"
    restarted = lambda: api.get(path)["status"]["containerStatuses"][0]["restartCount"] >= 1  # noqa: E731
    procs.wait_until(restarted, 20, "restart after the liveness probe failed", interval=0.2)
    status = api.get(path)["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 143  # SIGTERM


def test_node_port_endpoints_are_the_ready_pods_that_are_not_terminating():
    service = {"metadata": {"namespace": "ns"}, "spec": {"selector": {"app": "api"}}}
    port = {"port": 80, "targetPort": "http", "protocol": "TCP"}

    def pod(ip, *, ready=True, deleting=False, phase="Running", app="api", namespace="ns"):
        return {"metadata": {"namespace": namespace, "labels": {"app": app},
                             **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
                "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000}]}]},
                "status": {"phase": phase, "podIP": ip,
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    pods_now = [pod("127.9.0.3"), pod("127.9.0.2"), pod("127.9.0.4", ready=False), pod("127.9.0.5", deleting=True),
                pod("127.9.0.6", phase="Succeeded"), pod("127.9.0.7", app="worker"), pod("127.9.0.8", namespace="x")]
    assert ready_endpoints(service, port, pods_now) == [("127.9.0.2", 8000), ("127.9.0.3", 8000)]
    publishing = {**service, "spec": {**service["spec"], "publishNotReadyAddresses": True}}
    assert [ip for ip, _ in ready_endpoints(publishing, port, pods_now)] == \
        ["127.9.0.2", "127.9.0.3", "127.9.0.4", "127.9.0.5"]


def test_a_pod_ip_not_local_in_the_network_namespace_is_added_to_lo_while_held():
    """As in the twin's own network namespace, whose lo has only 127.0.0.1/32 (here a throwaway one)."""
    held = """
import asyncio, json, subprocess
from twin.kube.network import PodNetwork, is_local

def lo():
    return subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout

async def main():
    network = PodNetwork("127.0.2.0/24", node_ip="127.0.2.1")
    before = is_local("127.0.2.2")
    ip = await network.acquire(taken_elsewhere={"127.0.2.2"})
    held = (ip, is_local(ip), f"{ip}/32" in lo())
    await network.release(ip)
    print(json.dumps({"before": before, "held": held, "after": f"{ip}/32" in lo()}))

asyncio.run(main())
"""
    setup = "ip link set lo up && ip addr del 127.0.0.1/8 dev lo && ip addr add 127.0.0.1/32 dev lo"
    done = subprocess.run(["unshare", "--net", "sh", "-c", f'{setup} && exec "$0" -c "$1"', sys.executable, held],
                          capture_output=True, text=True, timeout=30, cwd=nodeagent.PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"before": False, "held": ["127.0.2.3", True, True], "after": False}


def test_pulumi_up_creates_a_deployment_and_the_real_provider_awaits_it(cluster, api, node, namespace, database_url):
    from engine.workspace import Workspace

    try:  # the CLI and the Kubernetes provider plugin, from the engine build (./test builds it)
        installed().need("cli", "kubernetes")
    except EngineUnavailable as exc:
        pytest.skip(f"real engine: {exc}")
    program = f'''
import pulumi
import pulumi_kubernetes as k8s

config = pulumi.Config()
ns = config.require("namespace")
secret = k8s.core.v1.Secret("db", metadata={{"namespace": ns, "name": "bazbii-db"}},
                            string_data={{"DATABASE_URL": config.require_secret("databaseUrl")}})
deployment = k8s.apps.v1.Deployment("api", metadata={{"namespace": ns, "name": "api"}},
                                    spec={json.dumps(api_deployment("1.9.0")["spec"])},
                                    opts=pulumi.ResourceOptions(depends_on=[secret],
                                         custom_timeouts=pulumi.CustomTimeouts(create="120s", update="120s")))
# As the program's: created beside the Deployment, so its Endpoints exist (empty) before the pods are ready.
service = k8s.core.v1.Service("api", metadata={{"namespace": ns, "name": "api"}},
                              spec={json.dumps(node_port_service("api", {"app": "api"})["spec"])})
pulumi.export("readyReplicas", deployment.status.ready_replicas)
pulumi.export("nodePort", service.spec.ports[0].node_port)
'''
    workspace = Workspace.create({
        "Pulumi.yaml": json.dumps({"name": "twin-kube", "runtime": {"name": "python",
                                                                     "options": {"virtualenv": sys.prefix}}}),
        "__main__.py": program,
    }, prefix="bazbii-twin-kube-pulumi-")  # the engine build's CLI and its installed plugins
    # The provider writes the kubeconfig (client key included) to $TMPDIR and never removes it: keep it in here.
    (workspace.root / "tmp").mkdir()
    workspace.extra_env["TMPDIR"] = str(workspace.root / "tmp")
    try:
        workspace.login()
        workspace.stack_init("twin")
        workspace.config_set("twin", "kubernetes:kubeconfig", cluster.kubeconfig.read_text(), secret=True)
        workspace.config_set("twin", "twin-kube:namespace", namespace)
        workspace.config_set("twin", "twin-kube:databaseUrl", database_url, secret=True)
        up = workspace.run("up", "--stack", "twin", "--yes", "--skip-preview", timeout=240)
        # The provider returns the Deployment as its await left it: both replicas ready.
        outputs = workspace.outputs("twin")
        assert outputs["readyReplicas"] == 2, up.output
        assert httpx.get(f"http://{node.ip}:{outputs['nodePort']}/readyz", timeout=5).status_code == 200
        workspace.run("destroy", "--stack", "twin", "--yes", "--skip-preview", timeout=240)
        assert not api.exists(f"/apis/apps/v1/namespaces/{namespace}/deployments/api")
    finally:
        workspace.cleanup()
