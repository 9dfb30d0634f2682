"""Machine-checkable step gates and the metrics config they are measured with.

A step's ``gate`` text says what must be true before the step is applied;
its optional ``criteria`` (this module) is the part of that which live
metrics can check, as data (like an Argo Rollouts AnalysisTemplate):

``soak``        how long the previous step of the track must have been applied
``window``      the span the signals are computed over, ending now (never
                reaching back before the previous step was applied)
``scope``       what is measured: the pool, canary or server the previous step
                moved, or the whole service
``minSamples``  fewer requests than this in the window: inconclusive (fails closed)
``signals``     thresholds; omitted, they default from ``bazbii:rollback``
                (error ratio <= maxErrorRate, p95 <= p95TargetMs x p95Factor)

``bazbii:metrics`` says where the Prometheus HTTP API is and holds the PromQL
templates. With ``ssh`` the API is read over SSH through a server inside the
network (``endpoint`` is then the URL as that server sees it), so a runner
that cannot see the internal network still evaluates the gates, with the one
credential the data plane already uses and no port opened to it. Templates use ``${scope}`` (label matchers, possibly empty),
``${window}`` (a PromQL duration) and ``${quantile}``; the defaults match the
exporters the stack runs (:data:`EXPORTERS`): the gateway's HAProxy exporter,
the API's request histogram, PgBouncer's and PostgreSQL's exporters.
"""

from __future__ import annotations

import re
from string import Template
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import AfterValidator, Field, model_validator

from .crosscheck import servers_with_role
from .errors import PATTERN_WORDS, pattern
from .models import (DEFAULT_SSH_PORT, DEFAULT_SSH_USER, NAME_PATTERN, PATH_PATTERN, UNIX_USER_PATTERN, Model, Rollback,
                     Server, StackState, between)

_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``90s``, ``15m``, ``24h``, ``2d`` -> seconds (ValueError otherwise)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use a number with s, m, h or d (e.g. 24h)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds -> a short human form (``1d2h``, ``15m``, ``42s``)."""
    seconds = int(round(seconds))
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def format_value(value: Optional[float], kind: str) -> str:
    """A signal's value in its unit: ratios in %, latencies in ms, soak as a duration."""
    if value is None:
        return "n/a"
    if kind == "errorRatio":
        return f"{value * 100:.2f} %"
    if kind == "latencyQuantile":
        return f"{value * 1000:.0f} ms"
    if kind == "soak":
        return format_duration(value)
    if float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.4g}"


def _check_duration(text: str) -> str:
    duration_seconds(text)
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]


# --------------------------------------------------------------------------- metrics config
ScopeKind = Literal["service", "pool", "canary", "server"]

DEFAULT_QUERIES: dict[str, str] = {
    # Gateway (HAProxy's built-in Prometheus exporter; backend-level series carry no `server` label,
    # so the scrape target's `pool` label scopes them). No traffic gives NaN: inconclusive.
    "errorRatio": (
        'sum(rate(haproxy_backend_http_responses_total{code="5xx",${scope}}[${window}]))'
        ' / sum(rate(haproxy_backend_http_responses_total{${scope}}[${window}]))'
    ),
    "requestCount": "sum(increase(haproxy_backend_http_responses_total{${scope}}[${window}]))",
    # HAProxy has no latency histogram; quantiles come from the API's request histogram.
    "latencyQuantile": (
        "histogram_quantile(${quantile}, sum by (le) (rate(http_request_duration_seconds_bucket{${scope}}[${window}])))"
    ),
    # A canary is pods behind the same gateway: only the API's own counter tells them apart
    # (`NAME@KIND` is the query for a scope kind; Kubernetes discovery labels the pods `track`).
    # A client library creates a `code` series at its first request with that code: a canary that never
    # failed has no 5xx series, which is 0 errors ("or vector(0)"), not "no data"; no requests stays no data.
    "errorRatio@canary": (
        '(sum(rate(http_requests_total{code=~"5..",${scope}}[${window}])) or vector(0))'
        ' / sum(rate(http_requests_total{${scope}}[${window}]))'
    ),
    "requestCount@canary": "sum(increase(http_requests_total{${scope}}[${window}]))",
    # PostgreSQL exporter and the PgBouncer exporter (prometheus-community metric names).
    "longestTransactionSeconds": "max(max_over_time(pg_stat_activity_max_tx_duration{${scope}}[${window}]))",
    "poolerWaitingClients": "max(max_over_time(pgbouncer_pools_client_waiting_connections{${scope}}[${window}]))",
}

