"""Our pulumi-resource-cloudflare under the real pulumi CLI, against the twin's Cloudflare emulator.

A small Python program (pulumi_cloudflare, as the bazbii program uses it: a monitor, two pools, a
load balancer with random-steering weights, a DNS record, a remotely managed tunnel and its
ingress configuration) is previewed, deployed, changed and destroyed by the real engine; each step
is checked in the emulator's state. The plugin is the one the engine build installed (built from this
tree's engine/go).

The tests of this module share one deployed stack and run in order: deploy, move the weights,
refuse a weight Cloudflare refuses, destroy.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

from engine.build import BuildFailed, Installed, engine_go_module
from engine.workspace import Workspace
from tests.engine.conftest import need
from twin.cloudflare import CloudflareEmulator

# Deploying and destroying take longer than the suite's default timeout.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "3f1c2b9a7d5e4c6b8a0f1e2d3c4b5a69"
ZONE = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"
ZONE_NAME = "bazbii.example"
TOKEN = "engine-test-token-0123456789abcdefghijklmno"  # 43 characters: what the provider's validator takes
TUNNEL_SECRET = "dHdpbi10dW5uZWwtc2VjcmV0LXR3aW4tdHVubmVsLXNlY3JldA=="
STACK = "twin"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how a secret value is marked in an exported state

PROGRAM = textwrap.dedent('''
    """The bazbii program's Cloudflare shapes (components/weighted_traffic.py, dns_records.py, gateway.py)."""
    import pulumi
    import pulumi_cloudflare as cloudflare

    twin = pulumi.Config("twin")
    account, zone_id, zone = twin.require("accountId"), twin.require("zoneId"), twin.require("zone")
    weights = twin.require_object("weights")
    origin_weight = float(twin.get("originWeight") or 1)
    hostname = f"api.{zone}"

    tunnel = cloudflare.ZeroTrustTunnelCloudflared(
        "gateway-server1-tunnel", account_id=account, name="bazbii-gateway-server1", config_src="cloudflare",
        tunnel_secret=twin.require_secret("tunnelSecret"))
    config = cloudflare.ZeroTrustTunnelCloudflaredConfig(
        "gateway-server1-config", account_id=account, tunnel_id=tunnel.id,
        config=cloudflare.ZeroTrustTunnelCloudflaredConfigConfigArgs(ingresses=[
            cloudflare.ZeroTrustTunnelCloudflaredConfigConfigIngressArgs(hostname=hostname,
                                                                         service="http://localhost:8080"),
            cloudflare.ZeroTrustTunnelCloudflaredConfigConfigIngressArgs(service="http_status:404"),
        ]))
    monitor = cloudflare.LoadBalancerMonitor(
        "traffic-monitor", account_id=account, type="https", method="GET", path="/healthz", expected_codes="200",
        interval=60, timeout=5, retries=2, header={"Host": [hostname]}, follow_redirects=False,
        allow_insecure=False, description=f"bazbii gateway health ({hostname}/healthz)")
    origins = {"server1": tunnel.id.apply(lambda i: f"{i}.cfargotunnel.com"),
               "server2": "server2-tunnel.cfargotunnel.com"}
    pools = {
        name: cloudflare.LoadBalancerPool(
            f"traffic-{name}", account_id=account, name=f"bazbii-{name}", description=f"gateway on {name}",
            enabled=True, minimum_origins=1, monitor=monitor.id,
            origins=[cloudflare.LoadBalancerPoolOriginArgs(
                name=name, address=origins[name], enabled=True, weight=origin_weight,
                header=cloudflare.LoadBalancerPoolOriginHeaderArgs(hosts=[hostname]))])
        for name in ("server1", "server2")
    }
    ordered = sorted(pools, key=lambda n: (-weights[n], n))
    pool_weights = pulumi.Output.all(*[pools[n].id for n in ordered]).apply(
        lambda ids: {pool_id: weights[n] for pool_id, n in zip(ids, ordered)})
    lb = cloudflare.LoadBalancer(
        "traffic-lb", zone_id=zone_id, name=hostname, description="bazbii API", enabled=True, proxied=True,
        steering_policy="random",
        random_steering=cloudflare.LoadBalancerRandomSteeringArgs(default_weight=0, pool_weights=pool_weights),
        default_pools=[pools[n].id for n in ordered], fallback_pool=pools[ordered[0]].id, session_affinity="none")
    record = cloudflare.DnsRecord(
        "dns-direct", zone_id=zone_id, name=f"direct.{zone}", type="A", content="203.0.113.11", ttl=3600,
        proxied=False, comment="managed by the bazbii Pulumi stack (dns track)")

    pulumi.export("tunnelId", tunnel.id)
    pulumi.export("monitorId", monitor.id)
    pulumi.export("poolIds", {name: pool.id for name, pool in pools.items()})
    pulumi.export("loadBalancerId", lb.id)
    pulumi.export("recordId", record.id)
    pulumi.export("recordName", record.name)
