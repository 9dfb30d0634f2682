"""The applied record: what the last successful ``pulumi up`` put in place.

CrossGuard policies only see a resource's *new* inputs (pulumi-policy#154),
so the program reads its last applied record back (a StackReference to this
very stack, output ``appliedRecord``) and registers it next to the target
record on the transition check. A record is plain JSON-able data:

``steps``       track -> current step name
``state``       the desired state (camelCase) of those steps
``history``     track -> one entry per applied step of that track, in plan order up to the
                current step: ``{"step", "digest", "gateDigest", "appliedAt"}``. ``digest``
                fingerprints the step's definition (what it changes), ``gateDigest`` what
                judges it (its criteria and touches); ``appliedAt`` is when it was applied.
``judgedBy``    what judges every step of the plan, applied or not: criteria, scopes and the
                metrics config (bazbii_plan.judging); the rollback triggers are in ``state``.
``since``       track -> ISO time at which its current step was applied
``dnsTtl``      record name -> {ttl, since, previousTtl}: when a DNS record's TTL
                took its current value and what it was before, which is what
                the "old TTL must have expired" rule needs.
``flagRollout`` flag name -> {rollout, since}: when each feature flag took its
                rollout (bazbii_plan.flags), which "held 100 % for its soak" needs.

The format grows by adding fields, never by changing one (``version`` stays 1, so a record
exported by an older program is still a record): a reader treats a missing field as "exported
before it existed" and skips what needs it. A record without ``judgedBy`` is judged by the
target's copy for one update; a history entry without ``gateDigest`` is compared by ``digest``
only. The record an update leaves behind has every field.

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

from .flags import rollout_since

JUDGED_BY = "judgedBy"  # the record's field: what judges every step (bazbii_plan.judging)

RECORD_VERSION = 1
# The parts of a step that define what applying it does; its texts (summary, gate, rollback)
# only describe it and may be improved after it was applied.
DIGESTED_STEP_FIELDS = ("changes", "requires", "reversible")
# The parts that judge it (bazbii_plan.judging), fingerprinted separately (``gateDigest``): records
# exported before this digest existed carry only ``digest``, and must still compare equal.
GATE_DIGESTED_STEP_FIELDS = ("criteria", "touches")


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
def _fingerprint(data: dict[str, Any], fields: tuple[str, ...]) -> str:
    canonical = json.dumps({key: data.get(key) for key in fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _step_data(step: Any) -> dict[str, Any]:
    """A pydantic Step or its camelCase dict, as plain data; criteria without their defaults (what was written)."""
    if hasattr(step, "model_dump"):
        data = step.model_dump(by_alias=True, mode="json")
        criteria = getattr(step, "criteria", None)
        data["criteria"] = criteria.model_dump(by_alias=True, mode="json", exclude_defaults=True) if criteria else None
        return data
    return dict(step)


def step_digest(step: Any) -> str:
    """A short fingerprint of what a plan step does (a pydantic Step or its camelCase dict)."""
    return _fingerprint(_step_data(step), DIGESTED_STEP_FIELDS)


def gate_digest(step: Any) -> str:
    """A short fingerprint of what judges a plan step: its criteria and touches."""
    return _fingerprint(_step_data(step), GATE_DIGESTED_STEP_FIELDS)


def plan_digests(plan: Any) -> dict[str, list[list[str]]]:
    """track -> ``[[step name, digest, gate digest], ...]`` for every step of the plan, in plan order."""
    return {name: [[step.name, step_digest(step), gate_digest(step)] for step in track.steps]
            for name, track in plan.tracks.items()}


def applied_digests(record: Optional[dict[str, Any]]) -> Optional[dict[str, list[list[str]]]]:
    """track -> ``[[step, digest(, gate digest)], ...]`` of a record's applied history (None: it has none).

    An entry exported before gate digests existed has two items; it is compared by its digest only.
    """
    history = (record or {}).get("history")
    if not isinstance(history, dict):
        return None
    return {
        track: [[str(entry.get("step")), str(entry.get("digest"))]
                + ([str(entry["gateDigest"])] if entry.get("gateDigest") else [])
                for entry in entries if isinstance(entry, dict)]
        for track, entries in history.items()
        if isinstance(entries, list)
    }


# --------------------------------------------------------------------------- records
def target_record(
    steps: dict[str, str],
    state: dict[str, Any],
    digests: dict[str, list[list[str]]],
    judged_by: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The record this update leaves behind, without times: pure config, the same at any evaluation.

    ``judged_by``: what judges every step of the plan (bazbii_plan.judging.judged_by).
    """
    history = {}
    for track, step in steps.items():
        entries = digests.get(track) or []
        names = [entry[0] for entry in entries]
        upto = names.index(step) + 1 if step in names else 0
        history[track] = [{"step": entry[0], "digest": entry[1], **({"gateDigest": entry[2]} if len(entry) > 2 else {})}
                          for entry in entries[:upto]]
    record = {"version": RECORD_VERSION, "steps": dict(steps), "state": state, "history": history}
    if judged_by is not None:
        record[JUDGED_BY] = judged_by
    return record


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
    flag_rollout = rollout_since(target["state"].get("flags") or {}, previous, at)
    return dict(target, history=history, since=since, dnsTtl=dns_ttl, flagRollout=flag_rollout)


def next_record(
    steps: dict[str, str],
    state: dict[str, Any],
    previous: Optional[dict[str, Any]],
    at: Optional[str],
    digests: Optional[dict[str, list[list[str]]]] = None,
    judged_by: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The stamped record an update at ``at`` leaves behind (``target_record`` + ``stamp_record``)."""
    return stamp_record(target_record(steps, state, digests or {}, judged_by), previous, at)
