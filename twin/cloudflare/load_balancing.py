"""Load Balancing: monitors and pools (account level), load balancers (zone level).

Refusals answer like Cloudflare's load-balancing API: HTTP 400, code 1002, ``"<what>: validation
failed"``; deleting a monitor a pool uses or a pool a load balancer uses is HTTP 412, code 1005
"This object is referenced by other objects, delete them first."; an id that names nothing is
HTTP 404, code 1003 (the twin's choice: Cloudflare's own code for it is not documented).

PUT replaces the whole object (fields not sent go back to their defaults), PATCH changes only the
fields sent, as on api.cloudflare.com.
"""

from __future__ import annotations

import copy
import re
from typing import Iterable, Optional

from . import fields as f
from .api import Answer, Call, Route, listing, require_body
from .errors import ApiError
from .names import fqdn_in_zone, is_hostname
from .store import Store, new_identifier, now

READ_ONLY = ("id", "created_on", "modified_on")  # accepted in a body (a GET sent back) and ignored

# ----------------------------------------------------------------------------------- shapes
MONITOR_TYPES = ("http", "https", "tcp", "udp_icmp", "icmp_ping", "smtp")
REGIONS = ("WNAM", "ENAM", "WEU", "EEU", "NSAM", "SSAM", "OC", "ME", "NAF", "SAF", "SAS", "SEAS", "NEAS",
           "ALL_REGIONS")
STEERING_POLICIES = ("off", "geo", "random", "dynamic_latency", "proximity", "least_outstanding_requests",
                     "least_connections", "")
SESSION_AFFINITIES = ("none", "cookie", "ip_cookie", "header", "")

MONITOR = f.obj(
    type=f.string(*MONITOR_TYPES), description=f.string(), method=f.string(), path=f.string(),
    header=f.map_of(f.STRING_LIST), port=f.integer(0, 65535), timeout=f.integer(), retries=f.integer(),
    interval=f.integer(), expected_body=f.string(), expected_codes=f.string(), follow_redirects=f.boolean(),
    allow_insecure=f.boolean(), probe_zone=f.string(), consecutive_up=f.integer(0), consecutive_down=f.integer(0),
)
WEIGHT = f.number(0, 1)  # origin weight and random-steering weights: 0..1
ORIGIN = f.obj(
    name=f.string(), address=f.string(), enabled=f.boolean(), weight=WEIGHT,
    header=f.obj(Host=f.STRING_LIST), virtual_network_id=f.string(), port=f.integer(0, 65535),
    flatten_cname=f.boolean(), disabled_at=f.string(),
)
FILTER = f.obj(disable=f.boolean(), healthy=f.boolean())
POOL = f.obj(
    name=f.string(nullable=False), description=f.string(), enabled=f.boolean(), minimum_origins=f.integer(0),
    monitor=f.string(), monitor_group=f.string(), check_regions=f.list_of(f.string(*REGIONS, nullable=False)),
    origins=f.list_of(ORIGIN), notification_email=f.string(), notification_filter=f.obj(origin=FILTER, pool=FILTER),
    load_shedding=f.obj(default_percent=f.number(0, 100), default_policy=f.string("random", "hash"),
                        session_percent=f.number(0, 100), session_policy=f.string("hash")),
    origin_steering=f.obj(policy=f.string("random", "hash", "least_outstanding_requests", "least_connections")),
    latitude=f.number(-90, 90), longitude=f.number(-180, 180), health_sources=f.list_of(f.string(nullable=False)),
    networks=f.STRING_LIST, disabled_at=f.string(),
)
RANDOM_STEERING = f.obj(default_weight=WEIGHT, pool_weights=f.map_of(WEIGHT))
ADAPTIVE_ROUTING = f.obj(failover_across_pools=f.boolean())
LOCATION_STRATEGY = f.obj(mode=f.string("pop", "resolver_ip"),
                          prefer_ecs=f.string("always", "never", "proximity", "geo"))
