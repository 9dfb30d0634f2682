"""Live-metric gates and rollback triggers (no Pulumi import).

Public API, kept small on purpose (the rehearsal and the backfill use it too):

``metrics_client(metrics, servers, ssh_key)`` (reach.py)
    The client ``bazbii:metrics`` asks for: direct, or over SSH through a server inside the network
    (``bazbii:metrics.ssh``, ``curl`` run there with ``bazbii:sshPrivateKey``; sshtransport.py).

``PrometheusClient(endpoint, timeout)``
    ``.query(promql, at)`` -> [Sample], ``.query_range(promql, start, end, step)`` -> [Series],
    ``.scalar(promql, at)`` -> float. Failures raise a ``MetricsError`` subclass with a
    one-line message: ``MetricsUnreachable``, ``MetricsHTTPError``, ``BadQuery``, ``EmptyResult``
    (no series, or NaN: no requests in the window).
    A p99 for a backfill throttle: ``client.scalar(render_query(metrics, "latencyQuantile",
    Scope(), 60, quantile=0.99))``.

``evaluate_step_gate(step, track, applied_since, metrics, rollback, now, client=None, override=None)``
    -> ``Verdict``: the live gate of applying one plan step. Pure apart from the
    metrics it reads: the clock is the ``now`` argument.

``evaluate_criteria(criteria, rollback, metrics, track=, step=, since=, now=, client=)``
    -> ``Verdict`` for criteria that are not (yet) part of a plan step (the rehearsal).

``check_input_verdict(inputs, now, ssh_key)`` / ``record_live_gate(step_names, previous, target)``
    The transition check's integration: the one call its provider's ``check()`` makes, on
    the gate of the applied record (``judgedBy``, bazbii_plan.judging; no clock, no verdict
    among the inputs); ``live_gate_inputs(stack)`` is a stack config's own copy, and
    ``live_gate_problems``/``live_gate_verdict`` take the parts separately.

``Verdict`` / ``SignalResult``
    ``status`` pass | fail | inconclusive (inconclusive denies: gates fail closed),
    ``allowed`` (passed, or ``bazbii:phaseOverride``), ``lines()``, ``problems()``, ``to_dict()``;
    each signal has its value, threshold, window, sample count and reason.

The ``watch`` command (``python -m bazbii_analysis.watch``, run every 15 minutes by
.github/workflows/watch.yml) re-evaluates the rollback triggers of the step the stack applied, rolls
it back exactly one step through git on a breach (a commit on main, or a pull request: gitrollback.py)
and alerts on K consecutive rounds that cannot tell (github.py).
"""

from .evaluate import evaluate_criteria, evaluate_signals, evaluate_step_gate, render_query
from .gatecheck import (LIVE_GATE_INPUT, check_input_problems, check_input_verdict, live_gate_inputs, live_gate_problems,
                        live_gate_verdict, record_live_gate)
from .prometheus import (BadQuery, EmptyResult, MetricsError, MetricsHTTPError, MetricsUnreachable,
                         PrometheusClient, Sample, Series)
from .reach import metrics_client
from .verdict import FAIL, INCONCLUSIVE, PASS, SignalResult, Verdict

__all__ = [
    "PrometheusClient", "Sample", "Series", "metrics_client",
    "MetricsError", "MetricsUnreachable", "MetricsHTTPError", "BadQuery", "EmptyResult",
    "evaluate_step_gate", "evaluate_criteria", "evaluate_signals", "render_query",
    "LIVE_GATE_INPUT", "check_input_problems", "check_input_verdict", "live_gate_inputs", "live_gate_problems", "live_gate_verdict",
    "record_live_gate",
    "Verdict", "SignalResult", "PASS", "FAIL", "INCONCLUSIVE",
]
