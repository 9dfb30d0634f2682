"""Cloudflare Tunnels (``accounts/{account_id}/cfd_tunnel``) and their remotely managed
configuration (``.../cfd_tunnel/{tunnel_id}/configurations``).

A tunnel body that does not fit is HTTP 400, code 1001; a second live tunnel with the same name is
HTTP 409, code 1013; an unknown or deleted tunnel is HTTP 404, code 1003. Deleting a tunnel keeps
its tombstone (``deleted_at`` set): GET still answers for it and the list shows it unless
``is_deleted=false``, as on api.cloudflare.com; its configuration goes with it.

**Connectors.** cloudflared connects to Cloudflare's edge, not to the API: the twin's ``cloudflared``
(:mod:`twin.hostshims.cloudflared`) registers with :func:`connect` (``POST /_twin/tunnels/<id>/connections``,
authenticated by the tunnel's own secret, as its token is) and renews every few seconds; a connector not
heard from for :data:`CONNECTOR_TTL_SECONDS` is gone, as on the edge. The tunnel then reads
``status: healthy`` with its ``connections`` (also ``GET .../connections``), and, as ``cloudflared tunnel
delete`` says, a tunnel with active connections cannot be deleted (HTTP 400, code 1022, the twin's code)
unless ``cascade=true``: the program must stop its connectors first.

A configuration is checked the way cloudflared checks ingress rules, and refused with HTTP 400,
code 1056, ``"Bad Configuration: Validation failed: <reason>"`` (the reasons are cloudflared's):
no ingress rules, a last rule that is not a catch-all (it has a hostname or a path), a hostname
with a port or a misplaced wildcard, a rule without a service or with one cloudflared cannot run.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import re
import secrets
import time
import uuid
from typing import Optional

from . import fields as f
from .api import Answer, Call, Route, listing, require_body
from .errors import ApiError
from .store import Store, new_tunnel_id, now

TUNNEL = f.obj(name=f.string(), config_src=f.string("local", "cloudflare"), tunnel_secret=f.string())
ACCESS = f.obj(required=f.boolean(), teamName=f.string(), audTag=f.STRING_LIST)
ORIGIN_REQUEST = f.obj(
    access=ACCESS, caPool=f.string(), connectTimeout=f.integer(0), disableChunkedEncoding=f.boolean(),
    http2Origin=f.boolean(), httpHostHeader=f.string(), keepAliveConnections=f.integer(0),
    keepAliveTimeout=f.integer(0), matchSNItoHost=f.boolean(), noHappyEyeballs=f.boolean(), noTLSVerify=f.boolean(),
    originServerName=f.string(), proxyType=f.string("", "socks"), tcpKeepAlive=f.integer(0), tlsTimeout=f.integer(0),
    bastionMode=f.boolean(), proxyAddress=f.string(), proxyPort=f.integer(0, 65535), ipRules=f.list_of(f.ANY),
)
INGRESS_RULE = f.obj(hostname=f.string(), path=f.string(), service=f.string(), originRequest=ORIGIN_REQUEST)
CONFIG = f.obj(ingress=f.list_of(INGRESS_RULE), originRequest=ORIGIN_REQUEST,
               **{"warp-routing": f.obj(enabled=f.boolean())})
CONFIGURATION = f.obj(config=CONFIG, source=f.string("local", "cloudflare"))

SERVICE_SCHEMES = ("http", "https", "ws", "wss", "tcp", "ssh", "rdp", "smb", "unix", "unix+tls")
SERVICE_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>.+)$")
HTTP_STATUS = re.compile(r"^http_status:(?P<code>[0-9]{3})$")


CONNECTOR_TTL_SECONDS = 15.0


def tunnel_error(code: int, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


def bad_configuration(reason: str) -> ApiError:
    return ApiError(400, 1056, f"Bad Configuration: Validation failed: {reason}")


def not_found(tunnel_id: str) -> ApiError:
    return tunnel_error(1003, f"Tunnel {tunnel_id} not found", status=404)


# ----------------------------------------------------------------------------------- tunnels
def _checked_secret(secret: str) -> None:
    try:
        raw = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < 32:
        raise tunnel_error(1001, "tunnel_secret must be at least 32 bytes, encoded as a base64 string")


def _checked_tunnel_body(body: dict) -> dict:
    try:
        f.check_object(TUNNEL, body)
    except f.FieldError as error:
        raise tunnel_error(1001, f"Bad request: {error}") from None
    if body.get("tunnel_secret") is not None:
        _checked_secret(body["tunnel_secret"])
    return body


def _live_tunnel(store: Store, call: Call) -> dict:
    tunnel = store.get("tunnel", call.params["tunnel_id"], call.params["account_id"])
    if tunnel is None or tunnel.get("deleted_at"):
        raise not_found(call.params["tunnel_id"])
    return tunnel


def _check_unique_name(store: Store, account: str, name: str, tunnel_id: Optional[str]) -> None:
    for other in store.all("tunnel", account):
        if other["name"] == name and not other.get("deleted_at") and other["id"] != tunnel_id:
            raise tunnel_error(1013, f"You already have a tunnel named {name}", status=409)


def list_tunnels(store: Store, call: Call) -> Answer:
    tunnels = [_with_live_connectors(store, t) for t in store.all("tunnel", call.params["account_id"])]
    deleted = call.query.get("is_deleted")
    if deleted == "true":
        tunnels = [t for t in tunnels if t.get("deleted_at")]
    elif deleted == "false":
        tunnels = [t for t in tunnels if not t.get("deleted_at")]
    if call.query.get("name"):
        tunnels = [t for t in tunnels if t["name"] == call.query["name"]]
    if call.query.get("uuid"):
        tunnels = [t for t in tunnels if t["id"] == call.query["uuid"]]
    return listing(tunnels, call.query)


def create_tunnel(store: Store, call: Call) -> Answer:
    account = call.params["account_id"]
    body = _checked_tunnel_body(require_body(call))
    if not body.get("name"):
        raise tunnel_error(1001, "Bad request: name is required")
    _check_unique_name(store, account, body["name"], None)
    config_src = (body.get("config_src") or "local").lower()
    moment = now()
    tunnel = {
        "id": new_tunnel_id(), "account_tag": account, "created_at": moment, "deleted_at": None,
        "name": body["name"], "connections": [], "conns_active_at": None, "conns_inactive_at": None,
        "tun_type": "cfd_tunnel", "metadata": {}, "status": "inactive",
        "remote_config": config_src == "cloudflare", "config_src": config_src,
    }
    secret = body.get("tunnel_secret") or base64.b64encode(secrets.token_bytes(32)).decode()
    store.put("tunnel", tunnel["id"], account, tunnel, action="created", private={"tunnel_secret": secret})
    return Answer(tunnel)


def get_tunnel(store: Store, call: Call) -> Answer:
    tunnel = store.get("tunnel", call.params["tunnel_id"], call.params["account_id"])
    if tunnel is None:
        raise not_found(call.params["tunnel_id"])
    return Answer(_with_live_connectors(store, tunnel))


def edit_tunnel(store: Store, call: Call) -> Answer:
    account = call.params["account_id"]
    previous = _live_tunnel(store, call)
    body = _checked_tunnel_body(require_body(call))
    if "config_src" in body and (body["config_src"] or "local").lower() != previous["config_src"]:
        raise tunnel_error(1001, "Bad request: config_src cannot be changed on an existing tunnel")
    tunnel = copy.deepcopy(previous)
    if body.get("name"):
        _check_unique_name(store, account, body["name"], previous["id"])
        tunnel["name"] = body["name"]
    private = dict(store.private("tunnel", previous["id"]))
    if body.get("tunnel_secret"):
        private["tunnel_secret"] = body["tunnel_secret"]
    store.put("tunnel", tunnel["id"], account, tunnel, action="updated", private=private)
    return Answer(tunnel)


def delete_tunnel(store: Store, call: Call) -> Answer:
    tunnel = copy.deepcopy(_with_live_connectors(store, _live_tunnel(store, call)))
    if tunnel["connections"] and call.query.get("cascade") != "true":
        raise tunnel_error(1022, f"Cannot delete tunnel {tunnel['id']} because it has active connections; "
                                 "stop its connectors first (or delete with cascade=true)")
    tunnel.update(deleted_at=now(), connections=[], status="deleted")
    if store.get("tunnel_configuration", tunnel["id"]) is not None:
        store.remove("tunnel_configuration", tunnel["id"])
    store.tombstone("tunnel", tunnel["id"], tunnel)
    return Answer(tunnel)


# ----------------------------------------------------------------------------------- configuration
def check_ingress(config: dict) -> None:
    """cloudflared's ingress validation, rule by rule, then the catch-all at the end."""
    rules = config.get("ingress")
    if rules is None:
        return  # a configuration without ingress (only origin defaults or warp-routing) is valid
    if not rules:
        raise bad_configuration("The config file doesn't contain any ingress rules")
    for index, rule in enumerate(rules):
        hostname = rule.get("hostname") or ""
        if ":" in hostname:
            raise bad_configuration("Hostname cannot contain a port")
        if hostname.count("*") > 1 or ("*" in hostname and not (hostname == "*" or hostname.startswith("*."))):
            raise bad_configuration('Hostname patterns can have at most one wildcard character ("*") and it can only '
                                    'be used for subdomains, e.g. "*.example.com"')
        _check_service(index, rule.get("service"))
    last = rules[-1]
    if (last.get("hostname") or "") not in ("", "*") or last.get("path"):
        raise bad_configuration("The last ingress rule must match all URLs (i.e. it should not have a hostname or "
                                "path filter)")


