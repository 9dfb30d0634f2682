"""The app: API instances by version (stable and canary shares behind the gateways) and the workers."""

from __future__ import annotations

from dataclasses import dataclass

from bazbii_db.migrations.versions import version_from_image
from bazbii_plan.models import StackState

from ..faults import Faults
from .base import Context


@dataclass(frozen=True)
class Deployment:
    version: str
    faulty: bool


def desired_deployments(state: StackState, faults: Faults) -> dict[Deployment, int]:
    """version -> share of API pods, from the stable Deployment and the canary."""
    app = state.app
    stable = str(version_from_image(app.api.image))
    shares: dict[Deployment, int] = {}
    canary_weight = app.canary.weight if app.canary else 0
    if canary_weight < 100:
        shares[Deployment(stable, False)] = 100 - canary_weight
    if app.canary and canary_weight > 0:
        canary = Deployment(str(version_from_image(app.canary.image)), faults.canary_faulty())
        shares[canary] = shares.get(canary, 0) + canary_weight
    return shares


class AppReconciler:
    concern = "app"

    def __init__(self) -> None:
        self.instances: dict[Deployment, str] = {}
        self.counter = 0

    def _apply_shares(self, shares: dict[Deployment, int], ctx: Context) -> list[str]:
        svc = ctx.services
        for deployment in shares:
            if deployment not in self.instances:
                self.counter += 1
                name = f"api{self.counter}-{deployment.version}" + ("-faulty" if deployment.faulty else "")
                svc.start_api(name, deployment.version, ctx.faults.canary_error_rate if deployment.faulty else 0.0)
                self.instances[deployment] = name
                ctx.act(f"app: API {deployment.version} started as {name}"
                        + (" (with the injected canary fault)" if deployment.faulty else ""))
        self._shares = dict(shares)
        weights = {self.instances[d]: w for d, w in shares.items()}
        svc.write_upstream(weights)
        svc.reload_gateways()
        ctx.act("app: API pods share " + ", ".join(f"{d.version}{'(faulty)' if d.faulty else ''} {w} %"
                                                  for d, w in shares.items()))
        return [name for d, name in self.instances.items() if d not in shares]

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        shares = desired_deployments(new, ctx.faults)
        if set(shares) != set(self.instances) or shares != getattr(self, "_shares", None):
            self._retiring = self._apply_shares(shares, ctx)
        old_w, new_w = str(version_from_image(old.app.worker.image)), str(version_from_image(new.app.worker.image))
        if old_w != new_w and svc.workers:
            for _ in range(min(new.app.worker.replicas, 2)):
                svc.start_worker(new_w)
            stopped = svc.stop_workers(old_w)
            ctx.act(f"app: workers rolled {old_w} -> {new_w} ({stopped} stopped after their current batch)")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        for name in getattr(self, "_retiring", []):
            ctx.services.stop_api(name)
            self.instances = {d: n for d, n in self.instances.items() if n != name}
            ctx.act(f"app: {name} stopped after draining (SIGTERM, in-flight requests finish)")
        self._retiring = []

    def start(self, state: StackState, ctx: Context) -> None:
        """The MVP's app: stable API and the workers."""
        self._apply_shares(desired_deployments(state, ctx.faults), ctx)
        for _ in range(min(state.app.worker.replicas, 2)):
            ctx.services.start_worker(str(version_from_image(state.app.worker.image)))
