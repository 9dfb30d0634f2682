"""Gate criteria and bazbii:metrics as config: validation errors name the key; what the program declares."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml

from bazbii_analysis import evaluate_step_gate, live_gate_inputs
from bazbii_analysis.watchsetup import load_offline_config
from bazbii_plan.errors import ConfigError
from bazbii_plan.gates import FILE_SD_PATH, GateCriteria, describe_criteria, rollback_signals, scrape_configs, scrape_targets
from bazbii_plan.models import Rollback
from offline_preview.__main__ import main as preview_main

from .conftest import REPO


def _prod() -> dict:
    return yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())


def _load(tmp_path, document) -> None:
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_offline_config(path)


def _infra_step(document, name):
    return next(s for s in document["config"]["bazbii:plan"]["infra"]["steps"] if s["name"] == name)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["config"]["bazbii:metrics"].update(endpoint="prometheus:9090"),
     "bazbii:metrics.endpoint: must be an http:// or https:// URL (got 'prometheus:9090')"),
    (lambda d: d["config"]["bazbii:metrics"].update(exporters={"api": {"port": 9100, "path": "metrics"}}),
     "bazbii:metrics.exporters.api.path: must be a path starting with '/'"),
    (lambda d: d["config"]["bazbii:metrics"].update(queries={"errorRatio": "sum(rate(x[${windw}]))"}),
     "bazbii:metrics.queries.errorRatio: bad template"),
    (lambda d: _infra_step(d, "traffic-50")["criteria"].update(soak="1 day"),
     "bazbii:plan.infra.steps[5].criteria.soak: '1 day' is not a duration"),
    (lambda d: _infra_step(d, "traffic-50")["criteria"].update(signals=[{"name": "x", "kind": "nope", "max": 1}]),
     "bazbii:plan.infra.steps[5].criteria.signals[0].kind: unknown query 'nope'"),
    (lambda d: _infra_step(d, "traffic-50")["criteria"].update(scope={"kind": "pool"}),
     "bazbii:plan.infra.steps[5].criteria.scope: a pool scope needs a name"),
])
def test_bad_criteria_or_metrics_config_names_the_key(tmp_path, edit, expected):
    document = _prod()
    edit(document)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, document)
    assert any(line.startswith(expected) for line in caught.value.problems), caught.value.problems


def test_criteria_default_from_the_rollback_triggers():
    rollback = Rollback(max_error_rate=0.02, p95_target_ms=250, p95_factor=3.0)
    signals = {s.name: s for s in rollback_signals(rollback)}
    assert signals["error-ratio"].max == 0.02
    assert signals["p95-latency"].max == pytest.approx(0.75) and signals["p95-latency"].quantile == 0.95
    criteria = GateCriteria.model_validate({"soak": "24h", "scope": {"kind": "pool", "name": "server2"}})
    assert criteria.window_seconds() == 86400
    assert describe_criteria(criteria, rollback) == (
        "soak 24h; pool server2 over 1d: error-ratio <= 2.00 %, p95-latency <= 750 ms; min 100 requests")


def test_program_declares_where_the_exporters_run(tmp_path):
    config = _load(tmp_path, _prod())
    groups = scrape_targets(config.state(), config.metrics)
    by_job = {}
    for group in groups:
        by_job.setdefault(group["labels"]["job"], []).append((group["targets"][0], group["labels"].get("pool")))
    # traffic-10: gateways on server1 and server2, each its own pool; PostgreSQL on server2 and its replica on server3.
    assert by_job["gateway"] == [("203.0.113.11:8405", "server1"), ("203.0.113.12:8405", "server2")]
    assert by_job["postgres"] == [("203.0.113.12:9187", None), ("203.0.113.13:9187", None)]
    assert by_job["pgbouncer"] == [("203.0.113.11:9127", None)]
    assert "api" not in by_job  # the API's pods are behind a NodePort: scraped one by one through discovery
    exporters, api = scrape_configs(config.state(), config.metrics)
    assert exporters["file_sd_configs"] == [{"files": [FILE_SD_PATH]}]
    assert api["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["bazbii"]}
    relabel = {r.get("target_label"): r for r in api["relabel_configs"]}
    assert relabel["pool"]["replacement"] == "server1,server2"  # every gateway forwards to every API pod
    assert relabel["track"]["source_labels"] == ["__meta_kubernetes_pod_label_bazbii_io_track"]


def test_check_inputs_carry_no_clock_and_no_verdict(tmp_path):
    config = _load(tmp_path, _prod())
    inputs = live_gate_inputs(config)
    text = json.dumps(inputs)
    assert json.loads(text) == inputs  # plain data
    assert live_gate_inputs(config) == inputs  # deterministic: no time, no measurement
    assert "2026" not in text and "verdict" not in text and "status" not in text
    assert inputs["criteria"]["infra"]["traffic-50"]["soak"] == "24h"
    assert inputs["metrics"]["endpoint"] == "http://prometheus.bazbii.internal:9090"


def test_no_endpoint_and_unknown_apply_time_are_inconclusive(tmp_path):
    document = _prod()
    del document["config"]["bazbii:metrics"]
    config = _load(tmp_path, document)
    track = config.plan.tracks["infra"]
    step = track.steps[track.index("traffic-50")]
    verdict = evaluate_step_gate(step, "infra", {}, config.metrics, config.state().rollback, datetime.now(timezone.utc))
    assert verdict.status == "inconclusive" and not verdict.allowed
    reasons = {s.name: s.reason for s in verdict.signals}
    assert reasons["soak"] == "the time the previous step was applied is unknown"
    assert reasons["error-ratio"] == "no metrics endpoint"
    assert "bazbii:metrics.endpoint is not set" in verdict.headline()
    # A step with no criteria passes with a note; its text gate is for people.
    plain = evaluate_step_gate(track.steps[track.index("server1-resized")], "infra", {}, config.metrics,
                               config.state().rollback, datetime.now(timezone.utc))
    assert plain.passed and "no measurable criteria" in plain.note


def test_preview_without_metrics_says_the_live_gate_was_not_evaluated(capsys):
    rc = preview_main(["--phase", "traffic-50", "--base-age", "2d"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "live gate of infra step 'traffic-50' NOT EVALUATED" in out
    assert "`pulumi preview` and `pulumi up` evaluate it" in out


def test_preview_rejects_a_bad_metrics_url(capsys):
    assert preview_main(["--phase", "traffic-50", "--metrics", "prometheus:9090"]) == 2
    assert capsys.readouterr().err.strip() == (
        "--metrics prometheus:9090: must be an http(s) URL of a Prometheus-compatible API")


def test_watch_bad_arguments_exit_2(capsys):
    from bazbii_analysis import watch as watch_cli

    assert watch_cli.main(["--track", "nope", "--metrics", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip().startswith("--track nope: tracks are")
    assert watch_cli.main(["--duration", "soon", "--metrics", "http://127.0.0.1:9"]) == 2
    assert "--duration: 'soon' is not a duration" in capsys.readouterr().err


def test_analysis_package_imports_no_pulumi():
    """Only the stack boundary (stackaccess.read_stack) imports pulumi.automation, and only when it runs."""
    import subprocess
    import sys

    code = ("import sys, bazbii_analysis, bazbii_analysis.watch, bazbii_analysis.triggers, bazbii_analysis.stackaccess, "
            "bazbii_analysis.gitrollback, bazbii_analysis.github, bazbii_analysis.reach; "
            "print(sorted(m for m in sys.modules if m == 'pulumi' or m.startswith('pulumi.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_program_exports_the_scrape_targets(tmp_path):
    from offline_preview import scenarios

    side = scenarios.load_side(REPO / "Pulumi.prod.yaml")
    evaluation, _failures = scenarios._evaluate(side, None)
    assert evaluation.outputs["metricsTargets"] == scrape_targets(side.config.state(), side.config.metrics)
    (component,) = [r for r in evaluation.resources if r.type == "bazbii:index:MetricsTargets"]
    assert component.name == "metrics"


@pytest.mark.parametrize("track, step, scope, soak", [
    ("infra", "traffic-10", "pool server2", 86400),     # traffic-50's gate measures what traffic-10 moved
    ("infra", "traffic-100", "pool server2", 1800),     # gateway-off-server1 counts server1's requests instead
    ("release", "canary-10", "canary", 86400),
    ("release", "api-2.0", "service", None),  # its own gate measures the canary it promotes: none is left after it
    ("infra", "server3-provisioned", "service", None),  # nothing measured: watched for --period
    # its own gate counts what still reaches server1 (nothing, once applied): the service carries the risk
    ("infra", "gateway-off-server1", "service", None),
    ("infra", "db-switchover", "service", 86400),       # its own gate is the longest transaction on server2
])
def test_watch_measures_what_the_step_moved_for_the_next_soak(tmp_path, track, step, scope, soak):
    from bazbii_analysis.watchsetup import next_soak_seconds, watched_scope

    document = _prod()
    key = document["config"]["bazbii:plan"][track]["key"]
    document["config"][f"bazbii:{key}"] = step
    if step in ("canary-10", "api-2.0"):  # worker-2.0 requires the schema expanded
        document["config"]["bazbii:schemaPhase"] = "0002-migrate"
    if step in ("gateway-off-server1", "db-switchover"):  # gateway-off-server1 requires the DNS switched
        document["config"]["bazbii:dnsPhase"] = "switched"
    config = _load(tmp_path, document)
    assert watched_scope(config, track).describe() == scope
    assert next_soak_seconds(config, track) == soak


def test_watch_scope_flag(capsys):
    from bazbii_analysis import watch as watch_cli

    assert watch_cli.main(["--scope", "pool", "--duration", "1m", "--metrics", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip() == "--scope 'pool': use service, canary, pool=NAME or server=NAME"


def test_pool_scope_matches_a_pool_in_a_comma_list_only():
    import re

    from bazbii_plan.gates import MetricsConfig

    matcher = MetricsConfig().scope_matchers("pool", "server2")
    pattern = re.fullmatch(r'pool=~"(.*)"', matcher).group(1)  # PromQL anchors regex matchers at both ends
    for label, expected in [("server2", True), ("server1,server2", True), ("server2,server3", True),
                            ("server20", False), ("server1", False), ("xserver2", False)]:
        assert bool(re.fullmatch(pattern, label)) is expected, label
