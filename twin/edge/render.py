"""The emulator's state -> what the edge's HAProxy and nsd serve (pure functions; no process, no I/O).

:func:`edge_of` reads a ``/_twin/state`` snapshot into an :class:`Edge`: per load balancer its pools in
steering order with their weights and fallback; per pool its origin (where its tunnel is connected, or
the address it names), whether it is enabled and its health check; the zone's DNS records. The text
functions write HAProxy's configuration, its weight map and nsd's zone from it.

Steering (Cloudflare's ``random`` policy): each request draws a number in 0..WEIGHT_SCALE-1 and takes the
pool whose slice of the cumulative weights holds it, if that pool is healthy; a draw in an unhealthy pool's
slice goes to the next healthy pool in order (Cloudflare spreads it over the healthy pools by weight: the
same with two pools), then to any healthy pool, then to the fallback pool. A pool missing from ``pool_weights`` has ``default_weight``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from twin.cloudflare.tunnels import CONNECTOR_TTL_SECONDS

WEIGHT_SCALE = 1000  # weights 0..1 in steps of 0.001
TUNNEL_SUFFIX = ".cfargotunnel.com"
AUTOMATIC_TTL = 300  # what Cloudflare serves for ttl 1 ("automatic") and for proxied records
MIN_CHECK_INTERVAL_MS = 500


@dataclass(frozen=True)
class HealthCheck:
    path: str
    host: Optional[str]
    expected: str  # "200", "2xx"
    interval_ms: int
    timeout_ms: int
    fall: int


@dataclass(frozen=True)
class Origin:
    host: Optional[str]  # None: its tunnel has no live connection (Cloudflare answers 1033)
    port: int
    why_down: str = ""


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    enabled: bool
    origin: Origin
    check: Optional[HealthCheck]  # None: never health-checked (a pool without a monitor)

    @property
    def backend(self) -> str:
        return f"pool_{self.id}"


@dataclass(frozen=True)
class LoadBalancer:
    id: str
    hostname: str
    enabled: bool
    pools: tuple[str, ...]  # pool ids in steering order
    weights: dict[str, float]  # pool id -> weight (0..1)
    fallback: Optional[str]


@dataclass(frozen=True)
class Record:
    name: str  # relative to the zone ("@" the apex)
    type: str
    content: str
    ttl: int


@dataclass
class Edge:
    zone: str
    load_balancers: list[LoadBalancer] = field(default_factory=list)
    pools: dict[str, Pool] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)

    def structure(self) -> tuple:
        """What a change of needs a new HAProxy configuration (weights and origin liveness do not)."""
        return (tuple((lb.id, lb.hostname, lb.enabled, lb.pools, lb.fallback) for lb in self.load_balancers),
                tuple(sorted((p.id, p.enabled, p.origin.port, p.check) for p in self.pools.values())))


def _live(tunnel: dict, private: dict, now: float) -> list[dict]:
    seen = private.get("connector_seen", {})
    return [c for c in tunnel.get("connections", []) if seen.get(c["client_id"], 0) >= now - CONNECTOR_TTL_SECONDS]


def _ingress_port(configuration: Optional[dict], hostname: str) -> Optional[int]:
    """The port of the first ingress rule that serves ``hostname`` over HTTP (None: none does)."""
    for rule in ((configuration or {}).get("config") or {}).get("ingress") or []:
        pattern = rule.get("hostname") or "*"
        regex = "^" + re.escape(pattern).replace(r"\*", "[^.]+" if pattern != "*" else ".*") + "$"
        if re.match(regex, hostname):
            service = urlsplit(rule.get("service") or "")
            if service.scheme not in ("http", "https"):
                return None
            return service.port or (443 if service.scheme == "https" else 80)
    return None


def _origin(origin: dict, hostname: str, objects: dict, now: float) -> Origin:
    address = origin.get("address", "")
    headers = origin.get("header") or {}
    host_header = (headers.get("Host") or headers.get("host") or [hostname])[0]
    if not address.endswith(TUNNEL_SUFFIX):
        return Origin(address, 80)
    tunnel_id = address[: -len(TUNNEL_SUFFIX)]
    record = objects.get("tunnel", {}).get(tunnel_id)
    if record is None or record["data"].get("deleted_at"):
        return Origin(None, 80, f"tunnel {tunnel_id} does not exist")
    port = _ingress_port(objects.get("tunnel_configuration", {}).get(tunnel_id, {}).get("data"), host_header)
    if port is None:
        return Origin(None, 80, f"tunnel {tunnel_id} has no ingress rule serving {host_header} over HTTP")
    live = _live(record["data"], record.get("private") or {}, now)
    if not live:
        return Origin(None, port, f"tunnel {tunnel_id} has no live connection")
    return Origin(live[0]["origin_ip"], port)


def _check(monitor: Optional[dict], time_scale: float) -> Optional[HealthCheck]:
    if monitor is None:
        return None
    host = ((monitor.get("header") or {}).get("Host") or [None])[0]
    interval = max(MIN_CHECK_INTERVAL_MS, int(monitor.get("interval", 60) * 1000 / time_scale))
    timeout = max(200, min(interval, int(monitor.get("timeout", 5) * 1000 / time_scale)))
    return HealthCheck(path=monitor.get("path") or "/", host=host, expected=monitor.get("expected_codes") or "200",
                       interval_ms=interval, timeout_ms=timeout, fall=max(1, int(monitor.get("retries", 2))))


def edge_of(state: dict, zone_id: str, *, time_scale: float = 1.0, now: Optional[float] = None) -> Edge:
    """The edge serving zone ``zone_id`` from an emulator snapshot."""
    now = time.time() if now is None else now
    objects = state["objects"]
    zone = state["zones"][zone_id]
    edge = Edge(zone=zone)
    monitors = {i: r["data"] for i, r in objects.get("monitor", {}).items()}
    lbs = [r["data"] for r in objects.get("load_balancer", {}).values() if r["scope"] == zone_id]
    for lb in sorted(lbs, key=lambda d: d["name"]):
        steering = lb.get("random_steering") or {}
        order = list(dict.fromkeys(lb.get("default_pools") or []))
        weights = {pool_id: float((steering.get("pool_weights") or {}).get(pool_id, steering.get("default_weight", 1)))
                   for pool_id in order}
        edge.load_balancers.append(LoadBalancer(lb["id"], lb["name"], bool(lb.get("enabled", True)), tuple(order),
                                                weights, lb.get("fallback_pool")))
        for pool_id in [*order, lb.get("fallback_pool")]:
            record = objects.get("pool", {}).get(pool_id or "")
            if record is None or pool_id in edge.pools:
                continue
            pool = record["data"]
            origins = [o for o in pool.get("origins") or [] if o.get("enabled", True)]
            origin = (_origin(origins[0], lb["name"], objects, now) if origins
                      else Origin(None, 80, "no enabled origin"))
            edge.pools[pool_id] = Pool(pool_id, pool["name"], bool(pool.get("enabled", True)), origin,
                                       _check(monitors.get(pool.get("monitor") or ""), time_scale))
    suffix = "." + zone
    for record in sorted((r["data"] for r in objects.get("dns_record", {}).values() if r["scope"] == zone_id),
                         key=lambda d: (d["name"], d["type"], d["content"])):
        name = "@" if record["name"] == zone else record["name"].removesuffix(suffix)
        ttl = AUTOMATIC_TTL if record.get("proxied") or record.get("ttl", 1) == 1 else int(record["ttl"])
        if record.get("proxied"):
            edge.records.append(Record(name, "A", "EDGE", ttl))
        else:
            edge.records.append(Record(name, record["type"], record["content"], ttl))
    for lb in edge.load_balancers:  # the load balancer's hostname answers with the edge, over any record
        name = "@" if lb.hostname == zone else lb.hostname.removesuffix(suffix)
        edge.records = [r for r in edge.records if r.name != name]
        edge.records.append(Record(name, "A", "EDGE", AUTOMATIC_TTL))
    return edge


# --------------------------------------------------------------------------------------------- HAProxy
def cumulative(lb: LoadBalancer) -> dict[str, int]:
    """Pool id -> the upper end of its slice of 0..WEIGHT_SCALE (the weights normalised to their sum)."""
    total = sum(lb.weights.values())
    bounds, running = {}, 0.0
    for pool_id in lb.pools:
        running += lb.weights.get(pool_id, 0.0) / total if total > 0 else 0.0
        bounds[pool_id] = round(running * WEIGHT_SCALE)
    return bounds


def weight_map(edge: Edge) -> dict[str, int]:
    """``<lb id>/<pool id>`` -> cumulative bound: HAProxy's weight map (changed at runtime, no reload)."""
    return {f"{lb.id}/{pool_id}": bound for lb in edge.load_balancers for pool_id, bound in cumulative(lb).items()}