DEFAULT_SCOPES: dict[ScopeKind, str] = {
    "service": "",
    # A target's `pool` label lists every pool it serves, comma-separated (see scrape_targets).
    "pool": 'pool=~"(.+,)?${name}(,.+)?"',
    "canary": 'track="canary"',
    "server": 'server="${name}"',
}


class Exporter(Model):
    """Where one kind of exporter listens on each server that runs it."""

    port: int = Field(ge=1, le=65535)
    path: str = Field(default="/metrics", pattern=PATH_PATTERN)


ExporterKind = Literal["gateway", "api", "pgbouncer", "postgres"]


def _default_exporters() -> dict[ExporterKind, Exporter]:
    return {
        "gateway": Exporter(port=8405),    # HAProxy `http-request use-service prometheus-exporter`
        "api": Exporter(port=8080),        # the API's own /metrics (request histogram), scraped on each pod's
                                           # named port (scrape_configs): only its path is used
        "pgbouncer": Exporter(port=9127),  # PgBouncer exporter (SHOW POOLS / SHOW STATS)
        "postgres": Exporter(port=9187),   # prometheus-postgres-exporter
    }


# Where Prometheus reads the servers' exporters (the ``metricsTargets`` output) in ``metricsScrapeConfigs``.
FILE_SD_PATH = "/etc/prometheus/file_sd/bazbii.json"

# Which server role runs which exporter (the declared scrape targets follow the roles).
EXPORTER_ROLES: dict[ExporterKind, str] = {"gateway": "gateway", "api": "api", "pgbouncer": "pooler", "postgres": "database"}


def _check_template(text: str) -> str:
    try:
        Template(text).substitute(scope="", window="1m", quantile="0.95")
    except (KeyError, ValueError) as exc:
        raise ValueError(f"bad template {text!r}: placeholders are ${{scope}}, ${{window}}, ${{quantile}} ({exc})") from None
    return text


QueryTemplate = Annotated[str, AfterValidator(_check_template)]


PUBLIC_KEY_PATTERN = pattern(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( [^\n]*)?$",
                             "an OpenSSH public key line (ssh-ed25519 AAAA..., as in known_hosts, authorized_keys "
                             "or id_ed25519.pub)")
# The metrics reader's forced command carries the endpoint in authorized_keys: no quote, space or shell character.
READER_ENDPOINT_PATTERN = pattern(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?$",
                                  "an http(s)://host[:port][/path] URL of letters, digits and . - _ ~ / only")
SSH_HOST_PATTERN = pattern(r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,252}[A-Za-z0-9])?$", "an IP address or a DNS name")


