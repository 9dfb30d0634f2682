"""Preview-like differences between two evaluations of the program: create, update, delete.

Every changed input is shown, including a change inside a secret-wrapped value,
without printing the secret: a secret connection string (libpq ``key=value`` or
a URL) is shown parsed, with its password as ``[secret]``, so moving the pooler
reads ``stringData.DATABASE_URL.host: 10.0.0.1 -> 10.0.0.3``. Any other secret
(a key, a password, a script on stdin) is ``[secret]``; when it changes the
line says so (``[secret] -> [secret] (changed)``). Changes are detected by
comparing keyed digests of the secret parts (HMAC with a key made for this
process and never stored), so nothing derived from a secret is printed either.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from components.applied_record import RECORD_MARKER
from components.phase_gate import GATE_MARKER

from .harness import SECRET_MARKER, Evaluation, RegisteredResource

# Inputs that no operator reads in a plan (the pickled provider changes with any code edit).
IGNORED_INPUTS = {"__provider"}
CHANGED_SECRET = f"{SECRET_MARKER} (changed)"
# Parts of a secret connection string or connection object that are shown; every other part stays hidden.
SHOWN_PARTS = {"scheme", "host", "hostaddr", "port", "dbname", "user", "sslmode", "application_name",
               "connect_timeout", "target_session_attrs"}
_DIGEST_KEY = os.urandom(32)  # per process: digests only ever compare two values of this run
_KV_PAIR = re.compile(r"\s*([a-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
DSN_KEYWORDS = {"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "sslmode", "sslpassword",
                "sslkey", "application_name", "connect_timeout", "target_session_attrs", "options"}


@dataclass
class PropertyChange:
    path: str
    before: Any
    after: Any


@dataclass
class ResourceChange:
    op: str  # "create" | "update" | "delete"
    type: str
    name: str
    urn: str
    changes: list[PropertyChange] = field(default_factory=list)


def _fake_ids(resources: Iterable[RegisteredResource]) -> dict[str, str]:
    # The mocks give each resource a deterministic id; show names instead (e.g. pool ids in LB weights).
    return {hashlib.sha1(f"{r.type}::{r.name}".encode()).hexdigest()[:12]: r.name for r in resources}


def _normalise(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {ids.get(k, k): _normalise(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, ids) for v in value]
    if isinstance(value, str) and value in ids:
        return ids[value]
    return value


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1]}}`` -> ``{"a.b[0]": 1}``; empty containers are kept as leaves."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for key, child in value.items():
            out.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and value:
        for index, child in enumerate(value):
            out.update(flatten(child, f"{prefix}[{index}]"))
    else:
        out[prefix] = value
    return out


def property_changes(before: dict[str, Any], after: dict[str, Any]) -> list[PropertyChange]:
    flat_before, flat_after = flatten(before), flatten(after)
    changes = []
    for path in sorted(set(flat_before) | set(flat_after)):
        old, new = flat_before.get(path), flat_after.get(path)
        if old != new:
            changes.append(PropertyChange(path, old, new))
    return changes


# --------------------------------------------------------------------------- secrets, opened without showing them
def _digest(value: Any) -> str:
    return "digest:" + hmac.new(_DIGEST_KEY, repr(value).encode(), hashlib.sha256).hexdigest()


def parse_dsn(text: str) -> Optional[dict[str, str]]:
    """A libpq ``key=value`` connection string or a ``scheme://user:password@host:port/db?k=v`` URL, as a dict."""
    if "://" in text:
        try:
            url = urlsplit(text)
            port = url.port
        except ValueError:
            return None
        if not url.scheme or not url.hostname:
            return None
        parts = {"scheme": url.scheme, "user": unquote(url.username or ""), "password": unquote(url.password or ""),
                 "host": url.hostname, "port": str(port or ""), "dbname": unquote(url.path.lstrip("/"))}
        parts.update(parse_qsl(url.query))
        return {k: v for k, v in parts.items() if v}
    pairs, position = {}, 0
    for match in _KV_PAIR.finditer(text):
        if match.start() != position or match[1] not in DSN_KEYWORDS:
            return None
        value = match[2]
        pairs[match[1]] = value[1:-1].replace("\\'", "'") if value.startswith("'") else value
        position = match.end()
    if text[position:].strip() or not pairs.keys() & {"host", "hostaddr", "dbname"}:
        return None
    return pairs


