"""Evaluate gate criteria and rollback triggers against a Prometheus-compatible API.

:func:`evaluate_signals` is the measuring core (used by gates and by ``watch``);
:func:`evaluate_step_gate` is the pure entry point for one plan step: plan
step + when the previous step was applied + metrics config + now -> Verdict.
The clock is a parameter, never read here, so callers decide what "now" is
(the check resource's provider reads it inside ``check()``).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from string import Template
from typing import Mapping, Optional

from bazbii_plan.gates import GateCriteria, MetricsConfig, Scope, Signal, effective_signals, format_duration
from bazbii_plan.models import Rollback
from bazbii_plan.plan import Step
from bazbii_plan.record import parse_time

from .prometheus import EmptyResult, MetricsError, MetricsUnreachable, PrometheusClient
from .verdict import FAIL, INCONCLUSIVE, PASS, SignalResult, Verdict, overall

# A rehearsal's compressed metrics window (bazbii:timeScale) is never shorter than this: a rate needs
# several scrapes inside its window (the rehearsal's Prometheus scrapes every second).
SCALED_WINDOW_FLOOR_SECONDS = 15.0


def render_query(metrics: MetricsConfig, kind: str, scope: Scope, window_seconds: float,
                 quantile: Optional[float] = None) -> str:
    """The PromQL of a builtin or named query, for one scope and window."""
    matchers = metrics.scope_matchers(scope.kind, scope.name)
    return Template(metrics.query(kind, scope.kind)).substitute(
        scope=matchers, window=f"{max(1, int(window_seconds))}s", quantile=f"{quantile if quantile is not None else 0.95:g}"
    )


def _compare(value: float, low: Optional[float], high: Optional[float]) -> str:
    if math.isnan(value):
        return INCONCLUSIVE
    if high is not None and value > high:
        return FAIL
    if low is not None and value < low:
        return FAIL
    return PASS


def evaluate_signals(
    client: PrometheusClient,
    metrics: MetricsConfig,
    signals: list[Signal],
    scope: Scope,
    *,
    window_seconds: float,
    now: datetime,
    min_samples: int,
) -> list[SignalResult]:
    """Each signal over ``[now - window, now]``; never raises for metrics problems (they are inconclusive)."""
    results: list[SignalResult] = []
    counts: dict[tuple, object] = {}  # scope -> request count or the MetricsError that prevented it
    unreachable: Optional[str] = None

    def count_for(signal_scope: Scope):
        key = (signal_scope.kind, signal_scope.name)
        if key not in counts:
            try:
                counts[key] = client.scalar(render_query(metrics, "requestCount", signal_scope, window_seconds), at=now)
            except MetricsError as exc:
                counts[key] = exc
        return counts[key]

    for signal in signals:
        signal_scope = signal.scope or scope
        query = render_query(metrics, signal.kind, signal_scope, window_seconds, signal.quantile)
        result = SignalResult(
            name=signal.name, kind=signal.kind, scope=signal_scope.describe(), status=INCONCLUSIVE,
            max=signal.max, min=signal.min, window_seconds=window_seconds, query=query,
        )
        results.append(result)
        if unreachable:
            result.reason = unreachable
            continue
        try:
            if signal.counted:
                count = count_for(signal_scope)
                if isinstance(count, MetricsError):
                    raise count
                result.samples = count
                if count < min_samples:
                    result.reason = f"too few samples: {count:.0f} requests < minSamples {min_samples}"
                    continue
            result.value = client.scalar(query, at=now)
            if signal.against == "baseline":
                # The same query over the same-length window just before this one: before the step.
                result.baseline = client.scalar(query, at=now - timedelta(seconds=window_seconds))
                result.max = result.baseline * signal.factor
            result.status = _compare(result.value, result.min, result.max)
        except MetricsUnreachable as exc:
            unreachable = result.reason = str(exc)
        except EmptyResult as exc:
            result.reason = f"no data: {exc}"
        except MetricsError as exc:
            result.reason = str(exc)
    return results


def unmeasured(signals: list[Signal], scope: Scope, reason: str, window_seconds: float = 0.0) -> list[SignalResult]:
    """Inconclusive results for signals that could not be measured at all."""
    return [SignalResult(s.name, s.kind, (s.scope or scope).describe(), INCONCLUSIVE, max=s.max, min=s.min,
                         window_seconds=window_seconds, reason=reason) for s in signals]


def soak_result(criteria: GateCriteria, since: Optional[datetime], now: datetime,
                time_scale: int = 1) -> Optional[SignalResult]:
    """The time-only part of a gate: how long the previous step has been applied (None: the gate has no soak).
    A rehearsal's ``time_scale`` divides the soak (bazbii:timeScale)."""
    soak = criteria.soak_seconds() / time_scale
    if soak <= 0:
        return None
    result = SignalResult(name="soak", kind="soak", scope="previous step", status=INCONCLUSIVE, min=float(soak))
    if since is None:
        result.reason = "the time the previous step was applied is unknown"
        return result
    result.value = max(0.0, (now - since).total_seconds())
    result.status = PASS if result.value >= soak else FAIL
    if result.status == FAIL:
        result.reason = f"wait {format_duration(soak - result.value)} more"
    return result