AFFINITY_ATTRIBUTES = f.obj(
    drain_duration=f.number(0), headers=f.STRING_LIST, require_all_headers=f.boolean(),
    samesite=f.string("Auto", "Lax", "None", "Strict"), secure=f.string("Auto", "Always", "Never"),
    zero_downtime_failover=f.string("none", "temporary", "sticky"),
)
STEERING_FIELDS = dict(
    adaptive_routing=ADAPTIVE_ROUTING, country_pools=f.POOL_MAP, default_pools=f.STRING_LIST,
    fallback_pool=f.string(), location_strategy=LOCATION_STRATEGY, pop_pools=f.POOL_MAP,
    random_steering=RANDOM_STEERING, region_pools=f.POOL_MAP, session_affinity=f.string(*SESSION_AFFINITIES),
    session_affinity_attributes=AFFINITY_ATTRIBUTES, session_affinity_ttl=f.number(),
    steering_policy=f.string(*STEERING_POLICIES),
    ttl=f.number(),
)
RULE = f.obj(
    condition=f.string(), disabled=f.boolean(), name=f.string(), priority=f.integer(0), terminates=f.boolean(),
    fixed_response=f.obj(content_type=f.string(), location=f.string(), message_body=f.string(),
                         status_code=f.integer()),
    overrides=f.obj(**STEERING_FIELDS),
)
LOAD_BALANCER = f.obj(
    name=f.string(nullable=False), description=f.string(), enabled=f.boolean(), proxied=f.boolean(),
    networks=f.STRING_LIST, rules=f.list_of(RULE), **STEERING_FIELDS,
)

POOL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # "Only alphanumeric characters, hyphens, and underscores are allowed."


# ----------------------------------------------------------------------------------- errors
def invalid(message: str) -> ApiError:
    return ApiError(400, 1002, f"{message}: validation failed")


def not_found(what: str, object_id: str) -> ApiError:
    return ApiError(404, 1003, f"{what} {object_id} not found")


def referenced() -> ApiError:
    return ApiError(412, 1005, "This object is referenced by other objects, delete them first.")


def checked(spec: f.Spec, body: dict) -> dict:
    body = {k: v for k, v in body.items() if k not in READ_ONLY}
    try:
        f.check_object(spec, body)
    except f.FieldError as error:
        raise invalid(str(error)) from None
    return body


def given(body: dict, key: str, default):
    value = body.get(key)
    return copy.deepcopy(default) if value is None else value


def merged(defaults: dict, value: Optional[dict]) -> dict:
    """A nested object with Cloudflare's defaults under the fields that were sent."""
    return {**defaults, **{k: v for k, v in (value or {}).items() if v is not None}}


def writable(record: dict) -> dict:
    """The fields of a stored representation a PATCH starts from."""
    return {k: v for k, v in record.items() if k not in READ_ONLY and k not in ("disabled_at", "zone_name")}


# ----------------------------------------------------------------------------------- monitors
def build_monitor(body: dict) -> dict:
    body = checked(MONITOR, body)
    kind = given(body, "type", "http").lower()
    web = kind in ("http", "https")
    method = given(body, "method", "GET" if web else ("connection_established" if kind == "tcp" else ""))
    port = given(body, "port", 0)
    if kind in ("tcp", "udp_icmp", "smtp") and not port:
        # "Required for TCP, UDP, and SMTP checks."
        raise invalid(f"port is required for {kind} monitors")
    return {
        "type": kind, "description": given(body, "description", ""), "method": method,
        "path": given(body, "path", "/" if web else ""), "header": body.get("header"), "port": port,
        "timeout": given(body, "timeout", 5), "retries": given(body, "retries", 2),
        "interval": given(body, "interval", 60), "expected_body": given(body, "expected_body", ""),
        "expected_codes": given(body, "expected_codes", "200" if web else ""),
        "follow_redirects": given(body, "follow_redirects", False),
        "allow_insecure": given(body, "allow_insecure", False),
        "probe_zone": given(body, "probe_zone", ""), "consecutive_up": given(body, "consecutive_up", 0),
        "consecutive_down": given(body, "consecutive_down", 0),
    }


