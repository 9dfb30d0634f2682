"""The twin's Cloudflare API emulator, over plain HTTP: CRUD of every kind, each refusal with
Cloudflare's status and code, authentication, state kept across a restart, two emulators at once,
the observer hook and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from twin.cloudflare import Change, CloudflareEmulator, ConfigurationError

ACCOUNT = "3f1c2b9a7d5e4c6b8a0f1e2d3c4b5a69"
ZONE = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"
ZONE_NAME = "bazbii.example"
TOKEN = "twin-test-token-0123456789abcdefghijklmnop"
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="  # base64 of 35 bytes
REPO = Path(__file__).resolve().parents[2]


class Client:
    def __init__(self, base: str, token: str | None = TOKEN):
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body=None, *, headers: dict | None = None):
        sent = {"Content-Type": "application/json"}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/{path}", method=method, data=data, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def ok(self, method: str, path: str, body=None) -> dict:
        status, envelope = self.call(method, path, body)
        assert status == 200 and envelope["success"], (status, envelope)
        return envelope["result"]

    def refused(self, method: str, path: str, body=None) -> tuple[int, dict]:
        status, envelope = self.call(method, path, body)
        assert status >= 400 and envelope["success"] is False and envelope["result"] is None, (status, envelope)
        return status, envelope["errors"][0]


@pytest.fixture
def emulator():
    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}) as running:
        yield running


@pytest.fixture
def api(emulator) -> Client:
    return Client(emulator.url)


MONITORS = f"accounts/{ACCOUNT}/load_balancers/monitors"
POOLS = f"accounts/{ACCOUNT}/load_balancers/pools"
LBS = f"zones/{ZONE}/load_balancers"
RECORDS = f"zones/{ZONE}/dns_records"
TUNNELS = f"accounts/{ACCOUNT}/cfd_tunnel"


def monitor(api: Client, **extra) -> dict:
    return api.ok("POST", MONITORS, {"type": "https", "path": "/healthz", "expected_codes": "200",
                                     "header": {"Host": [f"api.{ZONE_NAME}"]}, **extra})


def pool(api: Client, name: str, monitor_id: str | None = None, **extra) -> dict:
    body = {"name": name, "origins": [{"name": name, "address": f"{name}.cfargotunnel.com", "weight": 1,
                                       "header": {"Host": [f"api.{ZONE_NAME}"]}}], **extra}
    if monitor_id:
        body["monitor"] = monitor_id
    return api.ok("POST", POOLS, body)


def load_balancer_body(pools: dict, **extra) -> dict:
    ids = list(pools)
    return {"name": f"api.{ZONE_NAME}", "default_pools": ids, "fallback_pool": ids[0], "steering_policy": "random",
            "random_steering": {"default_weight": 0, "pool_weights": pools}, "proxied": True, **extra}


# ----------------------------------------------------------------------------------- CRUD
def test_monitor_crud_applies_defaults_and_put_replaces_the_whole_object(api):
    created = monitor(api, description="gateway health", interval=30)
    assert len(created["id"]) == 32 and created["created_on"] == created["modified_on"]
    assert (created["type"], created["method"], created["timeout"], created["retries"]) == ("https", "GET", 5, 2)
    assert api.ok("GET", f"{MONITORS}/{created['id']}") == created
    assert [m["id"] for m in api.ok("GET", MONITORS)] == [created["id"]]

    patched = api.ok("PATCH", f"{MONITORS}/{created['id']}", {"retries": 4})
    assert (patched["retries"], patched["interval"], patched["description"]) == (4, 30, "gateway health")
    replaced = api.ok("PUT", f"{MONITORS}/{created['id']}", {"type": "https", "path": "/ready"})
    assert (replaced["path"], replaced["interval"], replaced["description"], replaced["retries"]) == (
        "/ready", 60, "", 2)
    assert replaced["created_on"] == created["created_on"]

    assert api.ok("DELETE", f"{MONITORS}/{created['id']}") == {"id": created["id"]}
    status, error = api.refused("GET", f"{MONITORS}/{created['id']}")
    assert (status, error["code"]) == (404, 1003)


def test_pool_crud_keeps_origins_and_their_defaults(api):
    checker = monitor(api)
    created = pool(api, "bazbii-server1", checker["id"], description="gateway on server1")
    origin = created["origins"][0]
    assert (origin["weight"], origin["enabled"], origin["header"]) == (1, True, {"Host": [f"api.{ZONE_NAME}"]})
    assert (created["monitor"], created["minimum_origins"], created["enabled"]) == (checker["id"], 1, True)

    updated = api.ok("PUT", f"{POOLS}/{created['id']}", {
        "name": "bazbii-server1", "monitor": checker["id"],
        "origins": [{"name": "server1", "address": "new.cfargotunnel.com", "weight": 0.5}]})
    assert updated["origins"][0]["address"] == "new.cfargotunnel.com" and updated["origins"][0]["weight"] == 0.5
    assert updated["description"] == ""  # PUT: not sent, back to the default

    disabled = api.ok("PATCH", f"{POOLS}/{created['id']}", {"enabled": False})
    assert disabled["enabled"] is False and disabled["disabled_at"] and disabled["origins"] == updated["origins"]
    api.ok("DELETE", f"{POOLS}/{created['id']}")
    assert api.ok("GET", POOLS) == []


def test_load_balancer_crud_moves_weights_in_place(api):
    checker = monitor(api)
    one, two = pool(api, "bazbii-server1", checker["id"]), pool(api, "bazbii-server2", checker["id"])
    created = api.ok("POST", LBS, load_balancer_body({one["id"]: 0.9, two["id"]: 0.1}))
    assert created["random_steering"] == {"default_weight": 0, "pool_weights": {one["id"]: 0.9, two["id"]: 0.1}}
    assert (created["zone_name"], created["proxied"], created["session_affinity"]) == (ZONE_NAME, True, "none")

    moved = api.ok("PUT", f"{LBS}/{created['id']}", load_balancer_body({one["id"]: 0.5, two["id"]: 0.5}))
    assert moved["id"] == created["id"]
    assert api.ok("GET", f"{LBS}/{created['id']}")["random_steering"]["pool_weights"] == {one["id"]: 0.5,
                                                                                           two["id"]: 0.5}
    references = api.ok("GET", f"{POOLS}/{one['id']}/references")
    assert {"reference_type": "referrer", "resource_id": created["id"], "resource_name": f"api.{ZONE_NAME}",
            "resource_type": "load_balancer"} in references
    api.ok("DELETE", f"{LBS}/{created['id']}")
    assert api.ok("GET", LBS) == []
    api.ok("DELETE", f"{POOLS}/{one['id']}")  # no longer referenced


def test_dns_record_crud_stores_full_names(api):
    created = api.ok("POST", RECORDS, {"name": "direct", "type": "A", "content": "203.0.113.11", "ttl": 3600,
                                       "proxied": False, "comment": "managed"})
    assert (created["name"], created["ttl"], created["proxiable"], created["zone_id"]) == (
        f"direct.{ZONE_NAME}", 3600, True, ZONE)
    assert created["comment_modified_on"]
    lowered = api.ok("PUT", f"{RECORDS}/{created['id']}", {"name": f"direct.{ZONE_NAME}", "type": "A",
                                                            "content": "203.0.113.11", "ttl": 300})
    assert lowered["ttl"] == 300 and lowered["comment"] is None
    switched = api.ok("PATCH", f"{RECORDS}/{created['id']}", {"content": "203.0.113.12"})
    assert (switched["content"], switched["ttl"]) == ("203.0.113.12", 300)
    assert [r["id"] for r in api.ok("GET", f"{RECORDS}?name=direct.{ZONE_NAME}&type=A")] == [created["id"]]
    assert api.ok("GET", f"{RECORDS}?type=CNAME") == []
    api.ok("DELETE", f"{RECORDS}/{created['id']}")
    status, error = api.refused("GET", f"{RECORDS}/{created['id']}")
    assert (status, error["code"]) == (404, 81044)


def test_tunnel_and_configuration_crud(api, emulator):
    tunnel = api.ok("POST", TUNNELS, {"name": "bazbii-gateway-server1", "config_src": "cloudflare",
                                      "tunnel_secret": SECRET})
    assert len(tunnel["id"]) == 36 and tunnel["id"].count("-") == 4  # a UUID
    assert (tunnel["remote_config"], tunnel["status"], tunnel["deleted_at"]) == (True, "inactive", None)
    assert "tunnel_secret" not in tunnel  # the API never returns it...
    assert emulator.state()["objects"]["tunnel"][tunnel["id"]]["private"] == {"tunnel_secret": SECRET}  # ...but has it
    renamed = api.ok("PATCH", f"{TUNNELS}/{tunnel['id']}", {"name": "bazbii-gateway-s1"})
    assert renamed["name"] == "bazbii-gateway-s1"

    path = f"{TUNNELS}/{tunnel['id']}/configurations"
    assert api.ok("GET", path)["version"] == 0
    ingress = [{"hostname": f"api.{ZONE_NAME}", "service": "http://localhost:8080"}, {"service": "http_status:404"}]
    first = api.ok("PUT", path, {"config": {"ingress": ingress}})
    second = api.ok("PUT", path, {"config": {"ingress": ingress[1:]}})
    assert (first["version"], second["version"]) == (1, 2)
    assert api.ok("GET", path)["config"] == {"ingress": ingress[1:]}

    deleted = api.ok("DELETE", f"{TUNNELS}/{tunnel['id']}")
    assert deleted["deleted_at"]
    assert api.ok("GET", f"{TUNNELS}/{tunnel['id']}")["deleted_at"] == deleted["deleted_at"]  # a tombstone
    assert api.ok("GET", f"{TUNNELS}?is_deleted=false") == []
    status, error = api.refused("GET", path)
    assert (status, error["code"]) == (404, 1003)
    assert emulator.state()["objects"]["tunnel_configuration"] == {}


# ----------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("path, body, field", [
    (MONITORS, {"type": "https", "colour": "blue"}, "colour"),
    (POOLS, {"name": "p", "origins": [{"address": "a.example", "wieght": 1}]}, "origins[0].wieght"),
    (RECORDS, {"name": "x", "type": "A", "content": "192.0.2.1", "ttl": 1, "proxy": True}, "proxy"),
    (TUNNELS, {"name": "t", "secret": SECRET}, "secret"),
])
def test_unknown_fields_are_refused_naming_them(api, path, body, field):
    status, error = api.refused("POST", path, body)
    assert status == 400 and f"{field}: unknown field" in error["message"]


def test_unknown_configuration_field_is_refused(api):
    tunnel = api.ok("POST", TUNNELS, {"name": "t", "config_src": "cloudflare"})
    status, error = api.refused("PUT", f"{TUNNELS}/{tunnel['id']}/configurations",
                                {"config": {"ingress": [{"service": "http_status:404", "port": 80}]}})
    assert (status, error["code"]) == (400, 1056) and "ingress[0].port: unknown field" in error["message"]


def test_origin_weight_outside_0_to_1_is_refused(api):
    status, error = api.refused("POST", POOLS, {"name": "p", "origins": [{"address": "a.example", "weight": 1.5}]})
    assert (status, error["code"]) == (400, 1002)
    assert error["message"] == "origins[0].weight: 1.5 is not in range [0, 1]: validation failed"


@pytest.mark.parametrize("steering, where", [
    (lambda pid: {"default_weight": 0, "pool_weights": {pid: 1.5}}, "random_steering.pool_weights."),
    (lambda pid: {"default_weight": 0, "pool_weights": {pid: -0.1}}, "random_steering.pool_weights."),
    (lambda pid: {"default_weight": 1.2}, "random_steering.default_weight"),
    (lambda pid: {"default_weight": -1}, "random_steering.default_weight"),
])
def test_steering_weights_outside_0_to_1_are_refused(api, steering, where):
    target = pool(api, "p1")
    body = load_balancer_body({target["id"]: 1}) | {"random_steering": steering(target["id"])}
    status, error = api.refused("POST", LBS, body)
    assert (status, error["code"]) == (400, 1002)
    assert where in error["message"] and "not in range [0, 1]" in error["message"]
    assert api.ok("GET", LBS) == []


@pytest.mark.parametrize("mutate, where", [
    (lambda body, ghost: body | {"default_pools": [ghost]}, "default_pools[0]"),
    (lambda body, ghost: body | {"fallback_pool": ghost}, "fallback_pool"),
    (lambda body, ghost: body | {"random_steering": {"pool_weights": {ghost: 0.5}}}, "random_steering.pool_weights"),
    (lambda body, ghost: body | {"region_pools": {"WEU": [ghost]}}, "region_pools.WEU"),
])
def test_load_balancer_naming_a_missing_pool_is_refused(api, mutate, where):
    target = pool(api, "p1")
    ghost = "0" * 32
    status, error = api.refused("POST", LBS, mutate(load_balancer_body({target["id"]: 1}), ghost))
    assert (status, error["code"]) == (400, 1002)
    assert error["message"] == f"{where}: pool {ghost} not found: validation failed"


def test_pool_naming_a_missing_monitor_is_refused(api):
    status, error = api.refused("POST", POOLS, {"name": "p", "monitor": "f" * 32,
                                                "origins": [{"address": "a.example"}]})
    assert (status, error["code"]) == (400, 1002) and f"monitor {'f' * 32} not found" in error["message"]


def test_pool_without_a_monitor_is_accepted_as_cloudflare_does(api):
    unmonitored = pool(api, "p1")
    assert unmonitored["monitor"] is None


@pytest.mark.parametrize("body, message", [
    ({"name": "p", "origins": []}, "the origin list length must be in range [1, 1]"),
    ({"name": "p", "origins": [{"name": "o"}]}, "origins[0].address is required"),
    ({"name": "has space", "origins": [{"address": "a.example"}]}, "may only contain alphanumeric"),
    ({"name": "p", "origins": [{"address": "a.example"}], "latitude": 10}, "latitude and longitude"),
])
def test_malformed_pools_are_refused(api, body, message):
    status, error = api.refused("POST", POOLS, body)
    assert (status, error["code"]) == (400, 1002) and message in error["message"]


def test_deleting_a_monitor_a_pool_uses_is_refused(api):
    checker = monitor(api)
    pool(api, "p1", checker["id"])
    status, error = api.refused("DELETE", f"{MONITORS}/{checker['id']}")
    assert (status, error) == (412, {"code": 1005,
                                     "message": "This object is referenced by other objects, delete them first."})
    assert api.ok("GET", f"{MONITORS}/{checker['id']}")["id"] == checker["id"]


def test_deleting_a_pool_a_load_balancer_uses_is_refused(api):
    one, two = pool(api, "p1"), pool(api, "p2")
    api.ok("POST", LBS, load_balancer_body({one["id"]: 1}) | {"default_pools": [one["id"]],
                                                              "random_steering": {"pool_weights": {two["id"]: 0}}})
    for target in (one, two):  # named in default_pools / fallback_pool, and only in pool_weights
        status, error = api.refused("DELETE", f"{POOLS}/{target['id']}")
        assert (status, error["code"]) == (412, 1005)


NOT_IPV4 = "Content for A record must be a valid IPv4 address."


@pytest.mark.parametrize("body, code, message", [
    ({"name": "lb", "type": "A", "content": "203.0.113.11", "ttl": 300, "proxied": True}, 9021,
     "Proxied records always use TTL 1"),
    ({"name": "lb", "type": "A", "content": "203.0.113.11", "ttl": 30}, 9021, "Must be between 60 and 86400"),
    ({"name": "lb", "type": "A", "content": "203.0.113.11", "ttl": 86401}, 9021, "Must be between 60 and 86400"),
    ({"name": "lb", "type": "A", "content": "2001:db8::1", "ttl": 1}, 9005, NOT_IPV4),
    ({"name": "lb", "type": "A", "content": "203.0.113", "ttl": 1}, 9005, NOT_IPV4),
    ({"name": "www.other.example", "type": "A", "content": "203.0.113.11", "ttl": 1}, 9000, "DNS name is invalid"),
    ({"name": "lb", "type": "TXT", "content": "hello", "ttl": 1, "proxied": True}, 9004, "cannot be proxied"),
])
def test_dns_records_cloudflare_refuses_are_refused(api, body, code, message):
    status, error = api.refused("POST", RECORDS, body)
    assert (status, error["code"]) == (400, code) and message in error["message"]
    assert api.ok("GET", RECORDS) == []


def test_dns_name_conflicts_are_refused(api):
    api.ok("POST", RECORDS, {"name": "www", "type": "A", "content": "203.0.113.11", "ttl": 1})
    identical = api.refused("POST", RECORDS, {"name": "www", "type": "A", "content": "203.0.113.11", "ttl": 1})
    cname = api.refused("POST", RECORDS, {"name": "www", "type": "CNAME", "content": "x.example", "ttl": 1})
    assert (identical[1]["code"], cname[1]["code"]) == (81058, 81053)
    api.ok("POST", RECORDS, {"name": "www", "type": "A", "content": "203.0.113.12", "ttl": 1})  # round robin is fine


@pytest.mark.parametrize("ingress, reason", [
    ([{"hostname": f"api.{ZONE_NAME}", "service": "http://localhost:8080"}],
     "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"),
    ([{"service": "http://localhost:8080", "path": "/api"}],
     "The last ingress rule must match all URLs (i.e. it should not have a hostname or path filter)"),
    ([], "The config file doesn't contain any ingress rules"),
    ([{"hostname": f"api.{ZONE_NAME}:443", "service": "http://localhost:8080"}, {"service": "http_status:404"}],
     "Hostname cannot contain a port"),
    ([{"service": "ftp://localhost"}], "is not a service cloudflared can run"),
])
def test_tunnel_configurations_cloudflared_refuses_are_refused(api, ingress, reason):
    tunnel = api.ok("POST", TUNNELS, {"name": "t", "config_src": "cloudflare"})
    status, error = api.refused("PUT", f"{TUNNELS}/{tunnel['id']}/configurations", {"config": {"ingress": ingress}})
    assert (status, error["code"]) == (400, 1056)
    assert error["message"].startswith("Bad Configuration: Validation failed: ") and reason in error["message"]
    assert api.ok("GET", f"{TUNNELS}/{tunnel['id']}/configurations")["version"] == 0


def test_tunnel_secret_and_duplicate_names_are_refused(api):
    status, error = api.refused("POST", TUNNELS, {"name": "t", "tunnel_secret": "c2hvcnQ="})
    assert (status, error["code"]) == (400, 1001) and "at least 32 bytes" in error["message"]
    api.ok("POST", TUNNELS, {"name": "t"})
    status, error = api.refused("POST", TUNNELS, {"name": "t"})
    assert (status, error["code"]) == (409, 1013)


def test_malformed_json_is_refused(api, emulator):
    request = urllib.request.Request(f"{emulator.url}/{MONITORS}", method="POST", data=b"{not json",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400 and json.load(raised.value)["errors"][0]["code"] == 6007


# ----------------------------------------------------------------------------------- authentication
@pytest.mark.parametrize("headers, status, code, chained", [
    ({}, 400, 6003, 6103),
    ({"Authorization": f"Token {TOKEN}"}, 400, 6003, 6111),
    ({"Authorization": "Bearer wrong-token-0123456789abcdefghijklmnopq"}, 403, 10000, None),
])
def test_requests_without_the_token_are_refused(emulator, headers, status, code, chained):
    client = Client(emulator.url, token=None)
    got, envelope = client.call("GET", MONITORS, headers=headers)
    error = envelope["errors"][0]
    assert (got, error["code"]) == (status, code)
    assert (error.get("error_chain") or [{}])[0].get("code") == chained
    assert emulator.state()["objects"]["monitor"] == {}


def test_refused_token_changes_nothing(emulator):
    client = Client(emulator.url, token="wrong-token-0123456789abcdefghijklmnopq")
    status, _ = client.call("POST", MONITORS, {"type": "http"})
    assert status == 403 and emulator.state()["objects"]["monitor"] == {}


def test_accounts_and_zones_not_served_are_refused(api):
    not_served = api.refused("GET", f"accounts/{'1' * 32}/load_balancers/pools")
    assert not_served == (403, {"code": 10000, "message": "Authentication error"})
    assert api.refused("GET", f"zones/{'2' * 32}/dns_records")[0] == 403
    status, error = api.refused("GET", "zones/bazbii.example/dns_records")
    assert (status, error["code"], error["error_chain"][0]["code"]) == (400, 7003, 7000)
    assert api.refused("GET", f"{TUNNELS}/not-a-uuid")[1]["code"] == 7003


def test_state_view_needs_the_token_and_is_read_only(emulator):
    view = f"{emulator.base}/_twin/state"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(view, timeout=10)
    assert raised.value.code == 400
    authorised = Client(emulator.base)
    status, state = authorised.call("GET", "_twin/state")
    assert status == 200 and state["zones"] == {ZONE: ZONE_NAME} and state["accounts"] == [ACCOUNT]
    status, _ = authorised.call("POST", "_twin/state", {})
    assert status == 405


# ----------------------------------------------------------------------------------- persistence
def test_state_survives_a_restart_on_the_same_file(tmp_path):
    state_file = tmp_path / "cloudflare.json"
    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, state_file=state_file) as first:
        api = Client(first.url)
        checker = monitor(api)
        kept = pool(api, "p1", checker["id"])
        record = api.ok("POST", RECORDS, {"name": "direct", "type": "A", "content": "203.0.113.11", "ttl": 3600})
        tunnel = api.ok("POST", TUNNELS, {"name": "t", "tunnel_secret": SECRET})
        gone = pool(api, "p2")
        api.ok("DELETE", f"{POOLS}/{gone['id']}")
    assert json.loads(state_file.read_text())["format"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloudflare.json"]  # no temporary file left behind

    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, state_file=state_file) as second:
        api = Client(second.url)
        assert api.ok("GET", f"{POOLS}/{kept['id']}") == kept
        assert api.ok("GET", f"{RECORDS}/{record['id']}") == record
        assert api.ok("GET", f"{TUNNELS}/{tunnel['id']}") == tunnel
        assert second.state()["objects"]["tunnel"][tunnel["id"]]["private"]["tunnel_secret"] == SECRET
        assert [p["id"] for p in api.ok("GET", POOLS)] == [kept["id"]]
        # and the references still hold after the restart
        assert api.refused("DELETE", f"{MONITORS}/{checker['id']}")[0] == 412


def test_an_unreadable_state_file_is_a_clear_error(tmp_path):
    state_file = tmp_path / "cloudflare.json"
    state_file.write_text("[1, 2")
    from twin.cloudflare import StateFileError
    with pytest.raises(StateFileError, match="cloudflare.json"):
        CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, state_file=state_file)


def test_two_emulators_run_at_once_without_sharing_anything(tmp_path):
    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, state_file=tmp_path / "a.json") as first, \
            CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, state_file=tmp_path / "b.json") as second:
        assert first.port != second.port
        monitor(Client(first.url))
        assert len(Client(first.url).ok("GET", MONITORS)) == 1
        assert Client(second.url).ok("GET", MONITORS) == []
        assert len(first.requests) == 2 and second.requests == [("GET", MONITORS)]


# ----------------------------------------------------------------------------------- observers
def test_observers_see_each_accepted_change_in_order_and_never_a_refused_one():
    seen: list[Change] = []
    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, observers=[seen.append]) as running:
        api = Client(running.url)
        one = pool(api, "p1")
        lb = api.ok("POST", LBS, load_balancer_body({one["id"]: 1}))
        api.refused("PUT", f"{LBS}/{lb['id']}", load_balancer_body({one["id"]: 1.5}))
        api.ok("PUT", f"{LBS}/{lb['id']}", load_balancer_body({one["id"]: 0.5}))
        record = api.ok("POST", RECORDS, {"name": "direct", "type": "A", "content": "203.0.113.11", "ttl": 300})
        api.ok("DELETE", f"{RECORDS}/{record['id']}")
    assert [(c.kind, c.action) for c in seen] == [
        ("pool", "created"), ("load_balancer", "created"), ("load_balancer", "updated"),
        ("dns_record", "created"), ("dns_record", "deleted")]
    update = seen[2]
    assert (update.id, update.scope) == (lb["id"], ZONE)
    assert update.state["random_steering"]["pool_weights"] == {one["id"]: 0.5}
    assert seen[-1].state is None


def test_a_failing_observer_does_not_undo_the_change(capfd):
    def broken(change: Change) -> None:
        raise RuntimeError("haproxy is down")

    with CloudflareEmulator(TOKEN, [ACCOUNT], {ZONE: ZONE_NAME}, observers=[broken]) as running:
        created = monitor(Client(running.url))
        assert Client(running.url).ok("GET", f"{MONITORS}/{created['id']}")
    assert "haproxy is down" in capfd.readouterr().err


# ----------------------------------------------------------------------------------- configuration and CLI
@pytest.mark.parametrize("accounts, zones, message", [
    (["not-hex"], {}, "account id 'not-hex' is not a Cloudflare identifier"),
    ([ACCOUNT], {"zone": ZONE_NAME}, "zone id 'zone' is not a Cloudflare identifier"),
    ([], {}, "at least one account"),
])
def test_bad_configuration_is_refused_at_start(accounts, zones, message):
    with pytest.raises(ConfigurationError, match=message):
        CloudflareEmulator(TOKEN, accounts, zones)


def test_command_line_prints_its_url_serves_and_stops_on_sigterm(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "twin.cloudflare", "--listen", "127.0.0.1:0", "--token-file", str(token_file),
         "--account", ACCOUNT, "--zone", f"{ZONE}={ZONE_NAME}", "--state", str(tmp_path / "state.json")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/client/v4")
        monitor(Client(url))
        assert len(json.loads((tmp_path / "state.json").read_text())["objects"]["monitor"]) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_command_line_bad_arguments_are_one_line_and_status_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "twin.cloudflare", "--listen", "127.0.0.1:0", "--token-file",
                           str(tmp_path / "missing"), "--account", ACCOUNT], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--token-file" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- connectors (the twin's cloudflared)
def connector_call(emulator, method: str, tunnel_id: str, **body):
    edge = Client(emulator.base, token=None)  # cloudflared authenticates with the tunnel's secret, not the API token
    return edge.call(method, f"_twin/tunnels/{tunnel_id}/connections", {"account": ACCOUNT, **body})


def test_a_connector_makes_its_tunnel_healthy_and_blocks_its_deletion_until_it_leaves(api, emulator):
    tunnel = api.ok("POST", f"accounts/{ACCOUNT}/cfd_tunnel", {"name": "gw", "config_src": "cloudflare",
                                                                  "tunnel_secret": SECRET})
    status, refused = connector_call(emulator, "POST", tunnel["id"], secret="bm90LXRoZS1zZWNyZXQ=", connector="s1")
    assert status == 403 and refused["success"] is False  # a token for another secret connects nothing
    status, _ = connector_call(emulator, "POST", tunnel["id"], secret=SECRET, connector="server1", origin="127.0.1.1")
    assert status == 200
    seen = api.ok("GET", f"accounts/{ACCOUNT}/cfd_tunnel/{tunnel['id']}")
    assert seen["status"] == "healthy" and [c["origin_ip"] for c in seen["connections"]] == ["127.0.1.1"]
    assert [c["client_id"] for c in api.ok("GET", f"accounts/{ACCOUNT}/cfd_tunnel/{tunnel['id']}/connections")] == ["server1"]
    status, error = api.refused("DELETE", f"accounts/{ACCOUNT}/cfd_tunnel/{tunnel['id']}")
    assert (status, error["code"]) == (400, 1022) and "active connections" in error["message"]
    connector_call(emulator, "DELETE", tunnel["id"], secret=SECRET, connector="server1")
    assert api.ok("GET", f"accounts/{ACCOUNT}/cfd_tunnel/{tunnel['id']}")["status"] == "inactive"
    assert api.ok("DELETE", f"accounts/{ACCOUNT}/cfd_tunnel/{tunnel['id']}")["deleted_at"]


def test_a_connector_not_heard_from_drops_off(api, emulator, monkeypatch):
    from twin.cloudflare import tunnels

    tunnel = api.ok("POST", f"accounts/{ACCOUNT}/cfd_tunnel", {"name": "gw2", "config_src": "cloudflare",
                                                                  "tunnel_secret": SECRET})
    connector_call(emulator, "POST", tunnel["id"], secret=SECRET, connector="server2")
    monkeypatch.setattr(tunnels, "CONNECTOR_TTL_SECONDS", -1.0)  # as if its last renewal were long ago
    seen = api.ok("GET", f"accounts/{ACCOUNT}/cfd_tunnel/{tunnel['id']}")
    assert seen["status"] == "inactive" and seen["connections"] == []
