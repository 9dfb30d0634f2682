"""The twin's edge serves what the Cloudflare emulator accepted: real HAProxy steering requests over the pools
by the load balancer's weights and the pools' health, real nsd and unbound answering the zone's records
with their (time-scaled) TTLs; changes are applied while requests flow, none of them failing.

Everything runs on 127.0.0.1: the emulator in this process, two origins (small HTTP servers standing for
the gateways behind two tunnels), ``python -m twin.edge`` as a process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dns.resolver
import httpx
import pytest

from tests.twin.test_cloudflare_emulator import ACCOUNT, LBS, MONITORS, POOLS, RECORDS, SECRET, TOKEN, TUNNELS, \
    ZONE, ZONE_NAME, Client, connector_call
from twin.cloudflare import CloudflareEmulator
from twin.edge.render import scaled_ttl

REPO = Path(__file__).resolve().parents[2]
HOST = f"api.{ZONE_NAME}"
TIME_SCALE = 600.0  # a TTL of 1 h is served as 6 s


class Origin:
    """A gateway standing behind a tunnel: answers its name; its health path answers ``health``."""

    def __init__(self, name: str):
        self.name, self.health = name, 200
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                status = origin.health if self.path == "/healthz" else 200
                body = origin.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


class Connectors:
    """The tunnels' cloudflared: each renews its tunnel's connection every 2 s until it stops."""

    def __init__(self, emulator):
        self.emulator, self.live, self.stopping = emulator, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def connect(self, tunnel_id: str, name: str) -> None:
        self.live[tunnel_id] = name
        self._renew(tunnel_id, name)

    def disconnect(self, tunnel_id: str) -> None:
        name = self.live.pop(tunnel_id)
        connector_call(self.emulator, "DELETE", tunnel_id, secret=SECRET, connector=name)

    def _renew(self, tunnel_id: str, name: str) -> None:
        status, _ = connector_call(self.emulator, "POST", tunnel_id, secret=SECRET, connector=name, origin="127.0.0.1")
        assert status == 200

    def _run(self):
        while not self.stopping.wait(2.0):
            for tunnel_id, name in list(self.live.items()):
                self._renew(tunnel_id, name)


@pytest.fixture
def world(tmp_path):
    emulator = CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}).start()
    api = Client(emulator.url)
    origins = {name: Origin(name) for name in ("server1", "server2")}
    connectors = Connectors(emulator)
    monitor = api.ok("POST", MONITORS, {"type": "http", "path": "/healthz", "expected_codes": "200", "interval": 60,
                                        "retries": 1, "header": {"Host": [HOST]}})
    pools, tunnels = {}, {}
    for name, origin in origins.items():
        tunnel = api.ok("POST", TUNNELS, {"name": f"gw-{name}", "config_src": "cloudflare", "tunnel_secret": SECRET})
        api.ok("PUT", f"{TUNNELS}/{tunnel['id']}/configurations", {"config": {"ingress": [
            {"hostname": HOST, "service": f"http://localhost:{origin.port}"}, {"service": "http_status:404"}]}})
        connectors.connect(tunnel["id"], name)
        tunnels[name] = tunnel["id"]
        pools[name] = api.ok("POST", POOLS, {"name": f"bazbii-{name}", "monitor": monitor["id"], "origins": [
            {"name": name, "address": f"{tunnel['id']}.cfargotunnel.com", "header": {"Host": [HOST]}}]})["id"]
    lb = api.ok("POST", LBS, lb_body(pools, {"server1": 0.9, "server2": 0.1}))
    record = api.ok("POST", RECORDS, {"type": "A", "name": "direct", "content": "127.0.0.1", "ttl": 3600})
    token = tmp_path / "token"
    token.write_text(TOKEN)
    log = open(tmp_path / "edge.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "twin.edge", "--cloudflare", emulator.base, "--token-file",
                                str(token), "--zone", ZONE, "--dir", str(tmp_path / "edge"), "--address", "127.0.0.1",
                                "--time-scale", str(TIME_SCALE)], cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                               text=True)
    try:
        line = process.stdout.readline()
        assert line, (tmp_path / "edge.log").read_text()
        ports = json.loads(line)
        yield {"api": api, "emulator": emulator, "origins": origins, "pools": pools, "tunnels": tunnels, "lb": lb,
               "record": record, "connectors": connectors, "ports": ports, "log": tmp_path / "edge.log",
               "process": process}
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        connectors.stopping.set()
        for origin in origins.values():
            origin.stop()
        emulator.stop()


def lb_body(pools: dict, weights: dict) -> dict:
    ids = [pools[name] for name in weights]
    return {"name": HOST, "default_pools": ids, "fallback_pool": ids[0], "steering_policy": "random",
            "random_steering": {"default_weight": 0, "pool_weights": {pools[n]: w for n, w in weights.items()}},
            "proxied": True}


def split(world, requests: int = 600) -> Counter:
    """Which origin answered each of ``requests`` requests to the load balancer (each must succeed)."""
    answered = Counter()
    with httpx.Client(base_url=f"http://{world['ports']['http']}", headers={"Host": HOST}, timeout=5) as client:
        for _ in range(requests):
            response = client.get("/posts")
            assert response.status_code == 200, (response.status_code, response.text)
            answered[response.text] += 1
    return answered


def eventually(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def resolve(world, name: str) -> tuple[str, int]:
    resolver = dns.resolver.Resolver(configure=False)
    host, port = world["ports"]["resolver"].rsplit(":", 1)
    resolver.nameservers, resolver.port, resolver.lifetime = [host], int(port), 3
    answer = resolver.resolve(f"{name}.{ZONE_NAME}", "A")
    return answer[0].address, answer.rrset.ttl


def test_requests_follow_the_load_balancers_weights_and_a_weight_change_applies_without_a_reload(world):
    first = split(world)
    assert 0.84 <= first["server1"] / 600 <= 0.96 and first["server2"] > 0  # 0.9 / 0.1
    pid_before = world["process"].pid
    world["api"].ok("PUT", f"{LBS}/{world['lb']['id']}", lb_body(world["pools"], {"server1": 0.5, "server2": 0.5}))
    eventually(lambda: "weight bound" in world["log"].read_text())
    second = split(world)
    assert 0.40 <= second["server1"] / 600 <= 0.60
    assert "HAProxy reloaded" not in world["log"].read_text() and world["process"].pid == pid_before
    world["api"].ok("PUT", f"{LBS}/{world['lb']['id']}", lb_body(world["pools"], {"server1": 0.0, "server2": 1.0}))
    eventually(lambda: split(world, 50) == Counter({"server2": 50}))


def test_an_unhealthy_pool_gets_nothing_and_comes_back_when_its_monitor_passes(world):
    world["origins"]["server2"].health = 503  # the monitor's check fails; the origin still answers requests
    world["api"].ok("PUT", f"{LBS}/{world['lb']['id']}", lb_body(world["pools"], {"server1": 0.5, "server2": 0.5}))
    eventually(lambda: split(world, 100) == Counter({"server1": 100}), timeout=15)
    world["origins"]["server2"].health = 200
    eventually(lambda: split(world, 100)["server2"] > 20, timeout=15)


def test_a_tunnel_without_a_live_connection_serves_nothing(world):
    world["api"].ok("PUT", f"{LBS}/{world['lb']['id']}", lb_body(world["pools"], {"server1": 0.5, "server2": 0.5}))
    world["connectors"].disconnect(world["tunnels"]["server2"])
    eventually(lambda: "down: tunnel" in world["log"].read_text())
    assert split(world, 100) == Counter({"server1": 100})
    world["connectors"].connect(world["tunnels"]["server2"], "server2")
    eventually(lambda: split(world, 100)["server2"] > 20)


def test_records_are_served_with_their_ttl_over_the_time_scale_and_changes_reach_the_resolver(world):
    assert resolve(world, "direct") == ("127.0.0.1", round(3600 / TIME_SCALE))
    assert resolve(world, "api")[0] == "127.0.0.1"  # the load balancer's hostname answers with the edge
    world["api"].ok("PATCH", f"{RECORDS}/{world['record']['id']}", {"content": "127.0.0.2", "ttl": 300})
    # The resolver holds the old answer for at most the old (scaled) TTL, then asks nsd again.
    assert eventually(lambda: resolve(world, "direct") == ("127.0.0.2", scaled_ttl(300, TIME_SCALE)),
                      timeout=round(3600 / TIME_SCALE) + 10)


def test_a_pool_added_to_the_load_balancer_reloads_haproxy_and_no_request_fails_meanwhile(world):
    failures, retried, stop = [], [], threading.Event()

    def steady():
        # A client as HTTP/1.1 clients are (Go's net/http, browsers, aiohttp as the rehearsal's load): a GET on
        # a kept-alive connection that the old HAProxy closed as it handed over (no byte of an answer) is
        # sent again once, on a new connection (RFC 9110 9.2.2). Anything else, or a second failure, fails.
        with httpx.Client(base_url=f"http://{world['ports']['http']}", headers={"Host": HOST}, timeout=5) as client:
            while not stop.is_set():
                try:
                    try:
                        response = client.get("/posts")
                    except httpx.RemoteProtocolError:
                        retried.append(1)
                        response = client.get("/posts")
                except httpx.HTTPError as exc:  # never lost in the thread: the test reads it
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(response.status_code)

    load = threading.Thread(target=steady)
    load.start()
    try:
        single = {"server1": world["pools"]["server1"]}
        world["api"].ok("PUT", f"{LBS}/{world['lb']['id']}", lb_body(single, {"server1": 1.0}))
        eventually(lambda: "HAProxy reloaded" in world["log"].read_text())
        world["api"].ok("PUT", f"{LBS}/{world['lb']['id']}", lb_body(world["pools"], {"server1": 0.5, "server2": 0.5}))
        eventually(lambda: world["log"].read_text().count("HAProxy reloaded") >= 2)
        time.sleep(1.0)
    finally:
        stop.set()
        load.join()
    assert failures == [], f"{len(failures)} failed ({len(retried)} sent again after a closed keep-alive)"
    assert split(world, 200)["server2"] > 40
