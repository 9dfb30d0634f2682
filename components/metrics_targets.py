"""What Prometheus must scrape for the gates' queries, declared as Prometheus configuration.

The live step gates (``bazbii_analysis``) read a Prometheus-compatible API;
this component says what that Prometheus must scrape for the default PromQL
of ``bazbii:metrics`` to find its series:

``targets``         a ``file_sd`` document (``pulumi stack output metricsTargets --json >
                    /etc/prometheus/file_sd/bazbii.json``): the gateway's HAProxy exporter on every
                    gateway server (labelled with its load-balancer ``pool``), the PgBouncer exporter
                    on the pooler and the PostgreSQL exporter on every database server
``scrape_configs``  the ``scrape_configs`` entries (``pulumi stack output metricsScrapeConfigs``):
                    that file, and every API pod's ``/metrics`` through Kubernetes pod discovery,
                    labelled ``track`` (stable or canary), ``server`` and ``pool`` (every pool, as
                    every gateway forwards to every pod)

So the labels the gates' scopes match on are the ones Prometheus attaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from bazbii_plan.gates import MetricsConfig, scrape_configs, scrape_targets
from bazbii_plan.models import StackState
from components._util import TYPE_PREFIX


@dataclass(frozen=True)
class MetricsTargetsArgs:
    state: StackState
    metrics: MetricsConfig


class MetricsTargets(pulumi.ComponentResource):
    targets: pulumi.Output[list]
    scrape_configs: pulumi.Output[list]

    def __init__(self, name: str, args: MetricsTargetsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:MetricsTargets", name, None, opts)
        groups = scrape_targets(args.state, args.metrics)
        configs = scrape_configs(args.state, args.metrics)
        self.targets = pulumi.Output.from_input(groups)
        self.scrape_configs = pulumi.Output.from_input(configs)
        self.register_outputs({"targets": groups, "scrapeConfigs": configs, "endpoint": args.metrics.endpoint})
