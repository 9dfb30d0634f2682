"""Servers: provisioning (a loopback address here) and resizes (no local meaning)."""

from __future__ import annotations

from bazbii_plan.models import StackState

from ..services import ADDRESSES
from .base import Context


class ServersReconciler:
    concern = "servers"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        for name in new.servers.keys() - old.servers.keys():
            ctx.act(f"servers: {name} provisioned as {ADDRESSES[name]} (loopback stands for the VPS; "
                    f"no packages to install locally)")
        for name in new.servers.keys() & old.servers.keys():
            a, b = old.servers[name], new.servers[name]
            if (a.vcpu, a.memory_gb, a.disk_gb) != (b.vcpu, b.memory_gb, b.disk_gb):
                ctx.act(f"servers: {name} spec {a.vcpu} vCPU/{a.memory_gb} GB/{a.disk_gb} GB -> "
                        f"{b.vcpu}/{b.memory_gb}/{b.disk_gb}: no local meaning (a KonohaVPS console resize); "
                        "nothing to do")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        for name in old.servers.keys() - new.servers.keys():
            ctx.act(f"servers: {name} no longer managed")
