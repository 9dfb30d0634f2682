"""Gateways: nginx on every server with the gateway role; stopped only after DNS moved away."""

from __future__ import annotations

import time

from bazbii_plan.models import StackState

from ..procs import wait_until
from ..services import ADDRESSES
from .base import Context, server_of_address


def gateway_servers(state: StackState) -> set[str]:
    return {name for name, s in state.servers.items() if "gateway" in s.roles}


class GatewayReconciler:
    concern = "gateway"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        for server in sorted(gateway_servers(new) - gateway_servers(old)):
            ctx.services.start_gateway(server)
            ctx.act(f"gateway: nginx started on {server} ({ADDRESSES[server]})")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        for server in sorted(gateway_servers(old) - gateway_servers(new)):
            address = ADDRESSES[server]
            for name, record in new.dns.records.items():
                if server_of_address(new, record.content) == server:
                    raise RuntimeError(f"gateway on {server} is still the target of DNS record {name}")
            # The resolver must have moved on, then clients may keep its last answer for one TTL.
            ttl = max((svc.scaled_ttl(r.ttl) for r in new.dns.records.values() if not r.proxied), default=0)
            wait_until(lambda: (svc.resolve("direct") or ("",))[0] != address, ttl + 10,
                       f"resolver to stop answering {address}")
            time.sleep(ttl)
            svc.stop_gateway(server)
            ctx.act(f"gateway: nginx on {server} stopped gracefully (SIGQUIT) after clients' DNS caches "
                    f"({ttl} s) ran out")
