"""Step moves between updates, the apply-order walk and the applied record."""

import pytest

from bazbii_plan.errors import ConfigError
from bazbii_plan.record import next_record
from bazbii_plan.transitions import transition_problems
from bazbii_plan.walk import record_by_walking, walk

NAMES = {"infra": ["mvp", "a", "b", "c"], "dns": ["baseline", "low", "switched"]}


def test_one_step_forward_and_one_step_back_are_allowed():
    assert transition_problems(NAMES, {"infra": "a", "dns": "low"}, {"infra": "b", "dns": "low"}) == []
    assert transition_problems(NAMES, {"infra": "b", "dns": "low"}, {"infra": "a", "dns": "low"}) == []
    assert transition_problems(NAMES, {"infra": "b", "dns": "low"}, {"infra": "b", "dns": "low"}) == []


def test_skipping_a_step_names_the_skipped_step():
    (problem,) = transition_problems(NAMES, {"infra": "mvp", "dns": "low"}, {"infra": "b", "dns": "low"})
    assert "skipping ['a']" in problem and "apply 'a' first" in problem


def test_two_tracks_in_one_update_are_denied():
    (problem,) = transition_problems(NAMES, {"infra": "a", "dns": "low"}, {"infra": "b", "dns": "switched"})
    assert "more than one track moves" in problem


def test_going_back_two_steps_is_denied():
    (problem,) = transition_problems(NAMES, {"infra": "c", "dns": "low"}, {"infra": "a", "dns": "low"})
    assert "roll back one step at a time, to 'b' first" in problem


def test_unknown_previous_fails_closed_unless_override():
    assert transition_problems(NAMES, None, {"infra": "mvp", "dns": "baseline"}) == []
    (problem,) = transition_problems(NAMES, None, {"infra": "a", "dns": "baseline"})
    assert "only the first step of each track is allowed" in problem
    assert transition_problems(NAMES, None, {"infra": "a", "dns": "baseline"}, override="adopting the running stack") == []


def test_applied_step_removed_from_plan_is_reported():
    (problem,) = transition_problems(NAMES, {"infra": "gone", "dns": "low"}, {"infra": "a", "dns": "low"})
    assert "no longer in the plan" in problem


def test_walk_moves_one_track_one_step_at_a_time_and_honours_requires(prod):
    sequence = walk(prod)
    names = {t: tr.names() for t, tr in prod.plan.tracks.items()}
    for before, after in zip(sequence, sequence[1:]):
        assert transition_problems(names, before, after) == []
    position = {tuple(sorted(s.items())): i for i, s in enumerate(sequence)}
    switched = next(i for i, s in enumerate(sequence) if s["dns"] == "switched")
    gateway_off = next(i for i, s in enumerate(sequence) if s["infra"] == "gateway-off-server1")
    assert switched < gateway_off  # gateway-off-server1 requires dns switched
    assert sequence[-1] == {t: tr.steps[-1].name for t, tr in prod.plan.tracks.items()}
    assert len(position) == len(sequence)


def test_walk_reports_a_requires_cycle(prod):
    plan = prod.plan.model_copy(deep=True)
    broken = type(prod)(plan, prod.base, prod.current)
    infra = plan.tracks["infra"]
    infra.steps[infra.index("server3-provisioned")].requires["dns"] = "switched"   # dns switched itself needs infra gateway-on-server2
    with pytest.raises(ConfigError, match="wait on each other"):
        walk(broken)


def test_record_keeps_since_until_the_step_changes_and_tracks_ttl_history():
    state = {"dns": {"records": {"direct": {"ttl": 3600}}}}
    first = next_record({"dns": "baseline"}, state, None, "2026-01-01T00:00:00+00:00")
    lowered = next_record({"dns": "low"}, {"dns": {"records": {"direct": {"ttl": 300}}}}, first, "2026-01-02T00:00:00+00:00")
    again = next_record({"dns": "low"}, {"dns": {"records": {"direct": {"ttl": 300}}}}, lowered, "2026-01-03T00:00:00+00:00")
    assert again["since"]["dns"] == "2026-01-02T00:00:00+00:00"
    assert again["dnsTtl"]["direct"] == {"ttl": 300, "since": "2026-01-02T00:00:00+00:00", "previousTtl": 3600}


def test_record_by_walking_knows_the_ttl_before_lowering(prod):
    record = record_by_walking(prod, "2026-11-20T10:00:00+00:00")
    assert record["steps"] == prod.current
    assert record["dnsTtl"]["direct"] == {"ttl": 300, "since": "2026-11-20T10:00:00+00:00", "previousTtl": 3600}


