"""The app: API instances by version (stable and canary shares behind the gateways) and the workers.

An API Deployment here is one process per (version, injected fault, flags document): like a
pod template, a change to any of them means new processes. The flags document
(:func:`bazbii_plan.flags.flags_document`, the ConfigMap ``ApiDeployment`` declares) reaches
every API and worker process through ``BAZBII_FLAGS`` at start, so a flags step rolls them, the
way the component rolls the pods: one at a time, the new process serving before the old one
stops (maxUnavailable 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bazbii_db.migrations.versions import version_from_image
from bazbii_plan.flags import flags_document
from bazbii_plan.models import StackState

from ..faults import Faults
from .base import Context

# Like a pod's preStop sleep: a gateway reload returns before its old workers stop taking new
# connections, so an instance leaves every upstream this long before it is told to stop.
ENDPOINT_PROPAGATION_S = 1.0


@dataclass(frozen=True)
class Deployment:
    version: str
    faulty: bool
    flags: str = "{}"   # the BAZBII_FLAGS document its processes read at start


def desired_flags(state: StackState) -> str:
    return flags_document(state.flags)


def desired_deployments(state: StackState, faults: Faults) -> dict[Deployment, int]:
    """version -> share of API pods, from the stable Deployment and the canary."""
    app = state.app
    flags = desired_flags(state)
    stable = str(version_from_image(app.api.image))
    shares: dict[Deployment, int] = {}
    canary_weight = app.canary.weight if app.canary else 0
    if canary_weight < 100:
        shares[Deployment(stable, False, flags)] = 100 - canary_weight
    if app.canary and canary_weight > 0:
        canary = Deployment(str(version_from_image(app.canary.image)), faults.canary_faulty(), flags)
        shares[canary] = shares.get(canary, 0) + canary_weight
    return shares


class AppReconciler:
    concern = "app"

    def __init__(self) -> None:
        self.instances: dict[Deployment, str] = {}
        self.counter = 0
        self._shares: dict[Deployment, int] = {}
        self._retiring: list[str] = []

    def _apply_shares(self, shares: dict[Deployment, int], ctx: Context) -> list[str]:
        """Start what ``shares`` adds, point the gateways at it; returns the instances it no longer uses."""
        svc = ctx.services
        for deployment in shares:
            if deployment not in self.instances:
                self.counter += 1
                name = f"api{self.counter}-{deployment.version}" + ("-faulty" if deployment.faulty else "")
                svc.start_api(name, deployment.version, ctx.faults.canary_error_rate if deployment.faulty else 0.0,
                              flags=deployment.flags)
                self.instances[deployment] = name
                ctx.act(f"app: API {deployment.version} started as {name} with flags {deployment.flags}"
                        + (" (with the injected canary fault)" if deployment.faulty else ""))
        self._shares = dict(shares)
        weights = {self.instances[d]: w for d, w in shares.items()}
        svc.write_upstream(weights)
        svc.reload_gateways()
        ctx.act("app: API pods share " + ", ".join(f"{self.instances[d]} ({d.version}"
                                                  f"{', faulty' if d.faulty else ''}) {w} %"
                                                  for d, w in shares.items()))
        return [name for d, name in self.instances.items() if d not in shares]

    def _retire(self, names: list[str], ctx: Context) -> None:
        """Stop instances no upstream lists any more, after the gateways let go of them."""
        if names:
            time.sleep(ENDPOINT_PROPAGATION_S)
        for name in names:
            ctx.services.stop_api(name)
            self.instances = {d: n for d, n in self.instances.items() if n != name}
            ctx.act(f"app: {name} stopped after draining (SIGTERM, in-flight requests finish)")

    def _roll_flags(self, shares: dict[Deployment, int], ctx: Context) -> None:
        """Replace, one at a time, each running Deployment whose flags document changed (a rolling update)."""
        for running in list(self._shares):
            successor = next((d for d in shares if (d.version, d.faulty) == (running.version, running.faulty)
                              and d.flags != running.flags), None)
            if successor is None or successor in self.instances:
                continue
            ctx.act(f"app: rolling {self.instances[running]} for the new flags document")
            interim = {successor if d == running else d: w for d, w in self._shares.items()}
            self._retire(self._apply_shares(interim, ctx), ctx)

    def _roll_workers(self, version: str, ctx: Context) -> int:
        """Replace every worker, one at a time: the new one runs before the old one stops (after its batch)."""
        svc = ctx.services
        running = list(svc.workers)
        for managed, _ in running:
            svc.start_worker(version)
            svc.stop_worker(managed)
        return len(running)

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        shares = desired_deployments(new, ctx.faults)
        self._roll_flags(shares, ctx)
        if set(shares) != set(self.instances) or shares != self._shares:
            self._retiring = self._apply_shares(shares, ctx)
        old_w, new_w = str(version_from_image(old.app.worker.image)), str(version_from_image(new.app.worker.image))
        old_flags, svc.worker_flags = desired_flags(old), desired_flags(new)
        if (old_w != new_w or old_flags != svc.worker_flags) and svc.workers:
            rolled = self._roll_workers(new_w, ctx)
            ctx.act(f"app: {rolled} workers rolled one at a time to {new_w} with flags {svc.worker_flags} "
                    "(each old one stopped after its current batch)")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        self._retire(self._retiring, ctx)
        self._retiring = []

    def start(self, state: StackState, ctx: Context) -> None:
        """The MVP's app: stable API and the workers."""
        self._apply_shares(desired_deployments(state, ctx.faults), ctx)
        ctx.services.worker_flags = desired_flags(state)
        for _ in range(min(state.app.worker.replicas, 2)):
            ctx.services.start_worker(str(version_from_image(state.app.worker.image)))