''')


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def cloudflare_engine(engine: Installed) -> Installed:
    """The engine build's CLI with its installed cloudflare plugin (what a user's ``pulumi up`` runs)."""
    need(engine, "cloudflare")
    return engine


@pytest.fixture(scope="session")
def plugin_module(cloudflare_engine, tmp_path_factory) -> Path:
    """engine/go with the pinned requires, as the engine build prepares it (for the plugin's Go tests)."""
    try:
        return engine_go_module(tmp_path_factory.mktemp("cloudflare-plugin"))
    except BuildFailed as exc:
        pytest.fail(f"preparing engine/go for go test: {exc}")


def go(module: Path, *args: str) -> str:
    done = subprocess.run(["go", *args], cwd=module, env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"go {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def emulator():
    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}) as running:
        yield running


@pytest.fixture(scope="module")
def workspace(cloudflare_engine):
    files = {
        "Pulumi.yaml": f"name: cloudflare-twin\nruntime:\n  name: python\n  options:\n"
                       f"    virtualenv: {REPO / 'venv'}\n",
        "__main__.py": PROGRAM,
    }
    ws = Workspace.create(files, prefix="bazbii-cloudflare-engine-")
    ws.extra_env["PULUMI_IGNORE_AMBIENT_PLUGINS"] = "true"  # only the build's installed plugin
    try:
        ws.login()
        yield ws
    finally:
        ws.cleanup()


def configure(ws: Workspace, stack: str, emulator: CloudflareEmulator, weights: dict, **extra: str) -> None:
    ws.config_set(stack, "cloudflare:baseUrl", emulator.url)
    ws.config_set(stack, "cloudflare:apiToken", TOKEN, secret=True)
    ws.config_set(stack, "twin:accountId", ACCOUNT)
    ws.config_set(stack, "twin:zoneId", ZONE)
    ws.config_set(stack, "twin:zone", ZONE_NAME)
    ws.config_set(stack, "twin:tunnelSecret", TUNNEL_SECRET, secret=True)
    ws.config_set(stack, "twin:weights", json.dumps(weights))
    for key, value in extra.items():
        ws.config_set(stack, f"twin:{key}", value)


def objects(emulator: CloudflareEmulator, kind: str) -> dict:
    return {object_id: record["data"] for object_id, record in emulator.state()["objects"][kind].items()}


def live(emulator: CloudflareEmulator, kind: str) -> dict:
    return {i: o for i, o in objects(emulator, kind).items() if not o.get("deleted_at")}


def preview_steps(ws: Workspace, stack: str) -> dict:
    """Cloudflare resource name -> (the preview's operation on it, the changed property paths);
    resources the preview leaves alone are not listed."""
    document = ws.run("preview", "--stack", stack, "--json", "--non-interactive").json()
    steps = {}
    for step in document.get("steps", []):
        resource_type, name = step["urn"].split("::")[-2:]
        if resource_type.startswith("cloudflare:"):
            steps[name] = (step["op"], sorted(step.get("diffReasons") or []))
    return steps


@pytest.fixture(scope="module")
def deployed(workspace, emulator):
    """The stack previewed (no API call may happen) and then deployed."""
    workspace.stack_init(STACK)
    configure(workspace, STACK, emulator, {"server1": 0.9, "server2": 0.1})
    steps = preview_steps(workspace, STACK)
    preview_calls = emulator.requests
    workspace.run("up", "--stack", STACK, "--yes", "--non-interactive")
    return {"preview_steps": steps, "preview_calls": preview_calls, "outputs": workspace.outputs(STACK)}


# ----------------------------------------------------------------------------------- the plugin alone
def test_the_plugins_own_go_tests_pass(plugin_module):
    """Check, Diff, the JSON mapping, the configuration and the client, each case on its own."""
    assert "ok" in go(plugin_module, "test", "./cmd/pulumi-resource-cloudflare")


# ----------------------------------------------------------------------------------- the deployment
def test_preview_plans_every_resource_without_calling_the_api(deployed):
    assert deployed["preview_calls"] == []
    assert {name for name, (op, _) in deployed["preview_steps"].items() if op == "create"} == {
        "gateway-server1-tunnel", "gateway-server1-config", "traffic-monitor", "traffic-server1", "traffic-server2",
        "traffic-lb", "dns-direct"}


def test_up_leaves_in_cloudflare_what_the_program_declares(deployed, emulator):
    outputs = deployed["outputs"]
    pool_ids = outputs["poolIds"]
    tunnel_id = outputs["tunnelId"]

    (monitor,) = objects(emulator, "monitor").values()
    assert monitor["id"] == outputs["monitorId"]
    assert (monitor["type"], monitor["path"], monitor["expected_codes"], monitor["header"]) == (
        "https", "/healthz", "200", {"Host": [f"api.{ZONE_NAME}"]})
    assert (monitor["interval"], monitor["timeout"], monitor["retries"]) == (60, 5, 2)

    pools = objects(emulator, "pool")
    assert set(pools) == set(pool_ids.values())
    server1 = pools[pool_ids["server1"]]
    assert (server1["name"], server1["monitor"], server1["minimum_origins"]) == ("bazbii-server1", monitor["id"], 1)
    assert server1["origins"] == [{
        "name": "server1", "address": f"{tunnel_id}.cfargotunnel.com", "enabled": True, "weight": 1,
        "header": {"Host": [f"api.{ZONE_NAME}"]}, "virtual_network_id": None, "port": 0, "flatten_cname": True}]

    (lb,) = objects(emulator, "load_balancer").values()
    assert lb["id"] == outputs["loadBalancerId"]
    assert lb["random_steering"] == {"default_weight": 0,
                                     "pool_weights": {pool_ids["server1"]: 0.9, pool_ids["server2"]: 0.1}}
    assert (lb["name"], lb["steering_policy"], lb["proxied"], lb["session_affinity"]) == (
        f"api.{ZONE_NAME}", "random", True, "none")
    assert lb["default_pools"] == [pool_ids["server1"], pool_ids["server2"]]
    assert lb["fallback_pool"] == pool_ids["server1"]

    (record,) = objects(emulator, "dns_record").values()
    assert (record["id"], record["name"], record["type"], record["content"], record["ttl"], record["proxied"]) == (
        outputs["recordId"], f"direct.{ZONE_NAME}", "A", "203.0.113.11", 3600, False)
    assert outputs["recordName"] == f"direct.{ZONE_NAME}"

    (tunnel,) = objects(emulator, "tunnel").values()
    assert (tunnel["id"], tunnel["name"], tunnel["config_src"]) == (tunnel_id, "bazbii-gateway-server1", "cloudflare")
    assert emulator.state()["objects"]["tunnel"][tunnel_id]["private"]["tunnel_secret"] == TUNNEL_SECRET
    (configuration,) = objects(emulator, "tunnel_configuration").values()
    assert configuration["tunnel_id"] == tunnel_id
    assert configuration["config"] == {"ingress": [
        {"hostname": f"api.{ZONE_NAME}", "service": "http://localhost:8080"}, {"service": "http_status:404"}]}


def test_secrets_stay_secret_in_the_state(deployed, workspace):
    deployment = workspace.run("stack", "export", "--stack", STACK).json()["deployment"]
    (tunnel,) = [r for r in deployment["resources"]
                 if r["type"] == "cloudflare:index/zeroTrustTunnelCloudflared:ZeroTrustTunnelCloudflared"]
    assert tunnel["outputs"]["tunnelSecret"].get(SECRET_SIG) and TUNNEL_SECRET not in json.dumps(deployment)
    (provider,) = [r for r in deployment["resources"] if r["type"] == "pulumi:providers:cloudflare"]
    assert TOKEN not in json.dumps(provider)


def test_a_second_up_changes_nothing(deployed, workspace, emulator):
    before = emulator.state()["objects"]
    steps = preview_steps(workspace, STACK)
    assert steps == {}
    workspace.run("up", "--stack", STACK, "--yes", "--non-interactive")
    assert emulator.state()["objects"] == before


def test_changing_a_pool_weight_updates_the_load_balancer_in_place(deployed, workspace, emulator):
    (lb_before,) = objects(emulator, "load_balancer").values()
    pools_before = objects(emulator, "pool")
    configure(workspace, STACK, emulator, {"server1": 0.5, "server2": 0.5})

    calls = len(emulator.requests)
    steps = preview_steps(workspace, STACK)
    shown = workspace.run("preview", "--stack", STACK, "--diff", "--non-interactive").output
    assert len(emulator.requests) == calls  # the previews' Diff called nothing
    assert steps == {"traffic-lb": ("update", ["randomSteering"])}
    pool_ids = deployed["outputs"]["poolIds"]
    assert f"~ {pool_ids['server1']}: 0.9 => 0.5" in shown and f"~ {pool_ids['server2']}: 0.1 => 0.5" in shown

    workspace.run("up", "--stack", STACK, "--yes", "--non-interactive")
    (lb,) = objects(emulator, "load_balancer").values()
    assert lb["id"] == lb_before["id"] and lb["created_on"] == lb_before["created_on"]
    assert lb["random_steering"]["pool_weights"] == {pool_ids["server1"]: 0.5, pool_ids["server2"]: 0.5}
    assert objects(emulator, "pool") == pools_before


def test_a_weight_cloudflare_refuses_fails_the_update_naming_it(deployed, workspace, emulator):
    (lb_before,) = objects(emulator, "load_balancer").values()
    configure(workspace, STACK, emulator, {"server1": 1.5, "server2": 0.5})
    try:
        result = workspace.run("up", "--stack", STACK, "--yes", "--non-interactive", check=False)
    finally:
        configure(workspace, STACK, emulator, {"server1": 0.5, "server2": 0.5})  # back to what is deployed
    assert result.returncode != 0
    assert "random_steering.pool_weights" in result.output and "1.5 is not in range [0, 1]" in result.output
    assert "[1002]" in result.output and "traffic-lb" in result.output
    (lb,) = objects(emulator, "load_balancer").values()
    assert lb == lb_before  # Cloudflare refused: nothing changed


def test_check_refuses_an_origin_weight_outside_its_range_before_any_api_call(workspace, emulator):
    stack = "check"
    workspace.stack_init(stack)
    configure(workspace, stack, emulator, {"server1": 0.9, "server2": 0.1}, originWeight="1.5")
    calls = len(emulator.requests)
    result = workspace.run("preview", "--stack", stack, "--non-interactive", check=False)
    assert result.returncode != 0
    assert "origins[0].weight" in result.output and "1.5 is not between 0 and 1" in result.output
    assert len(emulator.requests) == calls


def test_refresh_finds_drift_and_up_repairs_it(deployed, workspace, emulator):
    (lb,) = objects(emulator, "load_balancer").values()
    pool_ids = deployed["outputs"]["poolIds"]
    changed = {**lb, "random_steering": {"default_weight": 0, "pool_weights": {pool_ids["server1"]: 1,
                                                                                pool_ids["server2"]: 0}}}
    for read_only in ("id", "created_on", "modified_on", "zone_name"):
        changed.pop(read_only)
    status, _ = api_call(emulator, "PUT", f"zones/{ZONE}/load_balancers/{lb['id']}", changed)  # "in the dashboard"
    assert status == 200

    workspace.run("refresh", "--stack", STACK, "--yes", "--non-interactive")
    assert preview_steps(workspace, STACK) == {"traffic-lb": ("update", ["randomSteering"])}
    workspace.run("up", "--stack", STACK, "--yes", "--non-interactive")
    (lb,) = objects(emulator, "load_balancer").values()
    assert lb["random_steering"]["pool_weights"] == {pool_ids["server1"]: 0.5, pool_ids["server2"]: 0.5}


def api_call(emulator: CloudflareEmulator, method: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{emulator.url}/{path}", method=method, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.load(response)


def test_destroy_removes_everything(deployed, workspace, emulator):
    workspace.run("destroy", "--stack", STACK, "--yes", "--non-interactive")
    for kind in ("monitor", "pool", "load_balancer", "dns_record", "tunnel_configuration"):
        assert objects(emulator, kind) == {}, kind
    assert live(emulator, "tunnel") == {}
    (tunnel,) = objects(emulator, "tunnel").values()
    assert tunnel["deleted_at"]  # Cloudflare keeps a deleted tunnel's tombstone

