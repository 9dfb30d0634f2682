"""Live gates against a real Prometheus scraping a real HAProxy and service (see conftest; ``watch``: test_watch.py)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from bazbii_analysis import (BadQuery, EmptyResult, MetricsHTTPError, MetricsUnreachable,
                             PrometheusClient, evaluate_criteria, evaluate_step_gate, live_gate_inputs, live_gate_problems, render_query)
from bazbii_analysis.watchsetup import load_offline_config
from bazbii_plan.gates import DEFAULT_QUERIES, GateCriteria, Scope
from offline_preview.__main__ import main as preview_main
from testsupport.localcluster import free_port

from .conftest import run_phase, write_stack_file

GATE = {"soak": "3s", "window": "1h", "scope": {"kind": "pool", "name": "server2"}, "minSamples": 50}


def _config(tmp_path, endpoint, phase="traffic-10", criteria=None):
    path = write_stack_file(tmp_path, phase=phase, endpoint=endpoint, criteria=criteria or {"traffic-50": GATE})
    return path, load_offline_config(path)


def _gate(config, since, now=None, override=None):
    track = config.plan.tracks["infra"]
    step = track.steps[track.index("traffic-50")]
    return evaluate_step_gate(step, "infra", {"infra": since.isoformat()}, config.metrics,
                              config.state().rollback, now or datetime.now(timezone.utc), override=override)


def _by_name(verdict):
    return {s.name: s for s in verdict.signals}


def _age(phase) -> str:
    return f"{int((datetime.now(timezone.utc) - phase.started).total_seconds())}s"


# --------------------------------------------------------------------------- the client
def test_client_answers_and_names_each_failure(metrics_stack):
    with PrometheusClient(metrics_stack.prometheus_url, timeout=3) as client:
        assert client.scalar('count(up{pool=~"(.+,)?server2(,.+)?"} == 1)') == 2
        now = datetime.now(timezone.utc).timestamp()
        series = client.query_range("up", now - 3, now, 1)
        assert {s.labels["job"] for s in series} == {"gateway", "api"} and all(s.points for s in series)
        with pytest.raises(BadQuery, match="PromQL rejected"):
            client.query("sum(rate(up[1m])")
        with pytest.raises(EmptyResult, match="no data"):
            client.scalar("no_such_metric_anywhere")
        # Every default template is valid PromQL for the real server, scoped or not.
        for kind in DEFAULT_QUERIES:
            for scope in (Scope(), Scope(kind="pool", name="server2")):
                client.query(render_query(metrics_stack_config(), kind, scope, 60))
    with PrometheusClient(metrics_stack.gateway_url, timeout=3) as not_prometheus:
        with pytest.raises(MetricsHTTPError, match="not a Prometheus API response"):
            not_prometheus.query("up")
    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2) as nothing:
        with pytest.raises(MetricsUnreachable, match="unreachable"):
            nothing.query("up")


def metrics_stack_config():
    from bazbii_plan.gates import MetricsConfig

    return MetricsConfig()


# --------------------------------------------------------------------------- gate verdicts
def _custom_verdict(config, phase):
    from bazbii_analysis import evaluate_criteria
    from bazbii_plan.gates import GateCriteria

    metrics = config.metrics.model_copy(update={"queries": {
        "appErrors": 'sum(increase(http_requests_total{code="500",${scope}}[${window}])) or vector(0)'}})
    criteria = GateCriteria.model_validate({"scope": {"kind": "pool", "name": "server2"}, "signals": [
        {"name": "traffic", "kind": "requestCount", "min": 50, "counted": False},
        {"name": "app-errors", "kind": "appErrors", "max": 0, "counted": False}]})
    return evaluate_criteria(criteria, config.state().rollback, metrics, track="infra", step="traffic-50",
                             since=phase.started, now=datetime.now(timezone.utc))


def test_healthy_service_passes_the_gate_and_the_check(metrics_stack, tmp_path):
    metrics_stack.service.restart()  # a new pod: its counter has no 5xx series until its first error
    phase = run_phase(metrics_stack, error_percent=0)
    _path, config = _config(tmp_path, metrics_stack.prometheus_url)
    verdict = _gate(config, phase.started)
    print("\n".join(verdict.lines()))
    assert verdict.passed, verdict.lines()
    signals = _by_name(verdict)
    assert signals["error-ratio"].value == 0.0 and signals["error-ratio"].max == 0.01
    assert 0 < signals["p95-latency"].value < 0.1 and signals["p95-latency"].max == pytest.approx(0.6)
    assert signals["error-ratio"].samples >= 50
    assert signals["soak"].value >= 3
    # A request-count floor and a custom named PromQL query (the service's own status counter).
    custom = _custom_verdict(config, phase)
    assert custom.passed, custom.lines()
    assert _by_name(custom)["traffic"].value >= 50 and _by_name(custom)["app-errors"].value == 0
    # The canary's error ratio, on the API's own counter, which has no 5xx series at all: 0 errors, not "no data".
    canary_error = _by_name(_canary(config, phase))["error-ratio"]
    assert canary_error.status == "pass" and canary_error.value == 0.0, canary_error.line()
    # The check resource's call: moving traffic-10 -> traffic-50 is let through.
    previous = {"steps": dict(config.current), "since": {"infra": phase.started.isoformat()}}
    target = dict(config.current, infra="traffic-50")
    assert live_gate_problems(live_gate_inputs(config), previous, target, None, datetime.now(timezone.utc)) == []


def test_error_rate_3_percent_denies_naming_signal_value_threshold_window(metrics_stack, tmp_path, capsys):
    phase = run_phase(metrics_stack, error_percent=3)
    path, config = _config(tmp_path, metrics_stack.prometheus_url)

    rc = preview_main(["--config", str(path), "--phase", "traffic-50", "--base-age", _age(phase),
                       "--metrics", metrics_stack.prometheus_url])
    out = capsys.readouterr().out
    print(out)
    assert rc == 1
    match = re.search(r"FAIL +error-ratio \[pool server2\]: ([0-9.]+) % \(threshold <= 1\.00 %\) over (\d+)s, (\d+) requests", out)
    assert match, out
    assert 2.0 <= float(match.group(1)) <= 5.0
    assert 5 <= int(match.group(2)) <= 30 and int(match.group(3)) >= 50
    assert "PASS         p95-latency [pool server2]" in out
    assert "DENIED" in out

    now = datetime.now(timezone.utc)
    previous = {"steps": dict(config.current), "since": {"infra": phase.started.isoformat()}}
    problems = live_gate_problems(live_gate_inputs(config), previous, dict(config.current, infra="traffic-50"), None, now)
    assert len(problems) == 1 and "error-ratio [pool server2]" in problems[0] and "threshold <= 1.00 %" in problems[0]
    custom = _by_name(_custom_verdict(config, phase))
    assert custom["app-errors"].status == "fail" and custom["app-errors"].value >= 1
    # A canary is measured on the API's own counter (the gateway cannot tell canary pods apart).
    canary_error = _by_name(_canary(config, phase))["error-ratio"]
    assert canary_error.status == "fail" and 0.02 <= canary_error.value <= 0.05, canary_error.line()
    assert "http_requests_total" in canary_error.query and 'track="canary"' in canary_error.query
    # A rollback is never held back by metrics: it is the remedy.
    at_50 = {"steps": dict(config.current, infra="traffic-50"), "since": {"infra": phase.started.isoformat()}}
    assert live_gate_problems(live_gate_inputs(config), at_50, dict(config.current), None, now) == []
    # The program registers the criteria on the transition check, and its provider's check() (the engine's
    # call in `pulumi preview`/`up`) refuses the step on the same numbers.
    failures = _provider_check_failures(path, phase, metrics_stack.prometheus_url)
    assert [f.property for f in failures] == [""], [f.reason for f in failures]
    assert "FAIL         error-ratio [pool server2]" in failures[0].reason
    # bazbii:phaseOverride with a reason lets the step through, and says so.
    overridden = _gate(config, phase.started, override="incident 42: accepted by the on-call lead")
    assert not overridden.passed and overridden.allowed and "phaseOverride" in overridden.headline()


def _canary(config, phase):
    """The canary's rollback triggers over ``phase``, as ``watch`` measures them after canary-50."""
    return evaluate_criteria(GateCriteria.model_validate({"scope": {"kind": "canary"}, "minSamples": 50}),
                             config.state().rollback, config.metrics, track="release", step="canary-50",
                             since=phase.started, now=datetime.now(timezone.utc))