# ----------------------------------------------------------------------------------- pools
def build_pool(store: Store, account: str, body: dict, previous: Optional[dict]) -> dict:
    body = checked(POOL, body)
    name = body.get("name")
    if not name:
        raise invalid("name is required")
    if not POOL_NAME.match(name):
        raise invalid(f"name '{name}' may only contain alphanumeric characters, hyphens and underscores")
    origins = body.get("origins") or []
    if not origins:
        raise invalid(f"the origin list length must be in range [1, {len(origins) or 1}]")
    seen = set()
    built_origins = []
    for index, origin in enumerate(origins):
        if not origin.get("address"):
            raise invalid(f"origins[{index}].address is required")
        if origin.get("name") in seen:
            raise invalid(f"origins[{index}].name '{origin['name']}' is not unique in the pool")
        seen.add(origin.get("name"))
        built_origins.append(build_origin(origin, _previous_origin(previous, origin.get("name"))))
    monitor = body.get("monitor")
    if monitor and store.get("monitor", monitor, account) is None:
        raise invalid(f"monitor {monitor} not found")
    if body.get("monitor_group"):
        # Monitor groups are not emulated: no id can name one here.
        raise invalid(f"monitor_group {body['monitor_group']} not found")
    if (body.get("latitude") is None) != (body.get("longitude") is None):
        raise invalid("latitude and longitude must be set together")
    health_sources = body.get("health_sources")
    if health_sources is not None and health_sources != ["regional", "global"]:
        raise invalid('health_sources must be null or exactly ["regional", "global"]')
    minimum = given(body, "minimum_origins", 1)
    enabled = given(body, "enabled", True)
    pool = {
        "name": name, "description": given(body, "description", ""), "enabled": enabled, "minimum_origins": minimum,
        "monitor": monitor, "monitor_group": None, "check_regions": body.get("check_regions"), "origins": built_origins,
        "notification_email": given(body, "notification_email", ""),
        "notification_filter": body.get("notification_filter"),
        "load_shedding": merged({"default_percent": 0, "default_policy": "random", "session_percent": 0,
                                 "session_policy": "hash"}, body.get("load_shedding")),
        "origin_steering": merged({"policy": "random"}, body.get("origin_steering")),
        "latitude": body.get("latitude"), "longitude": body.get("longitude"), "health_sources": health_sources,
        "networks": given(body, "networks", ["cloudflare"]),
    }
    if not enabled:
        pool["disabled_at"] = (previous or {}).get("disabled_at") or now()
    return pool


def _previous_origin(previous: Optional[dict], name) -> Optional[dict]:
    for origin in (previous or {}).get("origins", []):
        if origin.get("name") == name:
            return origin
    return None


def build_origin(origin: dict, previous: Optional[dict]) -> dict:
    enabled = given(origin, "enabled", True)
    built = {
        "name": origin.get("name"), "address": origin["address"], "enabled": enabled,
        "weight": given(origin, "weight", 1),
        "header": origin.get("header"), "virtual_network_id": origin.get("virtual_network_id"),
        "port": given(origin, "port", 0), "flatten_cname": given(origin, "flatten_cname", True),
    }
    if not enabled:
        built["disabled_at"] = (previous or {}).get("disabled_at") or now()
    return built