def _open_secret(value: Any, hide: Callable[[Any], Any]) -> Any:
    """A secret value with every part but :data:`SHOWN_PARTS` replaced by ``hide(part)``.

    A connection string is parsed first; a connection object (e.g. a command's SSH ``connection``) shows its
    host, port and user the same way, and its other values are opened in turn. Anything else is hidden whole.
    """
    if isinstance(value, str):
        parsed = parse_dsn(value)
        return hide(value) if parsed is None else _open_secret(parsed, hide)
    if isinstance(value, dict):  # e.g. a Secret's whole stringData, or an SSH connection object
        return {k: v if k in SHOWN_PARTS and isinstance(v, (str, int, float)) else _open_secret(v, hide)
                for k, v in value.items()}
    return hide(value)


def _view(value: Any, secret_paths: frozenset, hide: Callable[[Any], Any], path: tuple = ()) -> Any:
    if path in secret_paths:
        return _open_secret(value, hide)
    if isinstance(value, dict):
        return {k: _view(v, secret_paths, hide, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_view(v, secret_paths, hide, path + (i,)) for i, v in enumerate(value)]
    return value


def _inputs(resource: RegisteredResource, hide: Callable[[Any], Any], ids: dict[str, str]) -> dict[str, Any]:
    inputs = {k: v for k, v in _view(resource.inputs, resource.secret_paths, hide).items() if k not in IGNORED_INPUTS}
    if inputs.get("gate") == GATE_MARKER:
        # The gate carries whole records; its change is the step move (state changes are listed apart).
        inputs = {"steps": (inputs.get("target") or {}).get("steps"), "override": inputs.get("override")}
    elif inputs.get("record") == RECORD_MARKER:
        # Likewise the applied record (registered last): the steps it will record.
        inputs = {"steps": (inputs.get("applied") or {}).get("steps")}
    return _normalise(inputs, ids)


@dataclass
class _Views:
    shown: dict[str, Any]  # secret parts as [secret]: safe to print
    compared: dict[str, Any]  # secret parts as keyed digests: never printed, only compared


def _views(resource: Optional[RegisteredResource], ids: dict[str, str]) -> _Views:
    if resource is None:
        return _Views({}, {})
    return _Views(_inputs(resource, lambda _v: SECRET_MARKER, ids), _inputs(resource, _digest, ids))


def _resource_changes(before: _Views, after: _Views) -> list[PropertyChange]:
    shown_before, shown_after = flatten(before.shown), flatten(after.shown)
    changes = []
    for change in property_changes(before.compared, after.compared):
        old, new = shown_before.get(change.path), shown_after.get(change.path)
        if old == new == SECRET_MARKER:
            new = CHANGED_SECRET
        changes.append(PropertyChange(change.path, old, new))
    return changes


def diff_evaluations(before: Evaluation | None, after: Evaluation) -> list[ResourceChange]:
    """Resource changes going from ``before`` (None: nothing deployed) to ``after``, in registration order."""
    old = {r.urn: r for r in (before.resources if before else [])}
    new = {r.urn: r for r in after.resources}
    ids = _fake_ids(list(old.values()) + list(new.values()))
    result: list[ResourceChange] = []
    for urn, resource in new.items():
        if urn not in old:
            result.append(ResourceChange("create", resource.type, resource.name, urn,
                                         _resource_changes(_views(None, ids), _views(resource, ids))))
            continue
        changes = _resource_changes(_views(old[urn], ids), _views(resource, ids))
        if changes:
            result.append(ResourceChange("update", resource.type, resource.name, urn, changes))
    for urn, resource in old.items():
        if urn not in new:
            result.append(ResourceChange("delete", resource.type, resource.name, urn,
                                         _resource_changes(_views(resource, ids), _views(None, ids))))
    return result


def state_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[PropertyChange]:
    """Changed leaves of the desired state, e.g. ``traffic.pools.server2.weight 10 -> 50``."""
    return property_changes(before or {}, after)
