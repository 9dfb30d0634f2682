"""WeightedTraffic: a Cloudflare load balancer splitting the API hostname across gateway pools.

``<name>-monitor``   LoadBalancerMonitor (HTTP(S) health check on the gateway's health path,
                     ``Host`` header set to the hostname, so the tunnel's ingress rule matches)
``<name>-<pool>``    LoadBalancerPool, one per ``traffic.pools`` entry: one origin, the pool
                     server's tunnel (``<tunnel id>.cfargotunnel.com``); monitored when
                     ``pool.monitored``
``<name>-lb``        LoadBalancer on ``traffic.hostname``: ``steering_policy="random"``,
                     ``random_steering.pool_weights = {pool id: weight / 100}``,
                     ``default_weight = 0`` (a pool missing from the map gets nothing),
                     every pool in ``default_pools`` (weight 0 pools are still health-checked
                     but get no traffic), proxied.

Weights are the step's percentages: at traffic-10 server1's pool has 0.9 and
server2's 0.1. Sticky sessions (``sessionAffinity: cookie``) take precedence
over the weights, so a split is only approximate for sticky clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_cloudflare as cloudflare

from bazbii_plan import models
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on


@dataclass(frozen=True)
class WeightedTrafficArgs:
    account_id: str
    zone_id: str
    traffic: models.Traffic
    origins: Mapping[str, pulumi.Input[str]]  # server name -> origin address (its tunnel)


def pool_weight(percent: int) -> float:
    """Config percent -> Cloudflare weight (0..1)."""
    return round(percent / 100, 4)


def fallback_pool_name(traffic: models.Traffic) -> str:
    """The pool used when every pool is unhealthy: the one carrying the most traffic (ties: by name)."""
    return sorted(traffic.pools.items(), key=lambda item: (-item[1].weight, item[0]))[0][0]


class WeightedTraffic(pulumi.ComponentResource):
    """Cloudflare LB with random steering and pool weights taken from the current step."""

    load_balancer: cloudflare.LoadBalancer
    pool_ids: dict[str, pulumi.Output[str]]
    weights: dict[str, float]

    def __init__(self, name: str, args: WeightedTrafficArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:WeightedTraffic", name, None, opts)
        inherit_depends_on(self, opts)
        traffic = args.traffic
        monitor_cfg = traffic.monitor
        self.monitor = cloudflare.LoadBalancerMonitor(
            f"{name}-monitor",
            account_id=args.account_id,
            type=monitor_cfg.type,
            method="GET",
            path=monitor_cfg.path,
            expected_codes=monitor_cfg.expected_codes,
            interval=monitor_cfg.interval,
            timeout=monitor_cfg.timeout,
            retries=monitor_cfg.retries,
            header={"Host": [traffic.hostname]},
            follow_redirects=False,
            allow_insecure=False,
            description=f"bazbii gateway health ({traffic.hostname}{monitor_cfg.path})",
            opts=child_opts(self),
        )
        pools: dict[str, cloudflare.LoadBalancerPool] = {}
        for pool_name in sorted(traffic.pools):
            pool = traffic.pools[pool_name]
            pools[pool_name] = cloudflare.LoadBalancerPool(
                f"{name}-{pool_name}",
                account_id=args.account_id,
                name=f"bazbii-{pool_name}",
                description=f"gateway on {pool.server} through its Cloudflare Tunnel",
                enabled=True,
                minimum_origins=1,
                origins=[
                    cloudflare.LoadBalancerPoolOriginArgs(
                        name=pool.server,
                        address=args.origins[pool.server],
                        enabled=True,
                        weight=1,
                        header=cloudflare.LoadBalancerPoolOriginHeaderArgs(hosts=[traffic.hostname]),
                    )
                ],
                monitor=self.monitor.id if pool.monitored else None,
                opts=child_opts(self),
            )
        self.pool_ids = {pool_name: pool.id for pool_name, pool in pools.items()}
        self.weights = {pool_name: pool_weight(pool.weight) for pool_name, pool in traffic.pools.items()}

        ordered = sorted(traffic.pools, key=lambda n: (-traffic.pools[n].weight, n))
        pool_weights = pulumi.Output.all(*[pools[n].id for n in ordered]).apply(
            lambda ids: {pool_id: self.weights[n] for pool_id, n in zip(ids, ordered)}
        )
        self.load_balancer = cloudflare.LoadBalancer(
            f"{name}-lb",
            zone_id=args.zone_id,
            name=traffic.hostname,
            description="bazbii API: weighted split across gateway hosts (weights from bazbii:phase)",
            enabled=True,
            proxied=True,
            steering_policy=traffic.steering,
            random_steering=cloudflare.LoadBalancerRandomSteeringArgs(default_weight=0, pool_weights=pool_weights),
            default_pools=[pools[n].id for n in ordered],
            fallback_pool=pools[fallback_pool_name(traffic)].id,
            session_affinity=traffic.session_affinity,
            opts=child_opts(self),
        )
        self.register_outputs(
            {"hostname": traffic.hostname, "poolIds": self.pool_ids, "weights": self.weights,
             "loadBalancerId": self.load_balancer.id}
        )
