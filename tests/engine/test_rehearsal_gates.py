"""``./rehearse``: the traffic shift applied by ``pulumi up`` under load, each step let through by its
own live gate, rolled back by ``pulumi up`` when its rollback triggers fail (:mod:`rehearsal.engine_walk`).

A stack named ``rehearsal`` (the only one that may set ``bazbii:timeScale``) on the twin, with:

* the edge (:mod:`twin.edge`): HAProxy steering the load by the load balancer's weights that the program
  declared to the Cloudflare emulator, to the gateways behind their live tunnels;
* a Prometheus configured from the stack's own ``metricsScrapeConfigs`` and ``metricsTargets`` outputs,
  scraping the gateways' HAProxy exporters and the API pods;
* ``bazbii:metrics.endpoint`` pointing at it, so the transition check measures each step's criteria with
  the production PromQL, and nothing is overridden.

Soaks and windows are divided by the time scale (a 24 h soak takes 48 s here).
"""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

from rehearsal.engine_report import load_figures, table, targets, timeline_png, write_json
from rehearsal.engine_walk import EngineRehearsal, _soak_and_judge, switchover_line, walk, walk_sequence

pytestmark = pytest.mark.engine

TIME_SCALE = 1800  # a day is 48 s
RATE = 50  # requests per second through the edge
POOL_REQUESTS = 'sum(increase(haproxy_backend_http_responses_total{{pool=~"(.+,)?{pool}(,.+)?"}}[15s]))'


@pytest.fixture(scope="module")
def rehearsal(engine, twin_with_cloud, tmp_path_factory):
    started = EngineRehearsal.start(engine, TIME_SCALE, RATE, tmp_path_factory.mktemp("rehearsal"),
                                    say=lambda text: None, twin=twin_with_cloud, baseline=10)  # not judged here
    yield started
    started.stop(stop_twin=False)


