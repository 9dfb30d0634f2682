"""The rehearsal's gate after each step: the plan's rollback triggers on live metrics.

Measured with ``bazbii_analysis`` (its Prometheus client and criteria evaluation) against the
rehearsal's own Prometheus. The PromQL templates are adapted to the rehearsal's exporters (the
gateway's HAProxy exporter has one backend per pool, ``proxy="pool_<name>"``; the API exports
``http_requests_total`` and ``http_request_duration_seconds``, the names the program's gates query). Signals, each over
the compressed soak window, from ``bazbii:rollback``:

* the whole service: load-balancer 5xx ratio and API p95 latency;
* every pool that carries traffic: its 5xx ratio (a pool's own errors must not hide in the mix);
* the canary, when there is one: its API error ratio;
* every flag with a cohort (rollout > 0): the API error ratio of the requests that took its new
  path (the API labels them ``flag_<name>="on"``), so the cohort's errors do not hide in the mix.

An inconclusive signal fails the gate (gates fail closed).
"""

from __future__ import annotations

from datetime import datetime, timezone

from bazbii_analysis import PrometheusClient, Verdict, evaluate_criteria
from bazbii_plan.gates import GateCriteria, MetricsConfig, Scope, Signal
from bazbii_plan.models import StackState
from bazbii_db.migrations.versions import version_from_image

QUERIES = {
    "errorRatio": (
        'sum(increase(haproxy_backend_http_responses_total{code="5xx",proxy=~"pool_.*",${scope}}[${window}]))'
        ' / sum(increase(haproxy_backend_http_responses_total{proxy=~"pool_.*",${scope}}[${window}]))'
    ),
    "requestCount": 'sum(increase(haproxy_backend_http_responses_total{proxy=~"pool_.*",${scope}}[${window}]))',
    "apiErrorRatio": (
        '(sum(increase(http_requests_total{code=~"5..",${scope}}[${window}])) or vector(0))'
        ' / sum(increase(http_requests_total{${scope}}[${window}]))'
    ),
    "latencyQuantile": (
        "histogram_quantile(${quantile}, sum by (le) (rate(http_request_duration_seconds_bucket{${scope}}[${window}])))"
    ),
}


def cohort_query_name(flag: str) -> str:
    return f"cohortErrorRatio:{flag}"


def cohort_query(flag: str) -> str:
    """The API error ratio, of the requests that took ``flag``'s new path only."""
    return QUERIES["apiErrorRatio"].replace("${scope}", f'flag_{flag}="on",${{scope}}')


def metrics_config(endpoint: str, canary_version: str = "", flags: tuple[str, ...] = ()) -> MetricsConfig:
    return MetricsConfig(endpoint=endpoint, queries={**QUERIES, **{cohort_query_name(f): cohort_query(f) for f in flags}},
                         scopes={"service": "", "pool": 'proxy="pool_${name}"', "canary": f'version="{canary_version}"'})


def evaluate_step(endpoint: str, state: StackState, track: str, step: str, window_seconds: float,
                  min_samples: int) -> list[Verdict]:
    """One verdict per scope (service, each pool with traffic, the canary)."""
    rollback = state.rollback
    p95_max = rollback.p95_target_ms * rollback.p95_factor / 1000.0
    window = f"{max(1, int(window_seconds))}s"
    canary_version = str(version_from_image(state.app.canary.image)) if state.app.canary else ""
    cohorts = tuple(name for name, flag in state.flags.items() if flag.rollout > 0)
    metrics = metrics_config(endpoint, canary_version, cohorts)
    criteria = [GateCriteria(window=window, min_samples=min_samples, signals=[
        Signal(name="error-ratio", kind="errorRatio", max=rollback.max_error_rate),
        Signal(name="p95-latency", kind="latencyQuantile", quantile=0.95, max=p95_max, counted=False)])]
    for name, pool in state.traffic.pools.items():
        if pool.weight > 0 and len(state.traffic.pools) > 1:
            criteria.append(GateCriteria(window=window, min_samples=max(1, min_samples // 10),
                                         scope=Scope(kind="pool", name=name),
                                         signals=[Signal(name="error-ratio", kind="errorRatio",
                                                         max=rollback.max_error_rate)]))
    if state.app.canary and state.app.canary.weight > 0:
        criteria.append(GateCriteria(window=window, scope=Scope(kind="canary"), signals=[
            Signal(name="canary-error-ratio", kind="apiErrorRatio", max=rollback.max_error_rate, counted=False)]))
    for name in cohorts:
        criteria.append(GateCriteria(window=window, signals=[
            Signal(name=f"{name.replace('_', '-')}-cohort-errors"[:41], kind=cohort_query_name(name),
                   max=rollback.max_error_rate, counted=False)]))
    now = datetime.now(timezone.utc)
    with PrometheusClient(endpoint, timeout=5) as client:
        return [evaluate_criteria(c, rollback, metrics, track=track, step=step, since=None, now=now, client=client)
                for c in criteria]