class MetricsSsh(Model):
    """``bazbii:metrics.ssh``: read the metrics API over SSH, as the data plane reaches the databases.

    ``server`` names a server of ``bazbii:servers`` (its address, ``sshPort`` and ``sshUser``); ``host``
    (with ``port``, ``user``) is a machine outside the plan. The key is ``bazbii:sshPrivateKey``.
    ``hostKey`` pins the host's SSH key; without it the host key is not checked, as for the program's
    own remote commands (``hostKey`` unset there too).
    """

    server: Optional[str] = Field(default=None, pattern=NAME_PATTERN)
    host: Optional[str] = Field(default=None, pattern=SSH_HOST_PATTERN)
    port: Optional[Annotated[int, between(1, 65535)]] = None
    user: Optional[str] = Field(default=None, pattern=UNIX_USER_PATTERN)
    host_key: Optional[str] = Field(default=None, pattern=PUBLIC_KEY_PATTERN)
    reader_public_key: Optional[str] = Field(
        default=None, pattern=PUBLIC_KEY_PATTERN,
        description="the pull-request previews' key: may only read the metrics (bazbii_analysis/metrics_reader.py)")

    @model_validator(mode="after")
    def _one_target(self) -> "MetricsSsh":
        if (self.server is None) == (self.host is None):
            raise ValueError("give either server (a server of bazbii:servers) or host, not both")
        if self.server is not None and (self.port is not None or self.user is not None):
            raise ValueError("port and user come from bazbii:servers.<server> (sshPort, sshUser); "
                             "set them there, or use host")
        if self.reader_public_key is not None and self.server is None:
            raise ValueError("readerPublicKey is installed by the program on a server of bazbii:servers: use server "
                             "(a host outside the plan: install the reader by hand, docs/operate.md)")
        return self


def host_port(host: str, port: int) -> str:
    """``host:port`` as URLs, listen flags and scrape targets write it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class SshRoute:
    """Where an SSH session to read the metrics goes: ``user@host:port``."""

    host: str
    port: int
    user: str
    host_key: Optional[str] = None

    def describe(self) -> str:
        return f"ssh {self.user}@{host_port(self.host, self.port)}"


def ssh_route(ssh: MetricsSsh, servers: Mapping[str, Mapping[str, Any]]) -> SshRoute:
    """The route ``ssh`` names; ``servers`` in config form (``bazbii:servers``, camelCase). KeyError: no such server."""
    if ssh.host is not None:
        return SshRoute(ssh.host, ssh.port or DEFAULT_SSH_PORT, ssh.user or DEFAULT_SSH_USER, ssh.host_key)
    if ssh.server is None or ssh.server not in servers:
        raise KeyError(f"bazbii:metrics.ssh.server: {ssh.server!r} is not a server of bazbii:servers "
                       f"({', '.join(sorted(servers)) or 'none'})")
    server = servers[ssh.server]
    return SshRoute(server["address"], int(server.get("sshPort") or DEFAULT_SSH_PORT),
                    server.get("sshUser") or DEFAULT_SSH_USER, ssh.host_key)


class MetricsConfig(Model):
    """``bazbii:metrics``: the Prometheus-compatible HTTP API and the PromQL the gates use."""

    endpoint: Optional[str] = Field(default=None, pattern=pattern(r"^https?://[^\s/]+(/[^\s]*)?$",
                                                                          "an http:// or https:// URL"))
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    ssh: Optional[MetricsSsh] = Field(default=None, description="read the endpoint over SSH through this host")
    queries: dict[str, QueryTemplate] = Field(default_factory=dict)
    scopes: dict[ScopeKind, str] = Field(default_factory=dict)
    exporters: dict[ExporterKind, Exporter] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reader_can_name_endpoint(self) -> "MetricsConfig":
        if self.ssh is not None and self.ssh.reader_public_key is not None and (
                self.endpoint is None or not re.match(READER_ENDPOINT_PATTERN, self.endpoint)):
            raise ValueError(f"ssh.readerPublicKey: the endpoint must be {PATTERN_WORDS[READER_ENDPOINT_PATTERN]} "
                             f"(the reader's forced command names it), not {self.endpoint!r}")
        return self

    def query(self, name: str, scope_kind: str = "service") -> str:
        """The template of ``name``, or of ``name@<scope kind>`` when there is one for that kind of scope."""
        queries = {**DEFAULT_QUERIES, **self.queries}
        return queries.get(f"{name}@{scope_kind}", queries[name])

    def query_names(self) -> list[str]:
        return sorted(name for name in {**DEFAULT_QUERIES, **self.queries} if "@" not in name)

    def scope_matchers(self, kind: ScopeKind, name: str) -> str:
        return Template({**DEFAULT_SCOPES, **self.scopes}[kind]).safe_substitute(name=name)

    def exporter(self, kind: ExporterKind) -> Exporter:
        return {**_default_exporters(), **self.exporters}[kind]


# --------------------------------------------------------------------------- gate criteria
class Scope(Model):
    kind: ScopeKind = "service"
    name: str = Field(default="", pattern=pattern(r"^$|" + NAME_PATTERN, "empty, or " + PATTERN_WORDS[NAME_PATTERN]))

    @model_validator(mode="after")
    def _name_when_needed(self) -> "Scope":
        if self.kind in ("pool", "server") and not self.name:
            raise ValueError(f"a {self.kind} scope needs a name")
        return self

    def describe(self) -> str:
        return self.kind if not self.name else f"{self.kind} {self.name}"


class Signal(Model):
    """One measured value and its bound. ``kind`` is a builtin or the name of a query in ``bazbii:metrics.queries``."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: str = Field(description="errorRatio, latencyQuantile, requestCount, or a named query")
    quantile: Optional[float] = Field(default=None, gt=0, lt=1)
    max: Optional[float] = None
    min: Optional[float] = None
    against: Literal["threshold", "baseline"] = "threshold"
    factor: float = Field(default=2.0, gt=0, description="baseline comparisons: value <= baseline x factor")
    scope: Optional[Scope] = Field(default=None, description="overrides the criteria's scope for this signal")
    counted: bool = Field(default=True, description="needs the minimum number of requests to be conclusive")

    @model_validator(mode="after")
    def _bounds(self) -> "Signal":
        if self.against == "threshold" and self.max is None and self.min is None:
            raise ValueError("a threshold signal needs max or min")
        if self.kind == "latencyQuantile" and self.quantile is None:
            raise ValueError("latencyQuantile needs a quantile (e.g. 0.95)")
        return self