def wait_for(rehearsal, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s\n{diagnostics(rehearsal)}")
        time.sleep(1)


def diagnostics(rehearsal: EngineRehearsal) -> str:
    """What a failure needs: the scrape targets' health, the load's last requests, the edge's last changes."""
    files = {"load.csv": rehearsal.load_csv, "load.log": rehearsal.out / "load.log",
             "edge.log": rehearsal.twin.workdir / "edge" / "edge.log",
             "prometheus.log": rehearsal.prometheus.directory / "prometheus.log"}
    tails = {name: path.read_text().splitlines()[-8:] if path.exists() else [] for name, path in files.items()}
    return "\n".join(["targets:", *rehearsal.prometheus.targets(),
                      *(line for name, lines in tails.items() for line in (f"{name}:", *lines))])


def requests_to(rehearsal: EngineRehearsal, pool: str) -> float:
    result = rehearsal.prometheus.query(POOL_REQUESTS.format(pool=pool))
    return float(result[0]["value"][1]) if result else 0.0


def applied(rehearsal: EngineRehearsal, record) -> None:
    assert record.applied, "\n".join(r for a in record.attempts for r in a.reasons) + "\n" + diagnostics(rehearsal)


def test_the_steps_before_the_shift_and_the_load_through_the_edge(rehearsal):
    assert walk(rehearsal, walk_sequence("gateway-on-server2"), {}), rehearsal.records
    assert rehearsal.load is not None  # started once both gateways serve behind their tunnels
    # The live gate of traffic-10 measures server1's pool: its gateway's exporter and the API pods.
    wait_for(rehearsal, lambda: requests_to(rehearsal, "server1") > 100, 120, "server1's gateway served the load")
    assert requests_to(rehearsal, "server2") == 0  # weight 0: the edge sends it nothing


def test_traffic_10_is_let_through_by_its_live_gate(rehearsal):
    record = rehearsal.apply("traffic-10", "gateway-on-server2", patience=0)
    applied(rehearsal, record)
    assert len(record.attempts) == 1
    # what the engine's summary says it did: the pools' weights and the check's record, at least, updated
    assert record.attempts[0].changes.get("update", 0) >= 1 and record.attempts[0].changed >= 1, record.attempts
    wait_for(rehearsal, lambda: requests_to(rehearsal, "server2") > 0, 60, "the edge sent server2 its 10 %")


def test_traffic_50_waits_for_its_scaled_soak(rehearsal):
    early = rehearsal.apply("traffic-50", "traffic-10", patience=0)
    assert not early.applied
    assert any("soak" in reason for reason in early.attempts[0].reasons), early.attempts
    record = rehearsal.apply("traffic-50", "traffic-10", patience=24 * 3600 / TIME_SCALE + 60)
    applied(rehearsal, record)
    rehearsal.records.append(record)


def test_failing_rollback_triggers_roll_the_step_back_by_pulumi_up_and_it_is_applied_again(rehearsal):
    record = rehearsal.records[-1]
    assert record.step == "traffic-50"
    assert _soak_and_judge(rehearsal, record, "traffic-50", "traffic-10", "gateway-5xx")
    assert record.triggers == "fail" and record.rolled_back, record
    assert any("error" in line for line in record.trigger_signals), record.trigger_signals
    retry = rehearsal.records[-1]
    assert retry is not record and retry.step == "traffic-50" and retry.applied and retry.triggers == "pass"
    assert rehearsal.operator.outputs()["steps"]["infra"] == "traffic-50"


def test_a_gateway_failing_requests_stops_traffic_100_until_the_errors_leave_the_window(rehearsal):
    server2 = rehearsal.twin.servers["server2"]
    fault = server2.ssh("sudo -n docker twin-fault bazbii-gateway 0.5")
    assert fault.returncode == 0, fault
    try:
        time.sleep(3600 / TIME_SCALE + 15)  # the soak of traffic-100, errors filling the window
        refused = rehearsal.apply("traffic-100", "traffic-50", patience=0)
        assert not refused.applied
        reasons = refused.attempts[0].reasons
        assert any("error" in r.lower() and "FAIL" in r for r in reasons), reasons
    finally:
        server2.ssh("sudo -n docker twin-fault bazbii-gateway 0")
    time.sleep(20)  # the errors leave the (floored) 15 s window
    record = rehearsal.apply("traffic-100", "traffic-50", patience=30)
    applied(rehearsal, record)
    rehearsal.records.append(record)


@pytest.mark.timeout(900)  # seven updates and their scaled soaks, a refused switchover and its rollback
def test_the_dns_track_is_walked_first_then_server1_leaves_the_edge_and_postgresql_moves_to_server3(rehearsal):
    before = len(rehearsal.records)
    assert rehearsal.applied_steps()["infra"] == "traffic-100"
    passed = walk(rehearsal, walk_sequence("old-db-retired"), {"db-switchover": "replica-lag"})
    walked = rehearsal.records[before:]
    assert passed, walked
    # gateway-off-server1 requires the DNS switched: the walk moves that track first, one step at a time
    assert [(r.track, r.step) for r in walked] == [("dns", "ttl-lowered"), ("dns", "switched"),
                                                  ("infra", "gateway-off-server1"), ("infra", "server1-resized"),
                                                  ("infra", "db-switchover"), ("infra", "db-switchover"),
                                                  ("infra", "old-db-retired")]
    # replica-lag: the switchover's pre-check failed the up before anything paused; pulumi up of
    # server1-resized restored what that update had changed, replay resumed, and the step went through
    caught = walked[4]
    assert caught.fault == "replica-lag" and not caught.applied and caught.rolled_back, caught
    assert any("replay lag" in reason for reason in caught.attempts[0].reasons), caught.attempts[0].reasons
    walked = [r for r in walked if r is not caught]
    assert all(r.triggers == "pass" for r in walked), walked
    # its gate let it through once no request reached server1's gateway; then that gateway was stopped
    assert "bazbii-gateway" not in rehearsal.twin.servers["server1"].ssh(
        "sudo -n docker inspect -f '{{.State.Running}}' bazbii-gateway || echo gone").stdout
    gates = {r.step: next(a for a in r.attempts if a.applied).gate for r in walked}
    assert gates["gateway-off-server1"][0].startswith("live gate of infra step 'gateway-off-server1' PASSED"), gates
    # the switchover's gate read PostgreSQL's longest transaction on server2 from the exporter the program
    # installed there (metricsTargets), through the check, with its number
    assert gates["db-switchover"][0].startswith("live gate of infra step 'db-switchover' PASSED"), gates
    assert any(line.split()[:2] == ["PASS", "longest-transaction"] and "[server server2]" in line
               for line in gates["db-switchover"]), gates
    # the switchover's report (the stack output) gives its window step by step, on the up that ran it only
    switched = [a.switchover for r in walked for a in r.attempts if a.switchover]
    assert [r.step for r in walked for a in r.attempts if a.switchover] == ["db-switchover"], walked
    timings = switched[0]
    assert {"pause", "fence", "lsn", "catchup", "promote", "reload", "resume"} <= set(timings["steps_ms"]), timings
    assert 0 < timings["window_ms"] < 1000 and timings["window_ms"] >= timings["steps_ms"]["promote"], timings
    assert switchover_line(timings).startswith(f"switchover window {timings['window_ms']:g} ms (")
    steps = rehearsal.applied_steps()
    assert (steps["infra"], steps["dns"]) == ("old-db-retired", "switched")
    assert rehearsal.operator.outputs()["dbPrimary"]["server"] == "server3"


def test_the_report_shows_each_steps_verdicts_load_and_a_timeline(rehearsal):
    out = rehearsal.out
    figures = load_figures(rehearsal.records, rehearsal.load_csv)
    write_json(out / "report.json", rehearsal.records, True, {"timeScale": TIME_SCALE}, figures)
    assert timeline_png(out / "timeline.png", rehearsal.load_csv, rehearsal.records)
    assert (out / "timeline.png").stat().st_size > 10_000
    console = Console(record=True, width=240)
    console.print(table(rehearsal.records, figures))
    text = console.export_text()
    assert "traffic-50 [gateway-5xx]" in text and "fail" in text and "yes" in text
    assert "resources changed" in text and "(update " in text and "p95 / baseline" in text
    # the load's baseline (from the load's start to the first step recorded under it: this module records
    # traffic-50 first) and every step recorded under the load measured, none before it
    assert figures.baseline is not None and figures.baseline.requests >= RATE * 5 and figures.baseline.p95_ms
    under_load = [r.step for r, w in zip(rehearsal.records, figures.steps) if w is not None]
    before = [r.step for r, w in zip(rehearsal.records, figures.steps) if w is None]
    assert before[-1] == "gateway-on-server2" and under_load[0] == "traffic-50", (before, under_load)
    assert under_load[-1] == "old-db-retired", under_load
    # the gateway faults this module injects end at traffic-100: every request of the steps after it was
    # answered, the switchover's included (and the refused one's: replica-lag fails no request)
    later = ("ttl-lowered", "switched", "gateway-off-server1", "server1-resized", "db-switchover", "old-db-retired")
    after = [w for r, w in zip(rehearsal.records, figures.steps) if r.step in later]
    assert len(after) == 7 and all(w is not None and w.requests > 0 and w.failed == 0 for w in after), after
    stall = [t for t in targets(rehearsal.records, figures) if t["target"].startswith("longest write stall")]
    assert len(stall) == 1 and stall[0]["value"] == figures.steps[-2].write_stall_ms > 0, stall
    report = json.loads((out / "report.json").read_text())
    caught, switchover = [step for step in report["steps"] if step["step"] == "db-switchover"]
    assert caught["fault"] == "replica-lag" and caught["rolled_back"] and not caught["applied"]
    assert any("longest-transaction [server server2]" in line for line in switchover["attempts"][-1]["gate"])
