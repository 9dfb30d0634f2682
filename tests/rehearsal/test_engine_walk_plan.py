"""What the engine walk derives from the plan before it runs anything (:mod:`rehearsal.engine_walk`)."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from bazbii_plan.timegates import dns_switch_problems

from rich.console import Console

from rehearsal.engine_report import P95_BUCKET_SECONDS, load_figures, table, targets, timeline_png
from rehearsal.engine_walk import (Attempt, StepRecord, _time_cures, injections, console_resizes,
                                   moves, walk_sequence,
                                   prod_config, trigger_criteria)

AFTER_THE_EDGE = [("infra", "server1-resized"), ("infra", "db-switchover"), ("infra", "old-db-retired")]


def test_the_walk_is_the_plans_apply_order_each_step_after_what_it_requires():
    config = prod_config()
    walked = moves(config, walk_sequence(None), {})  # a stack never updated: the MVP is taken over first
    assert walked[0] == ("infra", "mvp") and len(walked) == 27  # the 26 steps of the plan
    assert walked[7:12] == [("dns", "ttl-lowered"), ("dns", "switched"), ("infra", "gateway-off-server1"),
                            *AFTER_THE_EDGE[:2]]
    for track, t in config.plan.tracks.items():  # every track's steps in its own order (infra's first: the MVP)
        assert [step for moved, step in walked if moved == track] == t.names()[0 if track == "infra" else 1:]
    for at, (track, step) in enumerate(walked):  # each after the steps of other tracks it requires
        for other, needed in config.plan.tracks[track].steps[config.plan.tracks[track].index(step)].requires.items():
            assert (other, needed) in walked[:at], (track, step, other, needed)
    assert ("dns", "ttl-lowered") not in moves(config, walk_sequence("traffic-100"), {})
    # From where the stack is: only what is left, and a track already far enough is not moved.
    first = {track: t.names()[0] for track, t in config.plan.tracks.items()}
    assert moves(config, walk_sequence("old-db-retired"), {**first, "infra": "traffic-100", "dns": "switched"}) == [
        ("infra", "gateway-off-server1"), *AFTER_THE_EDGE]


def test_the_walk_goes_to_the_plans_last_step_unless_told_where_to_stop():
    walked = walk_sequence(None)
    assert walked[-1] == ("schema", "0002-contract")
    assert walk_sequence("db-switchover") == walked[: walked.index(("infra", "db-switchover")) + 1]
    with pytest.raises(ValueError, match="--until 'traffic-75': no such step"):
        walk_sequence("traffic-75")


def test_only_a_running_server_is_resized_in_the_console():
    config = prod_config()
    assert console_resizes(config, "server1-resized", "gateway-off-server1") == {
        "server1": {"vcpu": 4, "memoryGb": 8, "diskGb": 200}}
    assert console_resizes(config, "server3-provisioned", "mvp") == {}  # a new machine: declared, not resized
    assert console_resizes(config, "traffic-50", "traffic-10") == {}


@pytest.mark.parametrize("track, step, scope, window", [
    ("infra", "traffic-10", "pool server2", "1d"),  # what traffic-10 moved, for traffic-50's soak (as watch does)
    ("infra", "traffic-100", "pool server2", "30m"),
    ("infra", "gateway-off-server1", "service", "1h"),  # its own gate counts server1's requests: none by design
    ("dns", "switched", "service", "1d"),
])
def test_the_triggers_after_a_step_measure_what_watch_would(track, step, scope, window):
    criteria = trigger_criteria(prod_config().with_steps(**{track: step}), track)
    assert (criteria.scope.describe(), criteria.window) == (scope, window)


def test_only_refusals_that_time_cures_are_retried():
    assert _time_cures("live gate of infra step 'traffic-50': soak [previous step] 20 s (threshold >= 48 s)")
    now = datetime.now(timezone.utc)
    record = {"direct": {"type": "A", "content": "127.0.1.1", "ttl": 300}}
    applied = {"state": {"dns": {"records": record}},
               "dnsTtl": {"direct": {"previousTtl": 3600, "since": (now - timedelta(seconds=1)).isoformat()}}}
    [early] = dns_switch_problems(applied, {"dns": {"records": {"direct": dict(record["direct"], content="127.0.1.2")}}},
                                  now=now, previous_source="stack-output", is_rollback=False, time_scale=1800)
    assert _time_cures(early.what), early.what  # the old TTL (2 s at this scale) is not over yet
    assert not _time_cures("plan-step-scope: infra step 'traffic-50' also changes bazbii:database.pooler")


# --------------------------------------------------------------------------- the report's load figures
def _record(step, started, seconds=2.0, fault=None):
    at = datetime.fromtimestamp(started + seconds, timezone.utc).isoformat(timespec="seconds")
    return StepRecord(step, attempts=[Attempt(at=at, applied=True, reasons=[], seconds=seconds)], fault=fault)


def _load(path, t0, seconds, latency_ms, failed_at=()):
    """One request every 0.1 s from ``t0``; ``latency_ms(t)`` each; status 502 at the seconds in ``failed_at``."""
    rows = ["kind,scheduled,start,end,status,pool,gateway,version,error"]
    for i in range(int(seconds * 10)):
        t = t0 + i / 10
        status = 502 if int(t - t0) in failed_at else 200
        rows.append(f"lb_read,{t},{t},{t + latency_ms(t - t0) / 1000},{status},,,1.9.0,")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_each_step_is_held_to_the_baseline_the_load_saw_before_it(tmp_path):
    t0 = 1_800_000_000.0
    records = [_record("gateway-on-server2", t0 - 30), _record("traffic-10", t0 + 10), _record("traffic-50", t0 + 20)]
    slow_after_20 = _load(tmp_path / "load.csv", t0, 30, lambda t: 10.0 if t < 20 else 40.0, failed_at=(25,))
    figures = load_figures(records, slow_after_20)
    assert figures.steps[0] is None  # applied before the load started
    assert (figures.baseline.requests, figures.baseline.p95_ms) == (100, 10.0)  # t0 .. traffic-10's up
    assert (figures.steps[1].requests, figures.steps[1].p95_ms) == (100, 10.0)
    assert (figures.steps[2].requests, figures.steps[2].failed, figures.steps[2].p95_ms) == (100, 10, 40.0)
    assert targets(records, figures) == [
        {"target": "0 failed requests", "value": 10, "met": False},
        {"target": "p95 of each step <= 1.5x baseline", "value": "traffic-50 (4.0x)", "met": False}]
    # replica-lag must fail no request: the target stays; the step it was armed at is not held to the p95
    records[2].fault = "replica-lag"
    assert targets(records, figures) == [{"target": "0 failed requests", "value": 10, "met": False},
                                         {"target": "p95 of each step <= 1.5x baseline", "value": "all", "met": True}]
    # a step a fault that fails requests was injected into is not held to either target
    records[2].fault = "gateway-5xx"
    assert targets(records, figures) == [{"target": "p95 of each step <= 1.5x baseline", "value": "all", "met": True}]


def test_the_switchover_steps_write_stall_is_a_target_and_the_table_shows_each_gates_numbers(tmp_path):
    t0 = 1_800_000_000.0
    records = [_record("server1-resized", t0 + 5), _record("db-switchover", t0 + 15)]
    records[1].attempts[0].gate = ["live gate of infra step 'db-switchover' PASSED",
                                   "  PASS         longest-transaction [server server2]: 0.4 s (threshold <= 5 s)"]
    load = tmp_path / "load.csv"
    rows = ["kind,scheduled,start,end,status,pool,gateway,version,error"]
    for i in range(300):  # a write every 0.1 s; the one at t0+20 waits 180 ms (the switchover's pause)
        t = t0 + i / 10
        rows.append(f"api_write,{t},{t},{t + (0.18 if i == 200 else 0.005)},200,,,1.9.0,")
    load.write_text("\n".join(rows) + "\n")
    figures = load_figures(records, load)
    assert targets(records, figures)[-1] == {"target": "longest write stall at the switchover <= 100 ms",
                                             "value": 180.0, "met": False}
    console = Console(record=True, width=400)
    console.print(table(records, figures))
    text = console.export_text()
    assert "longest-transaction [server server2]: 0.4 s" in text and "passed (no live gate)" in text


def test_the_picture_shows_the_p95_against_the_target_line(tmp_path, monkeypatch):
    import matplotlib.figure

    t0 = 1_800_000_000.0
    records = [_record("traffic-10", t0 + 10), _record("traffic-50", t0 + 20)]
    load = _load(tmp_path / "load.csv", t0, 30, lambda t: 10.0 if t < 20 else 40.0)
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda figure, path, **kw: saved.append(figure))
    assert timeline_png(tmp_path / "timeline.png", load, records, baseline_p95_ms=10.0)
    rate, latency = saved[0].axes
    [p95, target] = latency.get_lines()[:2]
    assert list(p95.get_ydata()) == [10.0, 10.0, 40.0]  # one point per P95_BUCKET_SECONDS, as the steps' p95
    assert list(p95.get_xdata()) == [P95_BUCKET_SECONDS / 2 + i * P95_BUCKET_SECONDS for i in range(3)]
    assert set(target.get_ydata()) == {15.0} and "1.5x" in target.get_label()


def test_which_faults_the_engine_walk_takes_and_where(monkeypatch):
    assert injections(["replica-lag@db-switchover", "gateway-5xx@traffic-10", "canary-errors@canary-10"], None) == {
        "db-switchover": "replica-lag", "traffic-10": "gateway-5xx", "canary-10": "canary-errors"}
    with pytest.raises(ValueError, match=r"replica-lag cannot show at traffic-50; valid steps: db-switchover$"):
        injections(["replica-lag@traffic-50"], None)
    with pytest.raises(ValueError, match="valid steps: none in this walk"):
        injections(["replica-lag@traffic-50"], "server1-resized")
    with pytest.raises(ValueError, match="canary-errors cannot show at api-2.0; valid steps: canary-10, canary-50, "
                                         "canary-100"):
        injections(["canary-errors@api-2.0"], None)
    with pytest.raises(ValueError, match="gateway-5xx cannot show at gateway-on-server2; valid steps: traffic-10, "
                                         "traffic-50, traffic-100"):
        injections(["gateway-5xx@gateway-on-server2"], None)
    with pytest.raises(ValueError, match="expected FAULT@STEP"):
        injections(["gateway-5xx"], None)
    # A fault needs the load, which starts once both gateways serve.
    monkeypatch.setattr("rehearsal.engine_walk.EDGE_FROM", "traffic-50")
    with pytest.raises(ValueError, match="gateway-5xx@traffic-10: the load starts after traffic-50; under it "
                                         "gateway-5xx can show at traffic-100"):
        injections(["gateway-5xx@traffic-10"], None)


def test_the_switchover_report_output_gives_its_window_step_by_step_and_a_bad_one_is_named_not_raised():
    from bazbii_db.replication.switchover import SwitchoverReport
    from rehearsal.engine_walk import switchover_line, switchover_timings

    report = SwitchoverReport(completed=True, window_ms=41.26,
                              steps_ms={"retire": 4.31, "transactions": 1.8, "pause": 0.41, "fence": 2.06,
                                        "promote": 30.04, "reload": 3.3, "resume": 0.2})
    timings = switchover_timings(json.dumps(report.to_dict(), sort_keys=True))  # as the CLI prints it
    assert timings == {"window_ms": 41.3, "steps_ms": {"pause": 0.4, "fence": 2.1, "promote": 30.0, "reload": 3.3,
                                                       "resume": 0.2, "retire": 4.3, "transactions": 1.8}}
    assert list(timings["steps_ms"]) == ["pause", "fence", "promote", "reload", "resume", "retire", "transactions"]
    assert switchover_line(timings) == ("switchover window 41.3 ms (pause 0.4, fence 2.1, promote 30, reload 3.3, "
                                        "resume 0.2, retire 4.3, transactions 1.8)")
    bad = switchover_timings("switchover COMPLETED: server2 -> server3")
    assert bad == {"unreadable": "switchover COMPLETED: server2 -> server3"}
    assert switchover_line(bad).startswith("switchover report unreadable: switchover COMPLETED")
