"""The applied record: what the last successful ``pulumi up`` put in place.

CrossGuard policies only see a resource's *new* inputs (pulumi-policy#154),
so the program reads its last applied record back (a StackReference to this
very stack, output ``appliedRecord``) and registers it next to the target
record on the transition check. A record is plain JSON-able data:

``steps``       track -> current step name
``state``       the desired state (camelCase) of those steps
``history``     track -> one entry per applied step of that track, in plan order up to the
                current step: ``{"step", "digest", "appliedAt"}``. ``digest`` fingerprints
                the step's definition (what it changes); ``appliedAt`` is when it was applied.
``since``       track -> ISO time at which its current step was applied
``dnsTtl``      record name -> {ttl, since, previousTtl}: when a DNS record's TTL
                took its current value and what it was before, which is what
                the "old TTL must have expired" rule needs.

Two halves, so that no wall-clock value is ever a resource input (``pulumi up
--plan`` rejects any input that differs from the preview):

* :func:`target_record` is the record this update wants to leave behind, minus
  every time: pure config, identical whenever it is evaluated.
* :func:`stamp_record` adds the times. The record resource's provider calls it in
  ``create``/``update`` (when the step is really applied) with its old outputs;
  offline tools call it with the times they were told.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Optional

RECORD_VERSION = 1
# The parts of a step that define what applying it does; its texts (summary, gate, rollback)
# only describe it and may be improved after it was applied.
DIGESTED_STEP_FIELDS = ("changes", "requires", "reversible")


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("version") == RECORD_VERSION
        and isinstance(value.get("steps"), dict)
        and isinstance(value.get("state"), dict)
    )


# --------------------------------------------------------------------------- step digests
def step_digest(step: Any) -> str:
    """A short fingerprint of what a plan step does (a pydantic Step or its camelCase dict)."""
    data = step.model_dump(by_alias=True, mode="json") if hasattr(step, "model_dump") else dict(step)
    defining = {key: data.get(key) for key in DIGESTED_STEP_FIELDS}
    canonical = json.dumps(defining, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def plan_digests(plan: Any) -> dict[str, list[list[str]]]:
    """track -> ``[[step name, digest], ...]`` for every step of the plan, in plan order."""
    return {name: [[step.name, step_digest(step)] for step in track.steps] for name, track in plan.tracks.items()}


def applied_digests(record: Optional[dict[str, Any]]) -> Optional[dict[str, list[list[str]]]]:
    """track -> ``[[step, digest], ...]`` of a record's applied history (None: the record has none)."""
    history = (record or {}).get("history")
    if not isinstance(history, dict):
        return None
    return {
        track: [[str(entry.get("step")), str(entry.get("digest"))] for entry in entries if isinstance(entry, dict)]
        for track, entries in history.items()
        if isinstance(entries, list)
    }


# --------------------------------------------------------------------------- records
def target_record(
    steps: dict[str, str], state: dict[str, Any], digests: dict[str, list[list[str]]]
) -> dict[str, Any]:
    """The record this update leaves behind, without times: pure config, the same at any evaluation."""
    history = {}
    for track, step in steps.items():
        entries = digests.get(track) or []
        names = [name for name, _digest in entries]
        upto = names.index(step) + 1 if step in names else 0
        history[track] = [{"step": name, "digest": digest} for name, digest in entries[:upto]]
    return {"version": RECORD_VERSION, "steps": dict(steps), "state": state, "history": history}


def stamp_record(target: dict[str, Any], previous: Optional[dict[str, Any]], at: Optional[str]) -> dict[str, Any]:
    """``target`` with times: what was already applied keeps its time, what is applied now gets ``at``.

    A history entry keeps its time only if the same step with the same digest was
    applied at that position before; anything else is applied now. ``at`` None
    means unknown (a static walk of the plan).
    """
    prev_history = (previous or {}).get("history") or {}
    history: dict[str, list[dict[str, Any]]] = {}
    for track, entries in (target.get("history") or {}).items():
        before = prev_history.get(track) or []
        out = []
        for index, entry in enumerate(entries):
            old = before[index] if index < len(before) and isinstance(before[index], dict) else {}
            same = old.get("step") == entry["step"] and old.get("digest") == entry.get("digest")
            out.append(dict(entry, appliedAt=old.get("appliedAt") if same else at))
        history[track] = out

    prev_steps = (previous or {}).get("steps") or {}
    prev_since = (previous or {}).get("since") or {}
    since = {
        track: (prev_since.get(track) if prev_steps.get(track) == step else at)
        for track, step in target["steps"].items()
    }
    prev_ttl = (previous or {}).get("dnsTtl") or {}
    dns_ttl = {}
    for name, record in (target["state"].get("dns") or {}).get("records", {}).items():
        old = prev_ttl.get(name)
        if old and old.get("ttl") == record["ttl"]:
            dns_ttl[name] = dict(old)
        else:
            dns_ttl[name] = {"ttl": record["ttl"], "since": at, "previousTtl": old.get("ttl") if old else None}
    return dict(target, history=history, since=since, dnsTtl=dns_ttl)


def next_record(
    steps: dict[str, str],
    state: dict[str, Any],
    previous: Optional[dict[str, Any]],
    at: Optional[str],
    digests: Optional[dict[str, list[list[str]]]] = None,
) -> dict[str, Any]:
    """The stamped record an update at ``at`` leaves behind (``target_record`` + ``stamp_record``)."""
    return stamp_record(target_record(steps, state, digests or {}), previous, at)
