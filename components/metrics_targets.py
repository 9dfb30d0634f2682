"""Where the stack's metrics exporters run, declared as Prometheus scrape targets.

The live step gates (``bazbii_analysis``) read a Prometheus-compatible API;
this component says what that Prometheus must scrape for the default PromQL
of ``bazbii:metrics`` to find its series: the gateway's HAProxy exporter on
every gateway server (labelled with its load-balancer ``pool``), the API's
``/metrics`` on API servers (labelled with every pool, since every gateway forwards to them), the PgBouncer exporter on the pooler and the
PostgreSQL exporter on every database server. The ``targets`` output is a
``file_sd`` document (``pulumi stack output metricsTargets --json >
/etc/prometheus/file_sd/bazbii.json``), so the labels the gates' scopes
match on are the ones Prometheus attaches. Canary pods are found by
Kubernetes service discovery (label ``track``), not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from bazbii_plan.gates import MetricsConfig, scrape_targets
from bazbii_plan.models import StackState
from components._util import TYPE_PREFIX


@dataclass(frozen=True)
class MetricsTargetsArgs:
    state: StackState
    metrics: MetricsConfig


class MetricsTargets(pulumi.ComponentResource):
    targets: pulumi.Output[list]

    def __init__(self, name: str, args: MetricsTargetsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:MetricsTargets", name, None, opts)
        groups = scrape_targets(args.state, args.metrics)
        self.targets = pulumi.Output.from_input(groups)
        self.register_outputs({"targets": groups, "endpoint": args.metrics.endpoint})