def _provider_check_failures(stack_path, phase, endpoint):
    """Evaluate the real program (SDK mocks) for traffic-10 -> traffic-50 and run the check resource's provider."""
    from components.transition_check import TransitionCheckProvider
    from offline_preview import scenarios

    side = scenarios.load_side(stack_path)
    transition = scenarios.to_step(side, "traffic-50", phase.started.replace(microsecond=0).isoformat())
    evaluation, _failures = scenarios._evaluate(transition.after, transition.previous_record)
    (check,) = [r for r in evaluation.resources if r.name == "transition-check"]
    # The gate is the applied record's (judgedBy): the step's criteria and the stack's bazbii:metrics.
    applied = check.inputs["previous"]["judgedBy"]
    assert applied["criteria"]["infra"]["traffic-50"]["scope"] == {"kind": "pool", "name": "server2"}
    assert applied["metrics"]["endpoint"] == endpoint
    return TransitionCheckProvider().check({}, json.loads(json.dumps(check.inputs))).failures


def test_prometheus_down_denies_fail_closed(tmp_path, capsys):
    down = f"http://127.0.0.1:{free_port()}"
    path, _config_ = _config(tmp_path, down)
    rc = preview_main(["--config", str(path), "--phase", "traffic-50", "--base-age", "1h", "--metrics", "config"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "INCONCLUSIVE (fails closed)" in out
    assert re.search(r"INCONCLUSIVE +error-ratio \[pool server2\]: n/a \(threshold <= 1\.00 %\) over 1h; metrics endpoint "
                     + re.escape(down) + " is unreachable", out), out


def test_too_few_samples_is_inconclusive_and_denied(metrics_stack, tmp_path):
    phase = run_phase(metrics_stack, error_percent=0, max_requests=12)
    # The phase is short (12 requests): a 1 s soak, so only the sample count can make it inconclusive.
    _path, config = _config(tmp_path, metrics_stack.prometheus_url, criteria={"traffic-50": dict(GATE, soak="1s")})
    verdict = _gate(config, phase.started)
    assert verdict.status == "inconclusive" and not verdict.allowed, verdict.lines()
    assert _by_name(verdict)["soak"].status == "pass"
    error_ratio = _by_name(verdict)["error-ratio"]
    assert error_ratio.samples < 50 and error_ratio.value is None
    assert re.search(r"too few samples: \d+ requests < minSamples 50", error_ratio.reason)
    assert any("too few samples" in line for line in verdict.problems())


def test_latency_against_the_baseline_before_the_step(metrics_stack, tmp_path):
    """p95 <= 2x the p95 of the same-length window just before the step: a 10x slower service fails it."""
    from bazbii_analysis import evaluate_criteria
    from bazbii_plan.gates import GateCriteria

    criteria = GateCriteria.model_validate({
        "scope": {"kind": "pool", "name": "server2"}, "minSamples": 20,
        "signals": [{"name": "p95-vs-baseline", "kind": "latencyQuantile", "quantile": 0.95,
                     "against": "baseline", "factor": 2}],
    })
    _path, config = _config(tmp_path, metrics_stack.prometheus_url)
    run_phase(metrics_stack, error_percent=0, latency=0.003)
    slower = run_phase(metrics_stack, error_percent=0, latency=0.04)
    verdict = evaluate_criteria(criteria, config.state().rollback, config.metrics, track="infra", step="x",
                                since=slower.started, now=datetime.now(timezone.utc))
    (signal,) = verdict.signals
    print(signal.line())
    assert signal.status == "fail", signal.line()
    assert signal.baseline < 0.025 and signal.value > 0.04 and signal.max == pytest.approx(2 * signal.baseline)
    assert "(baseline " in signal.threshold()