# ----------------------------------------------------------------------------------- load balancers
def build_load_balancer(store: Store, zone_id: str, body: dict) -> dict:
    body = checked(LOAD_BALANCER, body)
    zone = store.zones[zone_id]
    raw_name = body.get("name")
    if not raw_name:
        raise invalid("name is required")
    name = fqdn_in_zone(raw_name, zone, relative=False)
    if name is None or not is_hostname(name):
        raise invalid(f"name '{raw_name}' is not a hostname in zone {zone}")
    if not body.get("default_pools"):
        raise invalid("default_pools must name at least one pool")
    if not body.get("fallback_pool"):
        raise invalid("fallback_pool is required")
    _check_steering(store, body, "")
    for index, rule in enumerate(body.get("rules") or []):
        _check_steering(store, rule.get("overrides") or {}, f"rules[{index}].overrides.")
    affinity = given(body, "session_affinity", "none") or "none"
    affinity_ttl = body.get("session_affinity_ttl")
    _check_affinity_ttl(affinity, affinity_ttl)
    if affinity_ttl is None:
        affinity_ttl = {"cookie": 82800, "ip_cookie": 82800, "header": 1800}.get(affinity)
    return {
        "name": name, "description": given(body, "description", ""), "enabled": given(body, "enabled", True),
        "proxied": given(body, "proxied", False), "ttl": given(body, "ttl", 30),
        "default_pools": body["default_pools"], "fallback_pool": body["fallback_pool"],
        "region_pools": given(body, "region_pools", {}), "pop_pools": given(body, "pop_pools", {}),
        "country_pools": given(body, "country_pools", {}), "steering_policy": given(body, "steering_policy", ""),
        "random_steering": _random_steering(body.get("random_steering")),
        "adaptive_routing": merged({"failover_across_pools": False}, body.get("adaptive_routing")),
        "location_strategy": merged({"mode": "pop", "prefer_ecs": "proximity"}, body.get("location_strategy")),
        "session_affinity": affinity, "session_affinity_ttl": affinity_ttl,
        "session_affinity_attributes": merged(
            {"samesite": "Auto", "secure": "Auto", "drain_duration": 0, "zero_downtime_failover": "none"},
            body.get("session_affinity_attributes")),
        "rules": given(body, "rules", []), "networks": given(body, "networks", ["cloudflare"]), "zone_name": zone,
    }


def _random_steering(value: Optional[dict]) -> dict:
    steering = merged({"default_weight": 1}, value)
    if not steering.get("pool_weights"):
        steering.pop("pool_weights", None)
    return steering


def _check_affinity_ttl(affinity: str, ttl) -> None:
    if ttl is None:
        return
    # Accepted ranges per policy, from the API's session_affinity_ttl description.
    bounds = {"cookie": (1800, 604800), "ip_cookie": (1800, 604800), "header": (30, 3600)}.get(affinity)
    if bounds and not bounds[0] <= ttl <= bounds[1]:
        raise invalid(f"session_affinity_ttl {ttl} is not in range [{bounds[0]}, {bounds[1]}] "
                      f"for session_affinity {affinity}")


def _check_steering(store: Store, body: dict, prefix: str) -> None:
    """Every pool a load balancer (or a rule's overrides) names must exist."""
    for index, pool_id in enumerate(body.get("default_pools") or []):
        _require_pool(store, pool_id, f"{prefix}default_pools[{index}]")
    if body.get("fallback_pool"):
        _require_pool(store, body["fallback_pool"], f"{prefix}fallback_pool")
    for key in ("region_pools", "pop_pools", "country_pools"):
        for where, pool_ids in (body.get(key) or {}).items():
            for pool_id in pool_ids:
                _require_pool(store, pool_id, f"{prefix}{key}.{where}")
    for pool_id in ((body.get("random_steering") or {}).get("pool_weights") or {}):
        _require_pool(store, pool_id, f"{prefix}random_steering.pool_weights")


def _require_pool(store: Store, pool_id: str, where: str) -> None:
    if store.get("pool", pool_id) is None:
        raise invalid(f"{where}: pool {pool_id} not found")


