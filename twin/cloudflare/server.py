"""The HTTP side: ``/client/v4/...`` like api.cloudflare.com, and the twin's read-only state view.

Every ``/client/v4`` call is authenticated first (``Authorization: Bearer <token>``, the token the
emulator was started with), then routed; the account or zone in the path must be one the emulator
serves (an id that is not an identifier: HTTP 400, code 7003; one it does not serve: HTTP 403, code
10000, as for a token without access to it). Answers use Cloudflare's envelope ``{"success",
"errors", "messages", "result"[, "result_info"]}``.

``GET /_twin/state`` (outside ``/client/v4``, same bearer token) answers the emulator's whole state as
JSON: ``{"accounts", "zones", "objects": {kind: {id: {"scope", "data", "private"}}}}``, ``data`` being
what the API answers for the object and ``private`` what it accepted but never returns (a tunnel's
secret). Tests and the rehearsal read it; nothing can change state through it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Mapping, Optional
from urllib.parse import parse_qs, urlsplit

from . import dns, errors, load_balancing, tunnels
from .api import Answer, Call, Route
from .errors import ApiError
from .store import IDENTIFIER, Observer, Store

API_PREFIX = "/client/v4"
STATE_PATH = "/_twin/state"
REQUESTS_PATH = "/_twin/requests"  # every /client/v4 call so far, for tests that must see none reached it
# Where the twin's cloudflared connectors register (the edge side of a tunnel; tunnels.connect).
CONNECTORS = re.compile(r"^/_twin/tunnels/(?P<tunnel_id>[0-9a-f-]{36})/connections$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROUTES: tuple = tuple(load_balancing.ROUTES) + tuple(dns.ROUTES) + tuple(tunnels.ROUTES)
MAX_BODY = 1 << 20


class ConfigurationError(ValueError):
    """The emulator cannot start with what it was given (an id that is not an identifier, no token...)."""


def _compile(route: Route) -> re.Pattern:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", route.pattern) + "$")


COMPILED = tuple((route, _compile(route)) for route in ROUTES)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, emulator: "CloudflareEmulator"):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.emulator = emulator
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        emulator = self.server.emulator
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        try:
            body = self._read_body()
            connectors = CONNECTORS.match(url.path)
            if connectors:
                if method not in ("POST", "DELETE") or not isinstance(body, dict):
                    raise errors.method_not_allowed(method)
                action = tunnels.connect if method == "POST" else tunnels.disconnect
                with emulator.store.lock:
                    self._send(200, {"success": True, "errors": [], "messages": [],
                                     "result": action(emulator.store, connectors["tunnel_id"], body)})
                return
            if url.path in (STATE_PATH, REQUESTS_PATH):
                emulator.authenticate(self.headers.get("Authorization"))
                if method != "GET":
                    raise errors.method_not_allowed(method)
                self._send(200, emulator.state() if url.path == STATE_PATH
                           else [{"method": m, "path": p} for m, p in emulator.requests])
                return
            if url.path != API_PREFIX and not url.path.startswith(API_PREFIX + "/"):
                raise errors.no_route()
            relative = url.path[len(API_PREFIX):].strip("/")
            emulator.record_request(method, relative)
            emulator.authenticate(self.headers.get("Authorization"))
            answer = emulator.dispatch(method, relative, query, body)
            envelope = {"success": True, "errors": [], "messages": [], "result": answer.result}
            if answer.result_info is not None:
                envelope["result_info"] = answer.result_info
            self._send(answer.status, envelope)
        except ApiError as error:
            self._send(error.status, {"success": False, "errors": error.errors(), "messages": [], "result": None})

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, 1001, "Request body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise errors.malformed_json(str(error)) from None

    def _send(self, status: int, document) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class CloudflareEmulator:
    """A Cloudflare API v4 emulator on ``host:port`` (port 0: a free one), serving ``accounts``
    (ids) and ``zones`` (id -> zone name), authenticated by ``token``.

    ``state_file``: load the objects from it at start (when it exists) and rewrite it after every
    accepted change. ``observers``: callbacks given a :class:`~twin.cloudflare.store.Change` after
    each accepted change (see :mod:`twin.cloudflare.store`)."""

    def __init__(self, token: str, accounts: Iterable[str], zones: Mapping[str, str], *, host: str = "127.0.0.1",
                 port: int = 0, state_file: Optional[Path] = None, observers: Iterable[Observer] = (),
                 verbose: bool = False):
        token = (token or "").strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigurationError("the API token must be one non-empty word")
        accounts = list(accounts)
        zones = dict(zones)
        for account in accounts:
            if not IDENTIFIER.match(account):
                raise ConfigurationError(f"account id {account!r} is not a Cloudflare identifier (32 hex digits)")
        for zone_id, zone_name in zones.items():
            if not IDENTIFIER.match(zone_id):
                raise ConfigurationError(f"zone id {zone_id!r} is not a Cloudflare identifier (32 hex digits)")
            if not zone_name or "." not in zone_name.strip("."):
                raise ConfigurationError(f"zone {zone_id}: {zone_name!r} is not a domain name")
        if not accounts:
            raise ConfigurationError("at least one account is required")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigurationError(f"listen address {host!r} is not an IP address") from None
        self._token = token.encode()
        self.host = host
        self.port = port
        self.verbose = verbose
        self.store = Store(accounts, {z: n.strip(".").lower() for z, n in zones.items()}, state_file, observers)
        self._requests: list[tuple[str, str]] = []
        self._requests_lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "CloudflareEmulator":
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        # A short poll interval: stop() waits up to one interval for the serving thread.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"cloudflare-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "CloudflareEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL, what the provider's ``cloudflare:baseUrl`` is set to."""
        return self.base + API_PREFIX

    # ------------------------------------------------------------------ views for tests and the rehearsal
    def state(self) -> dict:
        return self.store.snapshot()

    def add_observer(self, observer: Observer) -> None:
        self.store.add_observer(observer)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every ``/client/v4`` call received so far, as ``(method, path below /client/v4)``."""
        with self._requests_lock:
            return list(self._requests)

    def record_request(self, method: str, path: str) -> None:
        with self._requests_lock:
            self._requests.append((method, path))

    # ------------------------------------------------------------------ request handling
    def authenticate(self, header: Optional[str]) -> None:
        if header is None:
            raise errors.missing_credentials()
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or " " in credential:
            raise errors.malformed_authorization()
        if not hmac.compare_digest(credential.encode(), self._token):
            raise errors.authentication_error()

    def dispatch(self, method: str, path: str, query: dict, body) -> Answer:
        matched = [(route, match) for route, pattern in COMPILED if (match := pattern.match(path))]
        if not matched:
            raise errors.no_route()
        for route, match in matched:
            if route.method == method:
                params = match.groupdict()
                self._check_params(route, params, path)
                call = Call(method=method, path=path, params=params, query=query, body=body)
                with self.store.lock:
                    return route.handler(self.store, call)
        raise errors.method_not_allowed(method)

    def _check_params(self, route: Route, params: dict, path: str) -> None:
        for name, value in params.items():
            if name == "account_id":
                if not IDENTIFIER.match(value):
                    raise errors.invalid_identifier(path)
                if value not in self.store.accounts:
                    raise errors.authentication_error()
            elif name == "zone_id":
                if not IDENTIFIER.match(value):
                    raise errors.invalid_identifier(path)
                if value not in self.store.zones:
                    raise errors.authentication_error()
            elif route.id_kind.get(name) == "uuid":
                if not UUID.match(value):
                    raise errors.invalid_identifier(path)
            elif not IDENTIFIER.match(value):
                raise errors.invalid_identifier(path)
