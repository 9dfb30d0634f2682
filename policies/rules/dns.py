"""DNS rules: switch a DNS-only record only once resolvers can no longer hold the old answer for long.

A record's content (or type) may change only when, in the *applied* record,
its TTL was already at most ``maxTtlForSwitch`` and had been so for at least
one old-TTL period (``previous.dnsTtl[name].since`` + ``previousTtl``). The
transition check carries both the applied state and those times (stamped by
the record resource when the TTL step was applied); the rule itself lives in
:mod:`bazbii_plan.timegates`, which the check's provider runs too.

Proxied records are answered by Cloudflare's edge (their TTL is "automatic"):
resolvers never see the origin, so they move with load-balancer weights, not TTL.
"""

from __future__ import annotations

from typing import Any, Mapping

from bazbii_plan import timegates
from bazbii_plan.timegates import AUTOMATIC_TTL, dns_records, dns_switch_problems, switched
from bazbii_plan.transitions import judging_time_scale

from ..builders import DNS_RECORD, gate_policy, number_setting, resource_policy
from .common import Finding, Transition, fmt, number
from .keys import state_key, track_key


def _switch_key(t: Transition) -> str:
    """The step key whose move switches the record (the moving track's, normally bazbii:dnsPhase)."""
    changed = t.moves()
    return track_key(t, changed[0].track) if changed else state_key("dns", "records")


def lower_ttl_before_switch(t: Transition, max_ttl: float, assumed_old_ttl: float) -> list[Finding]:
    """dns-lower-ttl-before-switch: the time gate of :mod:`bazbii_plan.timegates`, judged at ``t.now``."""
    return [
        Finding(problem.what, problem.fix)
        for problem in dns_switch_problems(
            t.previous, t.target_state, now=t.now, previous_source=t.previous_source,
            is_rollback=t.is_rollback, max_ttl=max_ttl, assumed_old_ttl=assumed_old_ttl, switch_key=_switch_key(t),
            time_scale=judging_time_scale(t.previous, t.target),
        )
    ]


def proxied_moves_with_load_balancer(t: Transition) -> list[Finding]:
    """dns-proxied-moves-with-load-balancer: a proxied record's target is not switched through DNS."""
    if t.previous is None:
        return []
    before, after = dns_records(t.previous_state), dns_records(t.target_state)
    out = []
    for name, new in sorted(after.items()):
        old = before.get(name)
        if old is None or not (old.get("proxied") or new.get("proxied")):
            continue
        if switched(old, new) or bool(old.get("proxied")) != bool(new.get("proxied")):
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
    "maxTtlForSwitch": {"type": "integer", "minimum": 1, "maximum": 86400, "default": timegates.MAX_TTL_FOR_SWITCH,
                        "description": "a DNS-only record's content may change only at this TTL (s) or lower"},
    "assumedOldTtlSeconds": {"type": "integer", "minimum": 0, "default": timegates.ASSUMED_OLD_TTL_SECONDS,
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
