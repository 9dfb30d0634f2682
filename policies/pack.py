"""The zero-downtime pack: every rules module's policies, in one list.

Each rules module in :mod:`policies.rules` declares its policies (name,
description, enforcement, config schema with defaults, check) beside its rule
functions and exports them as ``POLICIES``; this module only concatenates
them. ``POLICIES`` is what ``policies/__main__.py`` hands to ``PolicyPack`` and
what :func:`policies.offline.run_policies` drives offline, so both run the very
same ``validate`` callables. Importing this module never starts the gRPC
server (only constructing a ``PolicyPack`` does). How a rule becomes a policy
object: :mod:`policies.builders`.
"""

from __future__ import annotations

from typing import Any

from .builders import DEFAULT_ENFORCEMENT, PACK_NAME, PREVIEW_UNKNOWN
from .rules import database, dns, flags, judging, kubernetes, plan, safety, schema, scope, traffic

__all__ = ["DEFAULT_ENFORCEMENT", "JUDGED_AT_UP", "PACK_NAME", "POLICIES", "POLICY_NAMES", "SCHEMAS"]

POLICIES = [
    *plan.POLICIES,
    *scope.POLICIES,
    *judging.POLICIES,
    *traffic.POLICIES,
    *dns.POLICIES,
    *database.POLICIES,
    *schema.POLICIES,
    *kubernetes.POLICIES,
    *safety.POLICIES,
    *flags.POLICIES,
]

POLICY_NAMES = [p.name for p in POLICIES]
# Policies a real `pulumi preview` reports as "can't run during preview" (advisory), and why (policies.builders).
JUDGED_AT_UP = {p.name: getattr(p, PREVIEW_UNKNOWN) for p in POLICIES if getattr(p, PREVIEW_UNKNOWN, "")}
if len(set(POLICY_NAMES)) != len(POLICY_NAMES):
    raise ImportError(f"policy names must be unique: {sorted(n for n in POLICY_NAMES if POLICY_NAMES.count(n) > 1)}")


def _schemas() -> dict[str, dict[str, Any]]:
    """Every config property of the pack (property -> JSON schema with its default); one meaning per name."""
    out: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        for key, property_schema in (policy.config_schema.properties if policy.config_schema else {}).items():
            if out.setdefault(key, property_schema) != property_schema:
                raise ImportError(f"config property {key!r} is declared with two different schemas")
    return out


SCHEMAS = _schemas()