def pools_named_by(lb: dict) -> set:
    named = set(lb.get("default_pools") or []) | {lb.get("fallback_pool")}
    sources = [lb] + [rule.get("overrides") or {} for rule in lb.get("rules") or []]
    for source in sources:
        named |= set(source.get("default_pools") or []) | {source.get("fallback_pool")}
        for key in ("region_pools", "pop_pools", "country_pools"):
            for pool_ids in (source.get(key) or {}).values():
                named |= set(pool_ids)
        named |= set(((source.get("random_steering") or {}).get("pool_weights") or {}))
    named.discard(None)
    return named


# ----------------------------------------------------------------------------------- handlers
def _stamp(data: dict, object_id: str, previous: Optional[dict]) -> dict:
    moment = now()
    created = previous["created_on"] if previous else moment
    return {"id": object_id, "created_on": created, "modified_on": moment, **data}


def _existing(store: Store, kind: str, what: str, call: Call, key: str, scope_key: str) -> dict:
    found = store.get(kind, call.params[key], call.params[scope_key])
    if found is None:
        raise not_found(what, call.params[key])
    return found


def _write_body(call: Call, previous: Optional[dict]) -> dict:
    body = require_body(call)
    if call.method == "PATCH" and previous is not None:
        return {**writable(previous), **body}
    return body


def list_monitors(store: Store, call: Call) -> Answer:
    return listing(store.all("monitor", call.params["account_id"]), call.query)


def create_monitor(store: Store, call: Call) -> Answer:
    monitor = _stamp(build_monitor(require_body(call)), new_identifier(), None)
    store.put("monitor", monitor["id"], call.params["account_id"], monitor, action="created")
    return Answer(monitor)


def get_monitor(store: Store, call: Call) -> Answer:
    return Answer(_existing(store, "monitor", "monitor", call, "monitor_id", "account_id"))


def change_monitor(store: Store, call: Call) -> Answer:
    previous = _existing(store, "monitor", "monitor", call, "monitor_id", "account_id")
    monitor = _stamp(build_monitor(_write_body(call, previous)), previous["id"], previous)
    store.put("monitor", monitor["id"], call.params["account_id"], monitor, action="updated")
    return Answer(monitor)


def delete_monitor(store: Store, call: Call) -> Answer:
    monitor = _existing(store, "monitor", "monitor", call, "monitor_id", "account_id")
    if _pools_using_monitor(store, monitor["id"]):
        raise referenced()
    store.remove("monitor", monitor["id"])
    return Answer({"id": monitor["id"]})


def monitor_references(store: Store, call: Call) -> Answer:
    monitor = _existing(store, "monitor", "monitor", call, "monitor_id", "account_id")
    return Answer([_reference("referrer", "pool", pool) for pool in _pools_using_monitor(store, monitor["id"])])


def _pools_using_monitor(store: Store, monitor_id: str) -> list:
    return [pool for pool in store.all("pool") if pool.get("monitor") == monitor_id]


def list_pools(store: Store, call: Call) -> Answer:
    pools = store.all("pool", call.params["account_id"])
    monitor = call.query.get("monitor")
    if monitor:
        pools = [pool for pool in pools if pool.get("monitor") == monitor]
    return listing(pools, call.query)


def create_pool(store: Store, call: Call) -> Answer:
    account = call.params["account_id"]
    pool = _stamp(build_pool(store, account, require_body(call), None), new_identifier(), None)
    store.put("pool", pool["id"], account, pool, action="created")
    return Answer(pool)


def get_pool(store: Store, call: Call) -> Answer:
    return Answer(_existing(store, "pool", "pool", call, "pool_id", "account_id"))


def change_pool(store: Store, call: Call) -> Answer:
    account = call.params["account_id"]
    previous = _existing(store, "pool", "pool", call, "pool_id", "account_id")
    pool = _stamp(build_pool(store, account, _write_body(call, previous), previous), previous["id"], previous)
    store.put("pool", pool["id"], account, pool, action="updated")
    return Answer(pool)