def _check_service(index: int, service: Optional[str]) -> None:
    if not service:
        raise bad_configuration(f"ingress rule #{index + 1} has no service")
    if service in ("hello_world", "bastion", "socks5") or service.startswith(("unix:", "unix+tls:")):
        return
    status = HTTP_STATUS.match(service)
    if status:
        if not 100 <= int(status["code"]) <= 599:
            raise bad_configuration(f"ingress rule #{index + 1}: {service} is not a valid HTTP status")
        return
    url = SERVICE_URL.match(service)
    if not url or url["scheme"] not in SERVICE_SCHEMES:
        raise bad_configuration(f"ingress rule #{index + 1}: {service} is not a service cloudflared can run "
                                f"(a URL with one of {', '.join(SERVICE_SCHEMES)}, http_status:<code>, hello_world, "
                                f"bastion or socks5)")


def get_configuration(store: Store, call: Call) -> Answer:
    tunnel = _live_tunnel(store, call)
    stored = store.get("tunnel_configuration", tunnel["id"])
    if stored is not None:
        return Answer(stored)
    return Answer({"account_id": call.params["account_id"], "tunnel_id": tunnel["id"], "version": 0,
                   "config": None, "source": tunnel["config_src"], "created_at": tunnel["created_at"]})


def put_configuration(store: Store, call: Call) -> Answer:
    account = call.params["account_id"]
    tunnel = _live_tunnel(store, call)
    body = require_body(call)
    try:
        f.check_object(CONFIGURATION, body)
    except f.FieldError as error:
        raise bad_configuration(str(error)) from None
    config = body.get("config")
    if config is None:
        raise bad_configuration("config is required")
    check_ingress(config)
    previous = store.get("tunnel_configuration", tunnel["id"])
    configuration = {
        "account_id": account, "tunnel_id": tunnel["id"], "version": (previous or {}).get("version", 0) + 1,
        "config": config, "source": (body.get("source") or "cloudflare").lower(), "created_at": now(),
    }
    store.put("tunnel_configuration", tunnel["id"], account, configuration,
              action="updated" if previous else "created")
    return Answer(configuration)