class GateCriteria(Model):
    soak: Duration = "0s"
    window: Optional[Duration] = Field(default=None, description="default: the soak, or 10m without one")
    scope: Scope = Field(default_factory=Scope)
    min_samples: int = Field(default=100, ge=0)
    signals: Optional[list[Signal]] = Field(default=None, description="default: the bazbii:rollback triggers")

    def soak_seconds(self) -> int:
        return duration_seconds(self.soak)

    def window_seconds(self) -> int:
        if self.window is not None:
            return duration_seconds(self.window)
        return self.soak_seconds() or 600


def rollback_signals(rollback: Rollback) -> list[Signal]:
    """The rollback triggers of ``bazbii:rollback`` as signals (the default gate and what `watch` checks)."""
    return [
        Signal(name="error-ratio", kind="errorRatio", max=rollback.max_error_rate),
        Signal(name="p95-latency", kind="latencyQuantile", quantile=0.95,
               max=rollback.p95_target_ms * rollback.p95_factor / 1000.0),
    ]


def effective_signals(criteria: GateCriteria, rollback: Rollback) -> list[Signal]:
    return list(criteria.signals) if criteria.signals is not None else rollback_signals(rollback)


def describe_criteria(criteria: GateCriteria, rollback: Rollback) -> str:
    """One line for docs: ``soak 24h; pool server2 over 1d: error-ratio <= 1.00 %, ...; min 100 requests``."""
    parts = [f"soak {criteria.soak}"] if criteria.soak_seconds() else []
    signals = effective_signals(criteria, rollback)
    if signals:
        bounds = []
        for signal in signals:
            limits = [f">= {format_value(signal.min, signal.kind)}"] if signal.min is not None else []
            if signal.against == "baseline":
                limits.append(f"<= {signal.factor:g}x baseline")
            elif signal.max is not None:
                limits.append(f"<= {format_value(signal.max, signal.kind)}")
            where = f" [{signal.scope.describe()}]" if signal.scope else ""
            bounds.append(f"{signal.name}{where} {' and '.join(limits)}")
        parts.append(f"{criteria.scope.describe()} over {format_duration(criteria.window_seconds())}: " + ", ".join(bounds))
        if any(s.counted for s in signals):
            parts.append(f"min {criteria.min_samples} requests")
    return "; ".join(parts)