def delete_pool(store: Store, call: Call) -> Answer:
    pool = _existing(store, "pool", "pool", call, "pool_id", "account_id")
    if _load_balancers_using_pool(store, pool["id"]):
        raise referenced()
    store.remove("pool", pool["id"])
    return Answer({"id": pool["id"]})


def pool_references(store: Store, call: Call) -> Answer:
    pool = _existing(store, "pool", "pool", call, "pool_id", "account_id")
    references = [_reference("referrer", "load_balancer", lb) for lb in _load_balancers_using_pool(store, pool["id"])]
    if pool.get("monitor"):
        monitor = store.get("monitor", pool["monitor"])
        if monitor is not None:
            references.append({"reference_type": "referral", "resource_id": monitor["id"],
                               "resource_name": monitor.get("description", ""), "resource_type": "monitor"})
    return Answer(references)


def _load_balancers_using_pool(store: Store, pool_id: str) -> list:
    return [lb for lb in store.all("load_balancer") if pool_id in pools_named_by(lb)]


def _reference(kind: str, resource_type: str, data: dict) -> dict:
    return {"reference_type": kind, "resource_id": data["id"], "resource_name": data.get("name", ""),
            "resource_type": resource_type}


def list_load_balancers(store: Store, call: Call) -> Answer:
    return listing(store.all("load_balancer", call.params["zone_id"]), call.query)


def create_load_balancer(store: Store, call: Call) -> Answer:
    zone_id = call.params["zone_id"]
    lb = _stamp(build_load_balancer(store, zone_id, require_body(call)), new_identifier(), None)
    store.put("load_balancer", lb["id"], zone_id, lb, action="created")
    return Answer(lb)


def get_load_balancer(store: Store, call: Call) -> Answer:
    return Answer(_existing(store, "load_balancer", "load balancer", call, "load_balancer_id", "zone_id"))


def change_load_balancer(store: Store, call: Call) -> Answer:
    zone_id = call.params["zone_id"]
    previous = _existing(store, "load_balancer", "load balancer", call, "load_balancer_id", "zone_id")
    lb = _stamp(build_load_balancer(store, zone_id, _write_body(call, previous)), previous["id"], previous)
    store.put("load_balancer", lb["id"], zone_id, lb, action="updated")
    return Answer(lb)


def delete_load_balancer(store: Store, call: Call) -> Answer:
    lb = _existing(store, "load_balancer", "load balancer", call, "load_balancer_id", "zone_id")
    store.remove("load_balancer", lb["id"])
    return Answer({"id": lb["id"]})


def _object_routes(base: str, key: str, handlers: Iterable) -> list:
    listing_handler, create, get, change, delete = handlers
    item = f"{base}/{{{key}}}"
    ids = {key: "identifier"}
    return [Route("GET", base, listing_handler), Route("POST", base, create),
            Route("GET", item, get, ids), Route("PUT", item, change, ids), Route("PATCH", item, change, ids),
            Route("DELETE", item, delete, ids)]


ROUTES = (
    _object_routes("accounts/{account_id}/load_balancers/monitors", "monitor_id",
                   (list_monitors, create_monitor, get_monitor, change_monitor, delete_monitor))
    + [Route("GET", "accounts/{account_id}/load_balancers/monitors/{monitor_id}/references", monitor_references,
             {"monitor_id": "identifier"})]
    + _object_routes("accounts/{account_id}/load_balancers/pools", "pool_id",
                     (list_pools, create_pool, get_pool, change_pool, delete_pool))
    + [Route("GET", "accounts/{account_id}/load_balancers/pools/{pool_id}/references", pool_references,
             {"pool_id": "identifier"})]
    + _object_routes("zones/{zone_id}/load_balancers", "load_balancer_id",
                     (list_load_balancers, create_load_balancer, get_load_balancer, change_load_balancer,
                      delete_load_balancer))
)