# --------------------------------------------------------------------------- applied history and times
def test_target_record_has_no_times_and_lists_the_applied_steps_with_digests(prod):
    from bazbii_plan.record import plan_digests, target_record

    from bazbii_plan.judging import judged_by

    target = target_record(prod.current, prod.state().to_config(), plan_digests(prod.plan),
                           judged_by(prod.plan, prod.metrics))
    assert set(target) == {"version", "steps", "state", "history", "judgedBy"}
    assert [e["step"] for e in target["history"]["dns"]] == ["baseline", "ttl-lowered"]
    assert all(set(e) == {"step", "digest", "gateDigest"} for entries in target["history"].values() for e in entries)
    # What judges every step, applied or not, travels with the record (the next update is judged by it).
    assert target["judgedBy"]["criteria"]["infra"]["traffic-50"] == {"soak": "24h", "scope": {"kind": "pool",
                                                                                              "name": "server2"}}
    assert target["judgedBy"]["scopes"]["infra"]["traffic-50"] == [["traffic", "pools"]]
    assert target["judgedBy"]["metrics"]["endpoint"] == "http://prometheus.bazbii.internal:9090"


def test_step_digest_covers_what_a_step_does_not_its_texts(prod):
    from bazbii_plan.record import step_digest

    dns = prod.plan.tracks["dns"]
    step = dns.steps[dns.index("ttl-lowered")]
    assert step_digest(step) == step_digest(step.model_copy(update={"summary": "reworded", "gate": "reworded"}))
    assert step_digest(step) != step_digest(step.model_copy(update={"changes": {"dns": {"records": {"direct": {"ttl": 120}}}}}))
    assert step_digest(step) != step_digest(step.model_copy(update={"reversible": False}))


def test_gate_digest_covers_what_judges_a_step_and_the_definition_digest_is_unchanged(prod):
    from bazbii_plan.record import gate_digest, step_digest

    infra = prod.plan.tracks["infra"]
    step = infra.steps[infra.index("traffic-50")]
    # Records exported before gate digests existed hold these definition digests: they must not change.
    assert step_digest(step) == "4e486488848f1bee"
    assert step_digest(prod.plan.tracks["dns"].steps[1]) == "7e81b8470ecb4f8b"
    looser = step.model_copy(update={"criteria": step.criteria.model_copy(update={"soak": "0s"})})
    wider = step.model_copy(update={"touches": ["traffic"]})
    assert step_digest(looser) == step_digest(wider) == step_digest(step)
    assert len({gate_digest(step), gate_digest(looser), gate_digest(wider)}) == 3
    # A default written out is the same gate as the default left unsaid.
    explicit = step.model_copy(update={"criteria": step.criteria.model_copy(update={"min_samples": 100})})
    assert gate_digest(explicit) == gate_digest(step)


def test_history_problems_compare_gate_digests_only_where_the_record_has_them():
    from bazbii_plan.transitions import history_problems

    plan = {"infra": [["mvp", "a", "g1"], ["traffic-10", "b", "G2"]]}
    (regated,) = history_problems(plan, {"infra": [["mvp", "a", "g1"], ["traffic-10", "b", "g2"]]})
    assert regated.startswith("what judges applied step 'traffic-10' of track 'infra' "
                              "(bazbii:plan.infra.steps[1].criteria, bazbii:plan.infra.steps[1].touches)")
    assert "gate digest g2 -> G2" in regated
    assert history_problems(plan, {"infra": [["mvp", "a"], ["traffic-10", "b"]]}) == []  # exported before
    assert history_problems(plan, {"infra": [["mvp", "a", "g1"], ["traffic-10", "b", "g2"]]},
                            override="gate of traffic-10 corrected, see incident 7") == []


def test_record_by_walking_uses_the_given_time_of_each_step(prod):
    lowered_at, base_at = "2026-11-20T10:00:00+00:00", "2026-11-25T10:00:00+00:00"
    record = record_by_walking(prod, base_at, {("dns", "ttl-lowered"): lowered_at})
    assert record["dnsTtl"]["direct"] == {"ttl": 300, "since": lowered_at, "previousTtl": 3600}
    assert record["since"]["dns"] == lowered_at and record["since"]["infra"] == base_at
    dns = {e["step"]: e["appliedAt"] for e in record["history"]["dns"]}
    assert dns == {"baseline": base_at, "ttl-lowered": lowered_at}


def test_history_problems_name_the_edited_removed_or_moved_step():
    from bazbii_plan.transitions import history_problems

    applied = {"dns": [["baseline", "a"], ["ttl-lowered", "b"]]}
    assert history_problems({"dns": [["baseline", "a"], ["ttl-lowered", "b"], ["switched", "c"]]}, applied) == []
    (edited,) = history_problems({"dns": [["baseline", "a"], ["ttl-lowered", "B"]]}, applied)
    assert "applied step 'ttl-lowered' of track 'dns' was edited after it was applied (definition digest b -> B)" == edited
    (removed,) = history_problems({"dns": [["baseline", "a"]]}, applied)
    assert "applied step 'ttl-lowered' of track 'dns' was removed from the plan" == removed
    moved = history_problems({"dns": [["baseline", "a"], ["new", "n"], ["ttl-lowered", "b"]]}, applied)
    assert moved == ["applied step 'ttl-lowered' of track 'dns' moved from position 2 to 3 "
                     "(steps were inserted, removed or reordered before it)"]
    assert history_problems({"dns": [["baseline", "a"]]}, applied, override="history rewritten by hand") == []
    assert history_problems({"dns": []}, None) == []  # a record from before digests: nothing to compare