# ----------------------------------------------------------------------------------- connectors (cloudflared)
def _with_live_connectors(store: Store, tunnel: dict) -> dict:
    """The tunnel with connectors not heard from within the TTL dropped (status follows)."""
    if tunnel.get("deleted_at"):
        return tunnel
    private = dict(store.private("tunnel", tunnel["id"]))
    seen = dict(private.get("connector_seen", {}))
    cutoff = time.time() - CONNECTOR_TTL_SECONDS
    live = [c for c in tunnel.get("connections", []) if seen.get(c["client_id"], 0) >= cutoff]
    if len(live) == len(tunnel.get("connections", [])):
        return tunnel
    updated = dict(tunnel, connections=live, status="healthy" if live else "inactive")
    if not live:
        updated["conns_inactive_at"] = now()
    private["connector_seen"] = {c["client_id"]: seen[c["client_id"]] for c in live}
    store.put("tunnel", tunnel["id"], tunnel["account_tag"], updated, action="updated", private=private)
    return updated


def _connector_tunnel(store: Store, tunnel_id: str, body: dict) -> tuple[dict, dict]:
    tunnel = store.get("tunnel", tunnel_id)
    if tunnel is None or tunnel.get("deleted_at") or tunnel["account_tag"] != body.get("account"):
        raise not_found(tunnel_id)
    private = dict(store.private("tunnel", tunnel_id))
    if not hmac.compare_digest(str(body.get("secret", "")).encode(), private.get("tunnel_secret", "").encode()):
        raise ApiError(403, 10000, "Authentication error: the tunnel token's secret is not this tunnel's")
    return _with_live_connectors(store, tunnel), private


