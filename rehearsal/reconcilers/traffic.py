"""Traffic: load-balancer pools (HAProxy backends) and their weights through the runtime API."""

from __future__ import annotations

from bazbii_plan.models import StackState

from .base import Context


class TrafficReconciler:
    concern = "traffic"

    @staticmethod
    def pools(state: StackState) -> dict[str, dict]:
        return {name: {"server": p.server, "weight": p.weight} for name, p in state.traffic.pools.items()}

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        a, b = self.pools(old), self.pools(new)
        if a == b:
            return
        if a.keys() != b.keys():
            svc.reload_haproxy(b)
            ctx.act(f"traffic: load balancer pools {sorted(a)} -> {sorted(b)} (config reload, weights kept)")
            for name in b.keys() - a.keys():
                waited = svc.wait_pool(name, "UP", timeout=max(20.0, ctx.gate_timeout))
                ctx.act(f"traffic: pool {name} healthy in the monitor after {waited:.1f} s")
        svc.set_weights(b)
        ctx.act("traffic: weights through the runtime API: " + ", ".join(f"{n} {p['weight']}" for n, p in b.items()))

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass
