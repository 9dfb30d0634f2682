"""A pull request must not bring the gate it is judged by (issue 25), reviewed as ``./preview --base --config``.

Five classes, each an unsafe pull request (denied, naming the key and the applied value) beside its
safe counterpart (allowed):

1. what judges a step (criteria, touches, bazbii:rollback, bazbii:metrics) comes from the applied plan;
   a pull request changes it only while moving no step key, as a safety-parameter change;
2. the pooler moves only in a step of its own;
3. the time-only parts of a gate are judged from --applied/--base-age, and the final line says when
   the live gate was not fully evaluated;
4. serving images are pinned (a version tag or a digest);
5. no step stops the workers (the migration runner quiets them itself), unless it exists to retire them.
"""

import copy
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from .prs import NOT_EVALUATED, assert_allowed, assert_denied_by, at, denied_lines, preview_pr, step

DIGEST = "sha256:" + "4f" * 32
REVIEW_REASON = "gate reviewed with the on-call lead, see incident 4711"


def _traffic_50(doc):
    return step(doc, "infra", "traffic-50")


def _ago(**delta):
    return (datetime.now(timezone.utc) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%MZ")


# --------------------------------------------------------------------------- 1. judged by the applied plan
# Each edit changes how traffic-50 is judged; the pull request also applies traffic-50.
LOOSENINGS = {
    "error-ratio bound raised": (
        lambda d: _traffic_50(d)["criteria"].update(signals=[{"name": "error-ratio", "kind": "errorRatio", "max": 0.05}]),
        "bazbii:plan.infra.steps[5].criteria.signals changes default -> "),
    "minimum samples set to 0": (lambda d: _traffic_50(d)["criteria"].update(minSamples=0),
                                 "bazbii:plan.infra.steps[5].criteria.minSamples changes 100 -> 0 (applied: 100)"),
    "soak shortened to nothing": (lambda d: _traffic_50(d)["criteria"].update(soak="0s"),
                                  "bazbii:plan.infra.steps[5].criteria.soak changes '24h' -> '0s' (applied: '24h')"),
    "criteria deleted": (lambda d: _traffic_50(d).pop("criteria"),
                         "bazbii:plan.infra.steps[5].criteria changes {'soak': '24h', "),
    "metrics pointed at another Prometheus": (
        lambda d: d["config"]["bazbii:metrics"].update(endpoint="http://prometheus.elsewhere.example:9090"),
        "bazbii:metrics.endpoint changes 'http://prometheus.bazbii.internal:9090' -> "
        "'http://prometheus.elsewhere.example:9090' (applied: 'http://prometheus.bazbii.internal:9090')"),
    "own touches widened": (lambda d: _traffic_50(d).update(touches=["traffic"]),
                            "bazbii:plan.infra.steps[5].touches changes [traffic.pools] -> [traffic] "
                            "(applied: [traffic.pools])"),
    # Even a tighter trigger: while a step is applied, what judges it is the applied plan's, unchanged.
    "rollback trigger changed": (lambda d: d["config"]["bazbii:rollback"].update(maxErrorRate=0.005),
                                 "bazbii:rollback.maxErrorRate changes 0.01 -> 0.005 (applied: 0.01)"),
}


@pytest.mark.parametrize("edit, expected", LOOSENINGS.values(), ids=LOOSENINGS.keys())
def test_a_pointer_move_cannot_bring_the_gate_it_is_judged_by(capsys, tmp_path, prod_doc, edit, expected):
    proposed = at(prod_doc, phase="traffic-50")
    edit(proposed)
    rules = {"plan-judged-by-applied"}
    out = assert_denied_by(capsys, tmp_path, prod_doc, proposed, rules, "--base-age", "2d")
    [line] = denied_lines(out, "plan-judged-by-applied")
    assert expected in line, line
    assert "while this update moves infra traffic-10 -> traffic-50" in line
    assert "keep bazbii:phase at 'traffic-10'" in line.split("Fix:", 1)[1]
    # Even with an override reason: the fix is to split the pull request, never to give a reason.
    with_reason = copy.deepcopy(proposed)
    with_reason["config"]["bazbii:phaseOverride"] = REVIEW_REASON
    assert denied_lines(assert_denied_by(capsys, tmp_path, prod_doc, with_reason, rules, "--base-age", "2d"),
                        "plan-judged-by-applied")


def test_the_same_pointer_move_with_the_applied_gate_passes(capsys, tmp_path, prod_doc):
    out = assert_allowed(capsys, tmp_path, prod_doc, at(prod_doc, phase="traffic-50"), "--base-age", "2d")
    assert "PASS         soak [previous step]: 2d" in out and NOT_EVALUATED in out


def test_the_preview_judges_the_soak_the_applied_plan_gives(capsys, tmp_path, prod_doc):
    # The pull request shortens traffic-50's soak to 1h and applies it 2h after traffic-10: the gate that
    # counts is the applied one (24h), so the soak fails too, not only the rule.
    proposed = at(prod_doc, phase="traffic-50")
    _traffic_50(proposed)["criteria"]["soak"] = "1h"
    code, out, _ = preview_pr(capsys, tmp_path, prod_doc, proposed, "--base-age", "2h")
    assert code == 1
    assert "FAIL         soak [previous step]: 2h" in out and "(threshold >= 1d)" in out


def _with_new_step(doc):
    """The plan with a new infra step after traffic-10 that only tunes the lag gate's timeout."""
    out = copy.deepcopy(doc)
    steps = out["config"]["bazbii:plan"]["infra"]["steps"]
    steps.insert(next(i for i, s in enumerate(steps) if s["name"] == "traffic-10") + 1, {
        "name": "lag-timeout", "summary": "Shorter lag gate timeout.", "gate": "None.", "rollback": "Set traffic-10.",
        "touches": ["database.lagGate.timeoutSeconds"], "criteria": {"soak": "1h", "signals": []},
        "changes": {"database": {"lagGate": {"timeoutSeconds": 120}}},
    })
    return out


def test_a_step_is_added_first_and_applied_in_a_pull_request_of_its_own(capsys, tmp_path, prod_doc):
    planned = _with_new_step(prod_doc)
    out = assert_denied_by(capsys, tmp_path, prod_doc, at(planned, phase="lag-timeout"), {"plan-judged-by-applied"},
                           "--base-age", "2h")
    [line] = denied_lines(out, "plan-judged-by-applied")
    assert "bazbii:plan.infra.steps[5] ('lag-timeout') is not in the applied plan" in line
    # Safe: add it while moving nothing, then move to it once that is applied.
    assert_allowed(capsys, tmp_path, prod_doc, planned)
    out = assert_allowed(capsys, tmp_path, planned, at(planned, phase="lag-timeout"), "--base-age", "2h")
    assert "ALLOWED: 1 transition(s) checked, 0 failed" in out  # a time-only gate, judged in full


def test_a_gate_change_with_no_pointer_move_is_a_safety_parameter_change(capsys, tmp_path, prod_doc):
    tightened = copy.deepcopy(prod_doc)
    _traffic_50(tightened)["criteria"].update(soak="48h", minSamples=500)
    tightened["config"]["bazbii:rollback"]["maxErrorRate"] = 0.005
    assert_allowed(capsys, tmp_path, prod_doc, tightened)  # tightening is free

    within = copy.deepcopy(prod_doc)
    _traffic_50(within)["criteria"]["soak"] = "12h"
    within["config"]["bazbii:metrics"]["endpoint"] = "http://prometheus-2.bazbii.internal:9090"
    out = assert_denied_by(capsys, tmp_path, prod_doc, within, {"safety-gate-loosening"})
    lines = denied_lines(out, "safety-gate-loosening")
    assert any("bazbii:plan.infra.steps[5].criteria.soak is loosened 24h -> 12h (applied: 24h) with no step moving"
               in line and "bazbii:phaseOverride" in line.split("Fix:", 1)[1] for line in lines), lines
    assert any("bazbii:metrics.endpoint is loosened 'http://prometheus.bazbii.internal:9090' -> " in line
               for line in lines), lines
    within["config"]["bazbii:phaseOverride"] = REVIEW_REASON
    assert_allowed(capsys, tmp_path, prod_doc, within)  # within bounds, with a reason

    past = copy.deepcopy(within)
    _traffic_50(past)["criteria"]["minSamples"] = 10
    out = assert_denied_by(capsys, tmp_path, prod_doc, past, {"safety-gate-loosening"})
    [line] = denied_lines(out, "safety-gate-loosening")
    assert "bazbii:plan.infra.steps[5].criteria.minSamples is loosened 100 -> 10 (applied: 100), below the limit 100 " \
           "(policy config minGateSamples)" in line  # a bound holds whatever the reason



def test_the_prod_stack_adopts_reading_its_metrics_over_ssh_in_a_pull_request_that_moves_nothing(
        capsys, tmp_path, prod_doc):
    # Pulumi.prod.yaml reads its metrics through server2 (runners cannot reach them); before it, it did not.
    assert prod_doc["config"]["bazbii:metrics"]["ssh"] == {"server": "server2"}
    direct = copy.deepcopy(prod_doc)
    del direct["config"]["bazbii:metrics"]["ssh"]
    assert_allowed(capsys, tmp_path, direct, prod_doc)  # the same endpoint through an applied server: no reason needed
    elsewhere = copy.deepcopy(prod_doc)
    elsewhere["config"]["bazbii:metrics"]["ssh"] = {"host": "metrics.elsewhere.example"}
    out = assert_denied_by(capsys, tmp_path, direct, elsewhere, {"safety-gate-loosening"})
    [line] = denied_lines(out, "safety-gate-loosening")
    assert "bazbii:metrics.ssh is loosened none -> " in line and "a host the pull request names" in line, line
    # Combined with a step, it is refused whatever the route: split the pull request.
    out = assert_denied_by(capsys, tmp_path, direct, at(prod_doc, phase="traffic-50"), {"plan-judged-by-applied"},
                           "--base-age", "2d")
    assert any("bazbii:metrics.ssh" in line for line in denied_lines(out, "plan-judged-by-applied"))

def test_a_rollback_trigger_loosened_with_no_pointer_move_needs_a_reason(capsys, tmp_path, prod_doc):
    applied = copy.deepcopy(prod_doc)
    applied["config"]["bazbii:rollback"]["maxErrorRate"] = 0.005
    loosened = copy.deepcopy(prod_doc)  # 0.005 -> 0.01: within maxRollbackErrorRate
    out = assert_denied_by(capsys, tmp_path, applied, loosened, {"safety-gate-loosening"})
    assert "bazbii:rollback.maxErrorRate is loosened 0.005 -> 0.01 (applied: 0.005) with no step moving" in out
    loosened["config"]["bazbii:phaseOverride"] = REVIEW_REASON
    assert_allowed(capsys, tmp_path, applied, loosened)


# --------------------------------------------------------------------------- 2. the pooler moves alone
def _pooler_step(doc, also=None):
    """A new infra step after traffic-10 that moves PgBouncer from server1 to server3 (``also``: more changes)."""
    out = copy.deepcopy(doc)
    steps = out["config"]["bazbii:plan"]["infra"]["steps"]
    changes = {"database": {"pooler": {"server": "server3"}},
               "servers": {"server1": {"roles": ["api", "gateway"]}, "server3": {"roles": ["database", "pooler"]}}}
    touches = ["database.pooler", "servers.server1.roles", "servers.server3.roles"]
    if also:
        changes["traffic"] = also
        touches.append("traffic.pools")
    steps.insert(next(i for i, s in enumerate(steps) if s["name"] == "traffic-10") + 1, {
        "name": "pooler-on-server3", "summary": "Move PgBouncer to server3.", "gate": "None.",
        "rollback": "Set traffic-10.", "touches": touches, "changes": changes,
    })
    return out


def test_the_pooler_moves_in_a_step_of_its_own(capsys, tmp_path, prod_doc):
    planned = _pooler_step(prod_doc)
    out = assert_allowed(capsys, tmp_path, planned, at(planned, phase="pooler-on-server3"))
    assert "stringData.DATABASE_URL.host: 203.0.113.11 -> 203.0.113.13" in out


def test_a_pooler_step_that_also_moves_traffic_is_denied(capsys, tmp_path, prod_doc):
    planned = _pooler_step(prod_doc, also={"pools": {"server1": {"weight": 50}, "server2": {"weight": 50}}})
    out = assert_denied_by(capsys, tmp_path, planned, at(planned, phase="pooler-on-server3"), {"db-pooler-moves-alone"})
    [line] = denied_lines(out, "db-pooler-moves-alone")
    assert "the pooler moves, bazbii:database.pooler.server server1 -> server3 (applied: server1), in an update that " \
           "also changes bazbii:traffic.pools.server1.weight" in line
    assert "keep bazbii:plan.infra.steps[5].changes.database.pooler.server at server1" in line


# --------------------------------------------------------------------------- 3. the time-only parts of a gate
def test_a_soak_not_over_is_denied_and_one_that_is_over_passes(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, phase="traffic-50")
    code, out, _ = preview_pr(capsys, tmp_path, prod_doc, proposed, "--applied", f"infra=traffic-10@{_ago(hours=3)}")
    assert code == 1 and "live gate of infra step 'traffic-50' FAILED: its soak is not over " \
                         "(bazbii:plan.infra.steps[5].criteria.soak: 1d, applied)" in out
    assert "FAIL         soak [previous step]: 3h" in out and "DENIED: 1 transition(s) checked, 1 failed" in out
    code, out, _ = preview_pr(capsys, tmp_path, prod_doc, proposed, "--applied", f"infra=traffic-10@{_ago(hours=30)}")
    assert code == 0 and "PASS         soak [previous step]: 1d6h" in out
    # The metric parts are left to --metrics, and the final line says so: no plain ALLOWED.
    assert "NOT EVALUATED error-ratio, p95-latency: the metric parts need --metrics" in out
    assert f"\n{NOT_EVALUATED}: 1 transition(s) checked, 0 failed; not evaluated: infra step 'traffic-50': " \
           "error-ratio, p95-latency" in out and "ALLOWED" not in out


def test_require_live_gate_makes_an_unevaluated_gate_fail_the_run(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, phase="traffic-50")
    code, out, _ = preview_pr(capsys, tmp_path, prod_doc, proposed, "--base-age", "2d", "--require-live-gate")
    assert code == 3 and NOT_EVALUATED in out
    code, out, _ = preview_pr(capsys, tmp_path, prod_doc, proposed, "--base-age", "2d", "--json")
    data = json.loads(out)
    assert code == 0 and data["outcome"] == "live-gate-not-evaluated"
    [gate] = data["liveGates"]
    assert gate["notEvaluated"] == ["error-ratio", "p95-latency"] and gate["soak"]["status"] == "pass"
    # Without apply times the soak itself is not evaluated either (not denied, not passed).
    code, out, _ = preview_pr(capsys, tmp_path, prod_doc, proposed)
    assert code == 0 and "infra step 'traffic-50': soak, error-ratio, p95-latency" in out


def test_a_time_only_gate_judged_in_full_reads_allowed(capsys, tmp_path, prod_doc):
    applied = at(prod_doc, phase="old-db-retired", dnsPhase="switched")
    # dns ttl-restored measures its soak only (signals: []): with the apply time, it is judged in full.
    code, out, _ = preview_pr(capsys, tmp_path, applied, at(applied, dnsPhase="ttl-restored"), "--base-age", "2d",
                              "--require-live-gate")
    assert code == 0 and "ALLOWED: 1 transition(s) checked, 0 failed" in out, out
    code, out, _ = preview_pr(capsys, tmp_path, applied, at(applied, dnsPhase="ttl-restored"), "--base-age", "5h")
    assert code == 1 and "FAIL         soak [previous step]: 5h" in out


def test_the_dns_ttl_wait_is_judged_from_the_applied_times(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, dnsPhase="switched")
    out = assert_denied_by(capsys, tmp_path, prod_doc, proposed, {"dns-lower-ttl-before-switch"},
                           "--applied", f"dns=ttl-lowered@{_ago(minutes=30)}")
    # --applied is to the minute (the seconds dropped), and the run takes time: 30 or 31 min have passed
    assert re.search(r"only 3[01] min after its TTL was lowered to 300 s", out), out
    assert_allowed(capsys, tmp_path, prod_doc, proposed, "--applied", f"dns=ttl-lowered@{_ago(hours=2)}")


# --------------------------------------------------------------------------- 4. images pinned
def _worker_release(doc, image):
    """A new release step after canary-10 that rolls the workers to ``image`` (planned, so applied first)."""
    out = copy.deepcopy(doc)
    steps = out["config"]["bazbii:plan"]["release"]["steps"]
    steps.insert(next(i for i, s in enumerate(steps) if s["name"] == "canary-10") + 1, {
        "name": "worker-2.0.1", "summary": "Workers at 2.0.1.", "gate": "None.", "rollback": "Set canary-10.",
        "changes": {"app": {"worker": {"image": image}}},
    })
    return out, at(out, releasePhase="worker-2.0.1")


@pytest.mark.parametrize("tag", ["main", "stable", "latest", "edge", "dev", "2.0"])
def test_a_moving_image_tag_is_denied(capsys, tmp_path, prod_doc, tag):
    image = f"registry.example.com/bazbii/worker:{tag}"
    out = assert_denied_by(capsys, tmp_path, *_worker_release(prod_doc, image),
                           {"k8s-image-pinned", "k8s-image-pinned-in-state"})
    [line] = denied_lines(out, "k8s-image-pinned-in-state")
    assert f"bazbii:app.worker.image (applied: 'registry.example.com/bazbii/worker:2.0.0'): image '{image}' has tag " \
           f"'{tag}', which is not a version" in line
    assert "Fix: set bazbii:plan.release.steps[3].changes.app.worker.image to an image pinned by a version tag" in line


@pytest.mark.parametrize("image", ["registry.example.com/bazbii/worker:2.0.1",
                                   f"registry.example.com/bazbii/worker@{DIGEST}",
                                   f"registry.example.com/bazbii/worker:stable@{DIGEST}"])
def test_a_version_tag_or_a_digest_passes(capsys, tmp_path, prod_doc, image):
    assert_allowed(capsys, tmp_path, *_worker_release(prod_doc, image))


# --------------------------------------------------------------------------- 5. workers keep running
def test_a_release_step_that_stops_the_workers_is_denied(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, releasePhase="canary-50")  # schema at 0002-migrate: the backfill's jobs need workers
    step(proposed, "release", "canary-50")["changes"]["app"]["worker"] = {"replicas": 0}
    out = assert_denied_by(capsys, tmp_path, prod_doc, proposed, {"k8s-workers-keep-running"}, "--base-age", "2d")
    [line] = denied_lines(out, "k8s-workers-keep-running")
    assert "bazbii:app.worker.replicas is set 2 -> 0 (applied: 2), below the 1 the job queue needs" in line
    assert "also changes bazbii:app.canary.weight" in line
    assert "keep bazbii:plan.release.steps[3].changes.app.worker.replicas at 2" in line
    # Fewer workers, but enough for the job queue: allowed.
    step(proposed, "release", "canary-50")["changes"]["app"]["worker"] = {"replicas": 1}
    assert_allowed(capsys, tmp_path, prod_doc, proposed, "--base-age", "2d")


def test_a_step_that_exists_to_retire_the_workers_may_stop_them(capsys, tmp_path, prod_doc):
    planned = copy.deepcopy(prod_doc)
    steps = planned["config"]["bazbii:plan"]["release"]["steps"]
    steps.insert(next(i for i, s in enumerate(steps) if s["name"] == "canary-10") + 1, {
        "name": "workers-retired", "summary": "Retire the workers.", "gate": "None.", "rollback": "Set canary-10.",
        "touches": ["app.worker.replicas"], "changes": {"app": {"worker": {"replicas": 0}}},
    })
    assert_allowed(capsys, tmp_path, planned, at(planned, releasePhase="workers-retired"))


def test_keeping_the_workers_quiet_in_the_plan_is_refused_naming_the_key(capsys, tmp_path, prod_doc):
    proposed = at(prod_doc, releasePhase="canary-50")
    step(proposed, "release", "canary-50")["changes"]["app"]["worker"] = {"quiet": True}
    code, out, err = preview_pr(capsys, tmp_path, prod_doc, proposed)
    assert code == 2 and out == ""
    assert err.startswith("bazbii:plan.release.steps[3].changes.app.worker.quiet: the migration runner quiets the "
                          "workers itself while it runs a stage and brings them back afterwards"), err