def evaluate_criteria(
    criteria: GateCriteria,
    rollback: Rollback,
    metrics: MetricsConfig,
    *,
    track: str,
    step: str,
    since: Optional[datetime],
    now: datetime,
    client: Optional[PrometheusClient] = None,
    override: Optional[str] = None,
    time_scale: int = 1,
) -> Verdict:
    """The verdict of one step's criteria; ``since``: when the previous step of its track was applied.
    A rehearsal's ``time_scale`` (bazbii:timeScale) divides the soak and the window."""
    verdict = Verdict(track=track, step=step, status=INCONCLUSIVE, evaluated_at=now.isoformat(),
                      endpoint=client.where if client else metrics.endpoint, override=override)
    soak = soak_result(criteria, since, now, time_scale)
    if soak is not None:
        verdict.signals.append(soak)
    window = float(criteria.window_seconds()) / time_scale
    if time_scale != 1:  # a compressed window still needs several scrapes in it
        window = max(window, SCALED_WINDOW_FLOOR_SECONDS)
    if since is not None:
        window = min(window, max(0.0, (now - since).total_seconds()))
    signals = effective_signals(criteria, rollback)
    if client is None and metrics.endpoint is None:
        verdict.note = "bazbii:metrics.endpoint is not set, so nothing can be measured"
        verdict.signals += unmeasured(signals, criteria.scope, "no metrics endpoint", window)
    elif window < 1:
        verdict.signals += unmeasured(signals, criteria.scope, "the previous step was applied less than 1 s ago")
    else:
        owned = None
        if client is None:
            if metrics.endpoint is None:  # the first branch took a call with neither
                raise ValueError("no metrics client and no bazbii:metrics.endpoint")
            client = owned = PrometheusClient(metrics.endpoint, timeout=metrics.timeout_seconds)
        try:
            verdict.signals += evaluate_signals(client, metrics, signals, criteria.scope, window_seconds=window,
                                                now=now, min_samples=criteria.min_samples)
        finally:
            if owned is not None:
                owned.close()
    verdict.status = overall(verdict.signals)
    if time_scale != 1:
        scaled = f"time scale 1/{time_scale} (a rehearsal): soak and window divided by {time_scale}"
        verdict.note = f"{verdict.note}; {scaled}" if verdict.note else scaled
    return verdict


def evaluate_step_gate(
    step: Step,
    track: str,
    applied_since: Mapping[str, Optional[str]],
    metrics: MetricsConfig,
    rollback: Rollback,
    now: datetime,
    *,
    client: Optional[PrometheusClient] = None,
    override: Optional[str] = None,
    time_scale: int = 1,
) -> Verdict:
    """The live gate of applying ``step`` on ``track``.

    ``applied_since`` is the previous applied record's ``since`` (track -> ISO
    time its current step was applied). A step without criteria passes with a
    note: its gate is text only.
    """
    if step.criteria is None:
        return Verdict(track=track, step=step.name, status=PASS, evaluated_at=now.isoformat(),
                       endpoint=metrics.endpoint, note="no measurable criteria; the gate text is checked by people",
                       override=override)
    return evaluate_criteria(step.criteria, rollback, metrics, track=track, step=step.name,
                             since=parse_time(applied_since.get(track)), now=now, client=client, override=override,
                             time_scale=time_scale)