def connect(store: Store, tunnel_id: str, body: dict) -> dict:
    """Register or renew a connector (``connector``: its name; ``origin``: the address it connects from)."""
    connector = str(body.get("connector") or "")
    if not connector:
        raise ApiError(400, 1001, "Bad request: connector is required")
    tunnel, private = _connector_tunnel(store, tunnel_id, body)
    connections = [c for c in tunnel["connections"] if c["client_id"] != connector]
    known = next((c for c in tunnel["connections"] if c["client_id"] == connector), None)
    connections.append(known or {"id": str(uuid.uuid4()), "client_id": connector, "client_version": "2026.11.0",
                                 "colo_name": "twin", "is_pending_reconnect": False, "opened_at": now(),
                                 "origin_ip": str(body.get("origin") or "")})
    private["connector_seen"] = {**private.get("connector_seen", {}), connector: time.time()}
    updated = dict(tunnel, connections=connections, status="healthy")
    if known is None:
        updated["conns_active_at"] = now()
    store.put("tunnel", tunnel_id, tunnel["account_tag"], updated, action="updated", private=private)
    return updated


def disconnect(store: Store, tunnel_id: str, body: dict) -> dict:
    tunnel, private = _connector_tunnel(store, tunnel_id, body)
    connections = [c for c in tunnel["connections"] if c["client_id"] != str(body.get("connector") or "")]
    seen = {k: v for k, v in private.get("connector_seen", {}).items() if k != body.get("connector")}
    updated = dict(tunnel, connections=connections, status="healthy" if connections else "inactive")
    if not connections:
        updated["conns_inactive_at"] = now()
    store.put("tunnel", tunnel_id, tunnel["account_tag"], updated, action="updated",
              private=dict(private, connector_seen=seen))
    return updated


def list_connections(store: Store, call: Call) -> Answer:
    tunnel = _with_live_connectors(store, _live_tunnel(store, call))
    return Answer(tunnel["connections"])


_BASE = "accounts/{account_id}/cfd_tunnel"
_ITEM = _BASE + "/{tunnel_id}"
_IDS = {"tunnel_id": "uuid"}
ROUTES = [
    Route("GET", _BASE, list_tunnels), Route("POST", _BASE, create_tunnel),
    Route("GET", _ITEM, get_tunnel, _IDS), Route("PATCH", _ITEM, edit_tunnel, _IDS),
    Route("DELETE", _ITEM, delete_tunnel, _IDS),
    Route("GET", _ITEM + "/configurations", get_configuration, _IDS),
    Route("GET", _ITEM + "/connections", list_connections, _IDS),
    Route("PUT", _ITEM + "/configurations", put_configuration, _IDS),
]