def _check_lines(check: HealthCheck) -> list[str]:
    send = f"    http-check send meth GET uri {check.path}" + (f" hdr Host {check.host}" if check.host else "")
    if re.fullmatch(r"[1-5]xx", check.expected):
        expect = f"    http-check expect rstatus ^{check.expected[0]}"
    else:
        expect = f"    http-check expect status {check.expected}"
    return ["    option httpchk", send, expect,
            f"    default-server inter {check.interval_ms}ms fall {check.fall} rise 1",
            f"    timeout check {check.timeout_ms}ms"]


def haproxy_config(edge: Edge, directory: Path, listen: str, stats_listen: str) -> str:
    """HAProxy as the edge: one frontend on ``listen`` choosing a load balancer by Host (the only one when
    there is one), each request steered by a draw against the weight map; one backend per pool."""
    weights = directory / "weights.map"
    lines = ["global",
             f"    stats socket {directory}/admin.sock mode 600 level admin expose-fd listeners",
             "defaults",
             "    mode http",
             "    timeout connect 2s",
             "    timeout client 30s",
             "    timeout server 30s",
             "frontend edge",
             f"    bind {listen}",
             "    http-response set-header X-Edge-Pool %b",
             "    http-request set-var(txn.draw) rand(" + str(WEIGHT_SCALE) + ")"]
    live = [lb for lb in edge.load_balancers if lb.enabled]
    for lb in live:
        only = len(live) == 1
        host = "" if only else f" {{ req.hdr(host),field(1,:) -i {lb.hostname} }}"
        for pool_id in lb.pools:
            key = f"{lb.id}/{pool_id}"
            lines.append(f"    http-request set-var(txn.b_{pool_id}) str({key}),map_str_int({weights},0){host}")
        for pool_id in lb.pools:
            backend = edge.pools[pool_id].backend
            lines.append(f"    use_backend {backend} if{host} {{ var(txn.draw),sub(txn.b_{pool_id}) -m int lt 0 }} "
                         f"{{ nbsrv({backend}) gt 0 }}")
        for pool_id in lb.pools:
            backend = edge.pools[pool_id].backend
            lines.append(f"    use_backend {backend} if{host} {{ nbsrv({backend}) gt 0 }}")
        if lb.fallback and lb.fallback in edge.pools:
            lines.append(f"    use_backend {edge.pools[lb.fallback].backend}{' if' + host if host else ''}")
    lines += ["    default_backend no_origin",
              "frontend stats", f"    bind {stats_listen}",
              "    http-request use-service prometheus-exporter if { path /metrics }",
              "backend no_origin",  # a hostname no load balancer serves (Cloudflare's error 1016)
              "    http-request return status 530 content-type text/plain string \"error 1016: origin unreachable\""]
    for pool in sorted(edge.pools.values(), key=lambda p: p.id):
        lines.append(f"backend {pool.backend}")
        lines.append("    option http-server-close")
        lines += _check_lines(pool.check) if pool.check else []
        check = " check" if pool.check else ""
        state = "" if pool.enabled and pool.origin.host else " disabled"
        address = pool.origin.host or "127.0.0.1"
        lines.append(f"    server origin {address}:{pool.origin.port}{check}{state}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- DNS
def scaled_ttl(ttl: int, time_scale: float) -> int:
    return max(1, round(ttl / time_scale))


def zone_text(edge: Edge, serial: int, edge_address: str, time_scale: float) -> str:
    lines = [f"$ORIGIN {edge.zone}.", "$TTL 60", f"@ IN SOA ns1 hostmaster {serial} 60 60 600 5", "@ IN NS ns1",
             f"ns1 IN A {edge_address}"]
    for record in edge.records:
        content = edge_address if record.content == "EDGE" else record.content
        if record.type == "CNAME" and not content.endswith("."):
            content += "."
        lines.append(f"{record.name} {scaled_ttl(record.ttl, time_scale)} IN {record.type} {content}")
    return "\n".join(lines) + "\n"