def unknown_queries(criteria: GateCriteria, metrics: MetricsConfig) -> list[tuple[int, str]]:
    """``(signal index, kind)`` of signals naming a query that ``bazbii:metrics`` does not have."""
    known = set(metrics.query_names())
    return [(i, s.kind) for i, s in enumerate(criteria.signals or []) if s.kind not in known]


# --------------------------------------------------------------------------- where the exporters run
def exporter_servers(servers: Mapping[str, Server], job: ExporterKind) -> list[str]:
    """The servers that run ``job``'s exporter (those with its role), sorted: where Prometheus scrapes it
    (:func:`scrape_targets`) and where the program installs it (``PostgresCluster``)."""
    return sorted(servers_with_role(servers, EXPORTER_ROLES[job]))


def scrape_targets(state: StackState, metrics: MetricsConfig) -> list[dict]:
    """Prometheus ``file_sd`` target groups for the exporters on the servers, with the labels scopes use.

    ``pool`` lists, comma-separated, the load-balancer pools a target serves: a gateway serves the
    pool(s) whose origin it is. The API's own metrics are not here: its pods are behind the Service's
    NodePort, so they are scraped one by one through Kubernetes discovery (:func:`scrape_configs`).
    """
    pools_by_server: dict[str, list[str]] = {}
    for pool_name, pool in state.traffic.pools.items():
        pools_by_server.setdefault(pool.server, []).append(pool_name)
    groups = []
    for job in EXPORTER_ROLES:
        if job == "api":
            continue
        exporter = metrics.exporter(job)
        for server_name in exporter_servers(state.servers, job):
            server = state.servers[server_name]
            labels = {"job": job, "server": server_name, "__metrics_path__": exporter.path}
            served = pools_by_server.get(server_name, []) if job == "gateway" else []
            if served:
                labels["pool"] = ",".join(sorted(served))
            groups.append({"targets": [host_port(server.address, exporter.port)], "labels": labels})
    return groups


def pod_meta_label(label: str) -> str:
    """The discovery meta label of a pod label (Prometheus turns every other character into ``_``)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def scrape_configs(state: StackState, metrics: MetricsConfig, file_sd_path: str = FILE_SD_PATH) -> list[dict]:
    """The ``scrape_configs`` Prometheus needs for the gates' queries: the servers' exporters (the
    :func:`scrape_targets` document, at ``file_sd_path``) and every API pod through Kubernetes pod
    discovery in the app's namespace, labelled as the scopes match: ``track`` (stable or canary),
    ``server`` (its node) and ``pool`` (every pool: every gateway forwards to every API pod, so a
    pool's latency is that of the whole API)."""
    from .facts import HTTP_PORT_NAME, NAME_LABEL, TRACK_LABEL

    pools = ",".join(sorted(state.traffic.pools))
    relabel = [
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": HTTP_PORT_NAME, "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
        {"source_labels": [pod_meta_label(TRACK_LABEL)], "target_label": "track"},
        {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "server"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    if pools:
        relabel.append({"target_label": "pool", "replacement": pools})
    return [
        {"job_name": "bazbii-exporters", "file_sd_configs": [{"files": [file_sd_path]}]},
        {"job_name": "api", "metrics_path": metrics.exporter("api").path,
         "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [state.app.namespace]},
                                    "selectors": [{"role": "pod", "label": f"{NAME_LABEL}=api"}]}],
         "relabel_configs": relabel},
    ]
