"""A small client for the Prometheus HTTP API (also served by VictoriaMetrics, Thanos and Mimir).

Only ``/api/v1/query`` (instant vectors) and ``/api/v1/query_range`` (matrices)
are used. Every failure is one :class:`MetricsError` subclass with a one-line
message: the endpoint cannot be reached, it answered with an HTTP error, the
PromQL was rejected, or the result is empty. Gates treat all of them as
"cannot tell", which fails closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Union

import httpx

Instant = Union[datetime, float, None]


class MetricsError(Exception):
    """The metrics API could not give an answer (the message is one line)."""


class MetricsUnreachable(MetricsError):
    pass


class MetricsHTTPError(MetricsError):
    pass


class BadQuery(MetricsError):
    pass


class EmptyResult(MetricsError):
    pass


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float
    at: float  # unix seconds


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix seconds, value)


def _unix(value: Instant) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    return float(value)


def _float(text: str) -> float:
    # Prometheus encodes values as strings, including "NaN", "+Inf" and "-Inf".
    return float(text)


class PrometheusClient:
    """``PrometheusClient("http://127.0.0.1:9090").scalar("up")``; use as a context manager or call close().

    ``transport`` carries the requests some other way (``via`` says how, in every message): over SSH,
    :func:`bazbii_analysis.reach.metrics_client`.
    """

    def __init__(self, endpoint: str, timeout: float = 5.0, transport: Optional[httpx.BaseTransport] = None,
                 via: str = ""):
        self.endpoint = endpoint.rstrip("/")
        self.via = via
        self.where = f"{self.endpoint} over {via}" if via else self.endpoint
        self._http = httpx.Client(base_url=self.endpoint, timeout=timeout, transport=transport)

    def __enter__(self) -> "PrometheusClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- raw API ---------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.endpoint}{path}" + (f" (over {self.via})" if self.via else "")

    def _get(self, path: str, params: dict) -> dict:
        try:
            response = self._http.post(path, data=params)
        except httpx.TimeoutException:
            raise MetricsUnreachable(f"metrics endpoint {self.where} did not answer within {self._http.timeout.read}s") from None
        except httpx.HTTPError as exc:
            raise MetricsUnreachable(f"metrics endpoint {self.where} is unreachable: {exc.__class__.__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            kind, error = body.get("errorType", "error"), body.get("error", "")
            if kind == "bad_data":
                raise BadQuery(f"PromQL rejected by {self.where}: {error} (query: {params.get('query')})")
            raise MetricsHTTPError(f"{self._url(path)} answered {response.status_code} {kind}: {error}")
        if response.status_code != 200 or not isinstance(body, dict):
            raise MetricsHTTPError(f"{self._url(path)} answered HTTP {response.status_code}, not a Prometheus API response")
        return body["data"]

    def query(self, promql: str, at: Instant = None) -> list[Sample]:
        """An instant query; scalars come back as one sample without labels."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{_unix(at):.3f}"
        data = self._get("/api/v1/query", params)
        kind, result = data.get("resultType"), data.get("result")
        if result is None:
            raise MetricsHTTPError(f"{self._url('/api/v1/query')} answered without a result")
        if kind == "scalar":
            return [Sample({}, _float(result[1]), float(result[0]))]
        if kind != "vector":
            raise BadQuery(f"expected an instant vector from {promql!r}, got {kind}")
        return [Sample(item["metric"], _float(item["value"][1]), float(item["value"][0])) for item in result]

    def query_range(self, promql: str, start: Instant, end: Instant, step: float) -> list[Series]:
        data = self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{_unix(start):.3f}", "end": f"{_unix(end):.3f}", "step": f"{step:g}"},
        )
        return [
            Series(item["metric"], [(float(t), _float(v)) for t, v in item["values"]])
            for item in data.get("result", [])
        ]

    # --- conveniences ----------------------------------------------------
    def scalar(self, promql: str, at: Instant = None) -> float:
        """The single value of ``promql``; EmptyResult when there is none (or it is NaN: no traffic)."""
        samples = self.query(promql, at)
        if not samples:
            raise EmptyResult(f"no data for {promql!r}")
        if len(samples) > 1:
            raise BadQuery(f"{promql!r} returned {len(samples)} series; aggregate it to one (e.g. sum or max)")
        if math.isnan(samples[0].value):
            raise EmptyResult(f"{promql!r} is NaN (no requests in the window)")
        return samples[0].value

    def ready(self) -> bool:
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False
