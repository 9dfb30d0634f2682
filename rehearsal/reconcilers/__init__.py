"""One local reconciler per concern: each turns "previous desired state -> next desired state"
(both from ``bazbii_plan``) into actions on the rehearsal's real servers.

No reconciler knows step names. A step's actions are whatever its desired state changes, so a
forward step and its rollback (the same two states, swapped) run through the same code. Make
before break: every reconciler first ``prepare``s (start what the new state adds, move what it
changes) in the order servers, database, gateway, app, schema, traffic, dns; then ``finish``es
(stop what the new state no longer has) in the reverse order, so a gateway stops only after its
pool left the load balancer and the DNS record moved away from it.

The flags track has no reconciler of its own: its ``flags`` are the app's ConfigMap, so the app
reconciler rolls the API processes and the workers onto a new flags document, as the program
rolls the pods (``app.py``).
"""

from __future__ import annotations

from bazbii_plan.models import StackState

from .app import AppReconciler, desired_deployments
from .base import CheckFailed, Context, StepRefused
from .database import DatabaseReconciler
from .dns import DnsReconciler
from .gateway import GatewayReconciler, gateway_servers
from .schema import SchemaReconciler
from .servers import ServersReconciler
from .traffic import TrafficReconciler

__all__ = ["CheckFailed", "Context", "StepRefused", "build_reconcilers", "desired_deployments", "gateway_servers",
           "reconcile"]

RECONCILERS = ("servers", "database", "gateway", "app", "schema", "traffic", "dns")


def build_reconcilers() -> dict:
    return {"servers": ServersReconciler(), "database": DatabaseReconciler(), "gateway": GatewayReconciler(),
            "app": AppReconciler(), "schema": SchemaReconciler(), "traffic": TrafficReconciler(),
            "dns": DnsReconciler()}


def reconcile(reconcilers: dict, old: StackState, new: StackState, ctx: Context) -> None:
    for name in RECONCILERS:
        reconcilers[name].prepare(old, new, ctx)
    for name in reversed(RECONCILERS):
        reconcilers[name].finish(old, new, ctx)
