"""The applied record: what the last successful ``pulumi up`` put in place.

CrossGuard policies only see a resource's *new* inputs (pulumi-policy#154),
so the program carries the last applied record next to the target record on
one resource (the phase gate) and exports the new record as a stack output
for the next run to read back. A record is plain JSON-able data:

``steps``       track -> current step name
``state``       the desired state (camelCase) of those steps
``since``       track -> ISO time at which that step was first applied
``dnsTtl``      record name -> {ttl, since, previousTtl}: when a DNS record's TTL
                took its current value and what it was before, which is what
                the "old TTL must have expired" rule needs.
``flagRollout`` flag name -> {rollout, since}: when each feature flag took its
                rollout (bazbii_plan.flags), which "held 100 % for its soak" needs.

Carrying ``since`` forward is the program's job (:func:`next_record`): the
time a step was applied is kept until the step changes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .flags import rollout_since

RECORD_VERSION = 1


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def parse_time(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("version") == RECORD_VERSION
        and isinstance(value.get("steps"), dict)
        and isinstance(value.get("state"), dict)
    )


def next_record(
    steps: dict[str, str],
    state: dict[str, Any],
    previous: Optional[dict[str, Any]],
    at: Optional[str],
) -> dict[str, Any]:
    """The record this update will leave behind if it succeeds.

    ``at`` is the time of this update (None when unknown, e.g. a static plan
    walk); values that did not change keep the time they were first applied.
    """
    prev_steps = previous["steps"] if previous else {}
    prev_since = previous.get("since", {}) if previous else {}
    since = {
        track: (prev_since.get(track) if prev_steps.get(track) == step else at)
        for track, step in steps.items()
    }
    prev_ttl = previous.get("dnsTtl", {}) if previous else {}
    dns_ttl = {}
    for name, record in state.get("dns", {}).get("records", {}).items():
        old = prev_ttl.get(name)
        if old and old.get("ttl") == record["ttl"]:
            dns_ttl[name] = dict(old)
        else:
            dns_ttl[name] = {
                "ttl": record["ttl"],
                "since": at,
                "previousTtl": old.get("ttl") if old else None,
            }
    flag_rollout = rollout_since(state.get("flags") or {}, previous, at)
    return {"version": RECORD_VERSION, "steps": dict(steps), "state": state, "since": since, "dnsTtl": dns_ttl,
            "flagRollout": flag_rollout}
