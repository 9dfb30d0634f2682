"""The application's p99 from Prometheus, as a latency source of the backfill throttle.

``PrometheusLatency`` has the shape ``bazbii_db.migrations.throttle.LatencySource`` asks for (``name``,
``start``, ``read``, ``close``) without importing it: the throttle takes its sources from its caller, and
the migration CLI (``--prometheus-url``) is the caller that builds this one.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from bazbii_plan.facts import PROMETHEUS_SCRAPE_INTERVAL_S

from .prometheus import EmptyResult, MetricsError, PrometheusClient


class PrometheusLatency:
    """``promql`` must give one value in seconds (e.g. ``histogram_quantile(0.99, sum by (le)
    (rate(http_request_duration_seconds_bucket[30s])))``).

    Prometheus computes over its own range (the PromQL's), so ``since`` is ignored. Its value changes
    once per scrape, so it is read at most once per ``interval_s`` (the scrape interval): between reads
    there is no new reading, and the throttle never acts twice on one stale value. No traffic in the
    range (an empty or NaN result) is no reading; an unreachable or failing Prometheus reads as
    infinitely slow, so the backfill backs off rather than speeding up blind."""

    name = "prometheus"

    def __init__(self, client: PrometheusClient, promql: str, interval_s: float = PROMETHEUS_SCRAPE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.client, self.promql, self.interval_s, self.clock = client, promql, interval_s, clock
        self.last_error: str | None = None
        self._last_read: float | None = None

    @classmethod
    def connect(cls, url: str, promql: str, interval_s: float = PROMETHEUS_SCRAPE_INTERVAL_S,
                timeout_s: float = 2.0) -> "PrometheusLatency":
        return cls(PrometheusClient(url, timeout=timeout_s), promql, interval_s)

    def start(self) -> None:
        pass

    def read(self, since: float) -> float | None:
        now = self.clock()
        if self._last_read is not None and now - self._last_read < self.interval_s:
            return None
        self._last_read = now
        try:
            value = self.client.scalar(self.promql)
        except EmptyResult:
            return None
        except MetricsError as exc:
            self.last_error = str(exc)
            return math.inf
        self.last_error = None
        return value * 1000.0 if math.isfinite(value) else math.inf

    def close(self) -> None:
        self.client.close()
