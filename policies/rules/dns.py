"""DNS rules: switch a DNS-only record only once resolvers can no longer hold the old answer for long.

A record's content (or type) may change only when, in the *applied* record,
its TTL was already at most ``maxTtlForSwitch`` and had been so for at least
one old-TTL period (``previous.dnsTtl[name].since`` + ``previousTtl``). The
gate carries both the applied state and those times; everything read here is
config-derived and known at preview.

Proxied records are answered by Cloudflare's edge (their TTL is "automatic"):
resolvers never see the origin, so they move with load-balancer weights, not TTL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping, Optional

from bazbii_plan.record import parse_time

from ..builders import DNS_RECORD, gate_policy, number_setting, resource_policy
from .common import TIMED_SOURCES, Finding, Transition, dig, fmt, number
from .keys import state_key, track_key

AUTOMATIC_TTL = 1
AUTOMATIC_TTL_SECONDS = 300  # Cloudflare's "automatic" TTL for DNS-only records


def _records(state: Optional[Mapping[str, Any]]) -> dict[str, dict]:
    return dict(dig(state, "dns", "records", default={}) or {})


def effective_ttl(ttl: Any) -> Optional[float]:
    value = number(ttl)
    if value is None:
        return None
    return float(AUTOMATIC_TTL_SECONDS) if value == AUTOMATIC_TTL else value


def _switched(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return old.get("content") != new.get("content") or old.get("type") != new.get("type")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _switch_key(t: Transition) -> str:
    """The step key whose move switches the record (the moving track's, normally bazbii:dnsPhase)."""
    changed = t.moves()
    return track_key(t, changed[0].track) if changed else state_key("dns", "records")


def lower_ttl_before_switch(t: Transition, max_ttl: float, assumed_old_ttl: float) -> list[Finding]:
    """dns-lower-ttl-before-switch (see the module docstring)."""
    if t.previous is None:
        return []
    before, after = _records(t.previous_state), _records(t.target_state)
    ttl_times = (t.previous or {}).get("dnsTtl") or {}
    out = []
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old is None or not _switched(old, new):
            continue
        if old.get("proxied") or new.get("proxied"):
            continue  # dns-proxied-moves-with-load-balancer
        what = (f"record {name!r} switches {old.get('type')} {old.get('content')} -> "
                f"{new.get('type')} {new.get('content')}")
        old_ttl, new_ttl = effective_ttl(old.get("ttl")), effective_ttl(new.get("ttl"))
        if old_ttl is None or old_ttl > max_ttl:
            out.append(Finding(
                f"{what} while its applied TTL is {fmt(old.get('ttl'))} s (> {fmt(max_ttl)} s): resolvers may keep "
                "the old answer that long",
                f"first apply a step that only lowers {state_key('dns', 'records', name, 'ttl')} to {fmt(max_ttl)} or "
                "less, wait at least the old TTL, then switch the content",
            ))
            continue
        if new_ttl is not None and new_ttl < old_ttl:
            out.append(Finding(
                f"{what} and lowers its TTL {fmt(old.get('ttl'))} -> {fmt(new.get('ttl'))} in the same step",
                f"lower {state_key('dns', 'records', name, 'ttl')} in its own step, apply it, wait at least the old "
                "TTL, then switch the content",
            ))
            continue
        if not t.times_enforced:
            continue  # static plan walk: the structural part (TTL lowered in an earlier step) holds
        timing = ttl_times.get(name) or {}
        previous_ttl = number(timing.get("previousTtl"))
        wait = effective_ttl(previous_ttl) if previous_ttl is not None else assumed_old_ttl
        since = None
        try:
            since = parse_time(timing.get("since"))
        except (TypeError, ValueError):
            since = None
        if since is None or t.evaluated_at is None:
            out.append(Finding(
                f"{what}, but when its TTL became {fmt(old.get('ttl'))} s is not recorded (source "
                f"{t.previous_source!r}), so it is unknown whether the old TTL of {_duration(wait)} has passed",
                f"keep {_switch_key(t)} at the applied step until {_duration(wait)} after the TTL change was applied; "
                "for an offline preview pass --base-age <how long ago the base was applied>",
            ))
            continue
        elapsed = t.evaluated_at - since
        if elapsed < timedelta(seconds=wait):
            left = timedelta(seconds=wait) - elapsed
            out.append(Finding(
                f"{what} only {_duration(elapsed.total_seconds())} after its TTL was lowered to "
                f"{fmt(old.get('ttl'))} s; resolvers may still cache the old answer for the old TTL of "
                f"{_duration(wait)}",
                f"wait another {_duration(left.total_seconds())} (until {(since + timedelta(seconds=wait)).isoformat()}) "
                f"before setting {_switch_key(t)} to this step, and preview again",
            ))
    return out


def proxied_moves_with_load_balancer(t: Transition) -> list[Finding]:
    """dns-proxied-moves-with-load-balancer: a proxied record's target is not switched through DNS."""
    if t.previous is None:
        return []
    before, after = _records(t.previous_state), _records(t.target_state)
    out = []
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old is None or not (old.get("proxied") or new.get("proxied")):
            continue
        if _switched(old, new) or bool(old.get("proxied")) != bool(new.get("proxied")):
            out.append(Finding(
                f"proxied record {name!r} changes ({old.get('type')} {old.get('content')} proxied="
                f"{bool(old.get('proxied'))} -> {new.get('type')} {new.get('content')} proxied={bool(new.get('proxied'))})",
                f"keep {state_key('dns', 'records', name)} as applied and move its traffic with load-balancer pool "
                f"weights ({state_key('traffic', 'pools')}) instead",
            ))
    return out


def proxied_record_ttl(props: Mapping[str, Any]) -> list[Finding]:
    """dns-proxied-moves-with-load-balancer (DnsRecord): proxied records use the automatic TTL (1)."""
    if props.get("proxied") is True and number(props.get("ttl")) not in (None, float(AUTOMATIC_TTL)):
        return [Finding(
            f"proxied record {props.get('name')!r} sets ttl {fmt(props.get('ttl'))}; a proxied record's TTL is not "
            "what resolvers see, so lowering it does not prepare a move",
            f"set bazbii:dns.records.<record {props.get('name')}>.ttl: 1 (automatic) and move traffic with "
            "load-balancer weights (bazbii:traffic.pools)",
        )]
    return []



# --------------------------------------------------------------------------- the policies
CONFIG = {
    "maxTtlForSwitch": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 300,
                        "description": "a DNS-only record's content may change only at this TTL (s) or lower"},
    "assumedOldTtlSeconds": {"type": "integer", "minimum": 0, "default": 86400,
                             "description": "the old TTL to wait out when the record does not say what it was"},
}

POLICIES = [
    gate_policy(
        "dns-lower-ttl-before-switch",
        "A DNS-only record's content changes only after an applied step at a low TTL that has lasted one old TTL.",
        lambda t, c: lower_ttl_before_switch(
            t, number_setting(c, CONFIG, "maxTtlForSwitch"), number_setting(c, CONFIG, "assumedOldTtlSeconds")),
        CONFIG,
    ),
    gate_policy(
        "dns-proxied-moves-with-load-balancer",
        "Proxied records are moved with load-balancer weights, not by changing their content.",
        lambda t, c: proxied_moves_with_load_balancer(t),
    ),
    resource_policy(
        "dns-proxied-record-ttl",
        "Proxied DNS records use the automatic TTL.",
        (DNS_RECORD,),
        lambda props, _t, _n, _c: proxied_record_ttl(props),
    ),
]
