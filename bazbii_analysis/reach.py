"""How the gates and ``watch`` reach the metrics API: directly, or over SSH (``bazbii:metrics.ssh``).

One function, so the transition check, ``watch`` and ``./preview --metrics config`` make the same choice.
A route that cannot be used (no key here, a server the state does not have) is not an error at this
point: every request then fails with the reason, which is inconclusive, and the gate fails closed.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from bazbii_plan.gates import MetricsConfig, ssh_route

from .prometheus import PrometheusClient
from .sshtransport import SshTransport


def metrics_client(metrics: MetricsConfig, servers: Mapping[str, Mapping[str, Any]],
                   ssh_key: Optional[str]) -> PrometheusClient:
    """The client of ``metrics.endpoint``; over SSH when ``metrics.ssh`` is set (``servers``: ``bazbii:servers``
    in config form, the state the route's server is looked up in; ``ssh_key``: ``bazbii:sshPrivateKey``)."""
    endpoint = metrics.endpoint
    if endpoint is None:  # callers check it first, each with its own advice
        raise ValueError("bazbii:metrics.endpoint is not set: there is no metrics API to read")
    if metrics.ssh is None:
        return PrometheusClient(endpoint, timeout=metrics.timeout_seconds)
    try:
        route = ssh_route(metrics.ssh, servers)
    except KeyError as exc:
        transport = SshTransport(None, ssh_key, metrics.timeout_seconds, problem=exc.args[0])
        return PrometheusClient(endpoint, timeout=metrics.timeout_seconds, transport=transport, via="ssh")
    transport = SshTransport(route, ssh_key, metrics.timeout_seconds)
    return PrometheusClient(endpoint, timeout=metrics.timeout_seconds, transport=transport,
                            via=route.describe())
