"""Time gates: rules that need to know how long an applied state has held.

One definition, three callers: the transition check's provider (``check()``,
engine side, on every preview and update), the policy pack
(``dns-lower-ttl-before-switch``) and the offline preview through the pack.
The applied times come from the applied record (stamped by the record
resource when each step was really applied); the current time is taken by
the caller when it judges (``now``), never carried as a resource input.

A one-step rollback is never held back by a wait: the waits protect moving
*forward* into a state whose effects are not yet safe (resolvers still
caching an old answer), while a rollback returns to a state that was already
serving.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Mapping, NamedTuple, Optional

from .errors import config_key
from .record import parse_time

# Defaults of the policy config keys of the same names (policies/pack.py), and what the
# engine-side check uses (a provider has no policy config).
MAX_TTL_FOR_SWITCH = 300
ASSUMED_OLD_TTL_SECONDS = 86400
# How a refusal that only time cures says so (the old TTL not outlived yet); a walk that waits matches it.
TTL_NOT_EXPIRED = "resolvers may still cache the old answer"

AUTOMATIC_TTL = 1
AUTOMATIC_TTL_SECONDS = 300  # Cloudflare's "automatic" TTL for DNS-only records

# Where a previous record came from when it has no real times: a static walk of the plan.
PLAN_WALK = "plan-walk"


class Problem(NamedTuple):
    what: str
    fix: str


def number(value: Any) -> Optional[float]:
    """Numbers arrive as floats through protobuf (and the mocks); bools are not numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def fmt(value: Any) -> str:
    """A number as the user wrote it (10, not 10.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def duration(seconds: float, round_up: bool = False) -> str:
    """``3600`` -> ``1 h``, ``1201`` -> ``20 min`` (``21 min`` rounded up), ``45`` -> ``45 s``.

    Elapsed times are rounded down and times left to wait up, so neither is overstated.
    """
    if seconds < 60:
        return f"{math.ceil(seconds) if round_up else int(seconds)} s"
    minutes = math.ceil(seconds / 60) if round_up else int(seconds // 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h" if not rest else f"{hours} h {rest} min"


def effective_ttl(ttl: Any) -> Optional[float]:
    value = number(ttl)
    if value is None:
        return None
    return float(AUTOMATIC_TTL_SECONDS) if value == AUTOMATIC_TTL else value


def dns_records(state: Optional[Mapping[str, Any]]) -> dict[str, dict]:
    return dict(((state or {}).get("dns") or {}).get("records") or {})


def switched(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return old.get("content") != new.get("content") or old.get("type") != new.get("type")


def dns_switch_problems(
    previous: Optional[Mapping[str, Any]],
    target_state: Mapping[str, Any],
    *,
    now: datetime,
    previous_source: str,
    is_rollback: bool,
    max_ttl: float = MAX_TTL_FOR_SWITCH,
    assumed_old_ttl: float = ASSUMED_OLD_TTL_SECONDS,
    switch_key: str = "bazbii:dnsPhase",
    time_scale: int = 1,
) -> list[Problem]:
    """A DNS-only record's content may change only at a TTL <= ``max_ttl`` applied for one old TTL.

    ``previous`` is the applied record (None: unknown, decided by the fail-closed rule);
    ``switch_key`` is the step key whose move switches the record (named by the fixes); a rehearsal's
    ``time_scale`` (bazbii:timeScale, from the applied record) divides the wait, as its resolvers' TTLs are.
    """
    if previous is None:
        return []
    before, after = dns_records(previous.get("state")), dns_records(target_state)
    ttl_times = previous.get("dnsTtl") or {}
    out = []
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old is None or not switched(old, new):
            continue
        if old.get("proxied") or new.get("proxied"):
            continue  # dns-proxied-moves-with-load-balancer
        what = (f"record {name!r} switches {old.get('type')} {old.get('content')} -> "
                f"{new.get('type')} {new.get('content')}")
        old_ttl, new_ttl = effective_ttl(old.get("ttl")), effective_ttl(new.get("ttl"))
        if old_ttl is None or old_ttl > max_ttl:
            out.append(Problem(
                f"{what} while its applied TTL is {fmt(old.get('ttl'))} s (> {fmt(max_ttl)} s): resolvers may keep "
                "the old answer that long",
                f"first apply a step that only lowers {config_key(('dns', 'records', name, 'ttl'))} to "
                f"{fmt(max_ttl)} or less, wait at least the old TTL, then switch the content",
            ))
            continue
        if new_ttl is not None and new_ttl < old_ttl:
            out.append(Problem(
                f"{what} and lowers its TTL {fmt(old.get('ttl'))} -> {fmt(new.get('ttl'))} in the same step",
                f"lower {config_key(('dns', 'records', name, 'ttl'))} in its own step, apply it, wait at least the "
                "old TTL, then switch the content",
            ))
            continue
        if previous_source == PLAN_WALK:
            continue  # static plan walk: the structural part (TTL lowered in an earlier step) holds
        if is_rollback:
            continue  # returning to the answer that was served until the last step: nothing to wait out
        timing = ttl_times.get(name) or {}
        previous_ttl = effective_ttl(timing.get("previousTtl"))
        wait = (previous_ttl if previous_ttl is not None else assumed_old_ttl) / time_scale
        try:
            since = parse_time(timing.get("since"))
        except (TypeError, ValueError, AttributeError):
            since = None
        if since is None:
            out.append(Problem(
                f"{what}, but when its TTL became {fmt(old.get('ttl'))} s is not recorded (source "
                f"{previous_source!r}), so it is unknown whether the old TTL of {duration(wait)} has passed",
                f"keep {switch_key} at the applied step until {duration(wait)} after the TTL change was applied; "
                "for an offline preview "
                "pass --applied <track>=<step>@<time> for the step that changed the TTL, or --base-age "
                "<how long ago the base was applied>",
            ))
            continue
        elapsed = now - since
        if elapsed < timedelta(seconds=wait):
            left = timedelta(seconds=wait) - elapsed
            out.append(Problem(
                f"{what} only {duration(max(elapsed.total_seconds(), 0))} after its TTL was lowered to "
                f"{fmt(old.get('ttl'))} s; {TTL_NOT_EXPIRED} for the old TTL of "
                f"{duration(wait)}",
                f"wait another {duration(left.total_seconds(), round_up=True)} (until {(since + timedelta(seconds=wait)).isoformat()}) "
                f"before setting {switch_key} to this step, and preview again",
            ))
    return out
