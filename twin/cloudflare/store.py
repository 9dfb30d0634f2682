"""The emulator's state: the accounts and zones it serves, every object the API created, and who
is told about changes.

Objects are kept as Cloudflare returns them (the API representation), each with the account or
zone it lives in (its *scope*) and, apart from the representation, values the API accepts but never
returns (a tunnel's secret). One lock serialises every request, so the API is linearisable like a
single Cloudflare control plane.

With a state file, the objects are loaded at start and the file is rewritten after every accepted
change, atomically (a temporary file in the same directory, then ``os.replace``), so a crash never
leaves half a file and an emulator restarted on the same file carries on where the last one stopped.

Observers (:class:`Change` callbacks) run after each accepted change, in the order the changes were
accepted, while the lock is held: an observer sees the state the API has just answered with, and
must not call the emulator's HTTP API itself (it would wait for the lock it is holding). An observer
that raises is reported on stderr; the change stays accepted (Cloudflare accepted it; whatever the
observer drives lags behind, which is the observer's problem to surface).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

KINDS = ("monitor", "pool", "load_balancer", "dns_record", "tunnel", "tunnel_configuration")
STATE_FORMAT = 1
IDENTIFIER = re.compile(r"^[0-9a-f]{32}$")


class StateFileError(ValueError):
    """The state file given at start cannot be used (unreadable, not JSON, or not ours)."""


@dataclass(frozen=True)
class Change:
    """One accepted change. ``state`` is the object's API representation after the change, ``None``
    once it no longer exists for the API (deleted; a deleted tunnel only keeps its tombstone)."""

    kind: str
    action: str  # created | updated | deleted
    id: str
    scope: str  # the account (monitors, pools, tunnels, configurations) or zone (load balancers, DNS)
    state: Optional[dict]


Observer = Callable[[Change], None]


def new_identifier() -> str:
    """Cloudflare's identifiers: 32 hex digits."""
    return secrets.token_hex(16)


def new_tunnel_id() -> str:
    """Tunnel ids are UUIDs."""
    return str(uuid.uuid4())


def now() -> str:
    """RFC 3339 with microseconds, as Cloudflare writes its timestamps."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    def __init__(self, accounts: Iterable[str], zones: Mapping[str, str], state_file: Optional[Path] = None,
                 observers: Iterable[Observer] = ()):
        self.accounts = frozenset(accounts)
        self.zones = dict(zones)  # zone id -> zone name
        self.state_file = Path(state_file) if state_file else None
        self.lock = threading.RLock()
        self._observers = list(observers)
        # kind -> id -> {"scope": ..., "data": API representation, "private": values never returned}
        self._records: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}
        if self.state_file and self.state_file.exists():
            self._load()

    # ------------------------------------------------------------------ observers
    def add_observer(self, observer: Observer) -> None:
        with self.lock:
            self._observers.append(observer)

    def _notify(self, change: Change) -> None:
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:  # noqa: BLE001 - an observer's failure must not undo an accepted change
                print(f"cloudflare emulator: observer {observer!r} failed on {change.kind} {change.id} "
                      f"({change.action}):\n{traceback.format_exc()}", file=sys.stderr)

    # ------------------------------------------------------------------ reads
    def get(self, kind: str, object_id: str, scope: Optional[str] = None) -> Optional[dict]:
        record = self._records[kind].get(object_id)
        if record is None or (scope is not None and record["scope"] != scope):
            return None
        return record["data"]

    def private(self, kind: str, object_id: str) -> dict:
        return self._records[kind][object_id]["private"]

    def all(self, kind: str, scope: Optional[str] = None) -> list[dict]:
        return [r["data"] for r in self._records[kind].values() if scope is None or r["scope"] == scope]

    def snapshot(self) -> dict:
        """A deep copy of every object, by kind and id, with its scope and private values."""
        with self.lock:
            return {"accounts": sorted(self.accounts), "zones": dict(self.zones),
                    "objects": copy.deepcopy(self._records)}

    # ------------------------------------------------------------------ writes
    def put(self, kind: str, object_id: str, scope: str, data: dict, *, action: str,
            private: Optional[dict] = None) -> None:
        """Store ``data`` as the object's representation (``private``: values the API never returns;
        kept from before when not given) and tell the observers."""
        self._store(kind, object_id, scope, data, private)
        self._commit(Change(kind, action, object_id, scope, copy.deepcopy(data)))

    def tombstone(self, kind: str, object_id: str, data: dict) -> None:
        """Keep a deleted object's final representation (Cloudflare still answers GET for a deleted
        tunnel); for observers it is deleted."""
        scope = self._records[kind][object_id]["scope"]
        self._store(kind, object_id, scope, data, None)
        self._commit(Change(kind, "deleted", object_id, scope, None))

    def _store(self, kind: str, object_id: str, scope: str, data: dict, private: Optional[dict]) -> None:
        record = self._records[kind].get(object_id)
        kept_private = record["private"] if record else {}
        self._records[kind][object_id] = {"scope": scope, "data": data,
                                          "private": private if private is not None else kept_private}

    def remove(self, kind: str, object_id: str) -> None:
        record = self._records[kind].pop(object_id)
        self._commit(Change(kind, "deleted", object_id, record["scope"], None))

    def _commit(self, change: Change) -> None:
        if self.state_file:
            self._save()
        self._notify(change)

    # ------------------------------------------------------------------ persistence
    def _save(self) -> None:
        payload = json.dumps({"format": STATE_FORMAT, "objects": self._records}, indent=1, sort_keys=True)
        directory = self.state_file.parent
        fd, temporary = tempfile.mkstemp(prefix=f".{self.state_file.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.state_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _load(self) -> None:
        try:
            document = json.loads(self.state_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise StateFileError(f"state file {self.state_file}: {error}") from None
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT \
                or not isinstance(document.get("objects"), dict):
            raise StateFileError(f"state file {self.state_file}: not a Cloudflare emulator state "
                                 f"(format {STATE_FORMAT})")
        for kind, objects in document["objects"].items():
            if kind not in self._records or not isinstance(objects, dict):
                raise StateFileError(f"state file {self.state_file}: unknown object kind {kind!r}")
            self._records[kind] = objects
