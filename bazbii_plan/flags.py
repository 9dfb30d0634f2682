"""Feature flags: who is in a flag's cohort, what the app reads, and when each flag took its rollout.

The flags track (``bazbii:flagsPhase``) owns the ``flags`` section of the
state (:class:`bazbii_plan.models.Flag`). A flag is on for the users whose
``id % 100`` is below its ``rollout`` percentage (:func:`in_cohort`, the one
definition the app, the rehearsal API and the tests use): raising the rollout
only ever adds users to the cohort, so 10 % -> 50 % keeps the first 10 %.

The app reads the flags as one JSON document (:func:`flags_document`) from the
ConfigMap that :class:`components.api_deployment.ApiDeployment` declares.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Optional

from bazbii_plan.facts import MIGRATION_STAGES

COHORT_BUCKETS = 100
SCHEMA_STAGES = MIGRATION_STAGES

# How the app receives the flags (components.api_deployment) and how the policies recognise it.
CONFIG_MAP_PREFIX = "bazbii-flags"
CONFIG_MAP_LABEL = "bazbii.io/feature-flags"
DOCUMENT_KEY = "flags.json"
ENV_VAR = "BAZBII_FLAGS"
CHECKSUM_ANNOTATION = "bazbii.io/flags-checksum"


def in_cohort(user_id: int, rollout: int) -> bool:
    """Whether the flag is on for ``user_id`` at ``rollout`` percent."""
    return user_id % COHORT_BUCKETS < rollout


def flags_document(flags: Mapping[str, Any]) -> str:
    """The JSON the app reads: flag name -> {rollout, oldPathRemoved}; stable bytes for equal content.

    ``flags`` holds :class:`~bazbii_plan.models.Flag` objects or their camelCase dicts.
    """
    out = {}
    for name, flag in sorted(flags.items()):
        data = flag.model_dump(by_alias=True, mode="json") if hasattr(flag, "model_dump") else dict(flag)
        # int(): the policies see config through protobuf, where 10 arrives as 10.0; the bytes must not differ.
        out[name] = {"rollout": int(data["rollout"]), "oldPathRemoved": bool((data.get("oldPath") or {}).get("removed"))}
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def document_checksum(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def config_map_name(document: str) -> str:
    """Named after its content, so a change is a new object and every pod reading it rolls."""
    return f"{CONFIG_MAP_PREFIX}-{document_checksum(document)[:12]}"


def schema_point(state: Optional[Mapping[str, Any]]) -> Optional[tuple[str, int]]:
    """``(migration id, stage index)`` the ``schema`` section is at; None when no migration was ever run."""
    migration = ((state or {}).get("schema") or {}).get("migration") or {}
    if not migration.get("id") or migration.get("stage") not in SCHEMA_STAGES:
        return None
    return str(migration["id"]), SCHEMA_STAGES.index(migration["stage"])


def schema_reached(state: Optional[Mapping[str, Any]], needs: Optional[Mapping[str, Any]]) -> bool:
    """Whether the state's schema is at or past ``needs`` ({migration, stage}); ids sort by their number."""
    if not needs:
        return True
    at = schema_point(state)
    if at is None:
        return False
    return at >= (str(needs["migration"]), SCHEMA_STAGES.index(needs["stage"]))


def rollout_since(
    flags: Mapping[str, Mapping[str, Any]], previous: Optional[Mapping[str, Any]], at: Optional[str]
) -> dict[str, dict[str, Any]]:
    """Per flag, the rollout it is at and since when (the applied record's ``flagRollout``).

    The time is kept while the rollout stays the same, so "held 100 % for its
    soak" is measured from the update that raised it to 100.
    """
    before = (previous or {}).get("flagRollout") or {}
    out = {}
    for name, flag in flags.items():
        old = before.get(name) or {}
        if old and old.get("rollout") == flag["rollout"]:
            out[name] = dict(old)
        else:
            out[name] = {"rollout": flag["rollout"], "since": at}
    return out
