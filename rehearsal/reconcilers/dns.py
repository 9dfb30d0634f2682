"""DNS: the zone in nsd, TTL-aware switches (the old TTL must run out first), time-scaled."""

from __future__ import annotations

import time

from bazbii_plan.models import StackState

from ..procs import wait_until
from ..services import ADDRESSES
from .base import Context, server_of_address


class DnsReconciler:
    concern = "dns"

    def __init__(self) -> None:
        self.serial = 1
        self.ttl_since: dict[str, tuple[int, float, int | None]] = {}   # name -> (ttl, since, previous ttl)

    def local_records(self, state: StackState) -> dict[str, dict]:
        out = {}
        for name, record in state.dns.records.items():
            data = record.model_dump()
            if record.type == "A":
                server = server_of_address(state, record.content)
                data["content"] = ADDRESSES[server] if server else record.content
            out[name] = data
        return out

    def start(self, state: StackState, ctx: Context) -> None:
        ctx.services.start_dns(self.local_records(state))
        now = time.monotonic()
        self.ttl_since = {n: (r.ttl, now, None) for n, r in state.dns.records.items()}

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        a, b = self.local_records(old), self.local_records(new)
        if a == b:
            return
        for name, record in b.items():
            before = a.get(name)
            if before and before["content"] != record["content"]:
                ttl, since, previous = self.ttl_since[name]
                # The switch waits until resolvers can no longer hold an answer with the old, longer TTL.
                wait = svc.scaled_ttl(previous or ttl) - (time.monotonic() - since)
                if wait > 0:
                    ctx.act(f"dns: waiting {wait:.1f} s for the old TTL ({previous or ttl} s, time-scaled "
                            f"1/{svc.ttl_scale:g}) to run out before switching {name}")
                    time.sleep(wait)
        self.serial += 1
        svc.reload_zone(b, self.serial)
        now = time.monotonic()
        for name, record in new.dns.records.items():
            if name not in self.ttl_since or self.ttl_since[name][0] != record.ttl:
                previous = self.ttl_since.get(name, (None,))[0]
                self.ttl_since[name] = (record.ttl, now, previous)
        for name, record in b.items():
            if a.get(name) != record and not record.get("proxied"):
                ctx.act(f"dns: {name} -> {record['content']} TTL {record['ttl']} s "
                        f"(served as {svc.scaled_ttl(record['ttl'])} s, time-scaled 1/{svc.ttl_scale:g})")
        if "direct" in b:  # nsd loads the zone asynchronously (a few ms after the reload command)
            expected = (b["direct"]["content"], svc.scaled_ttl(b["direct"]["ttl"]))
            wait_until(lambda: svc.resolve("direct", authoritative=True) == expected, 10,
                       f"nsd serving direct {expected}")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass
