"""The rehearsal's reading of the shipped plan (no servers): walk order, faults, API pod shares."""

from __future__ import annotations

import pytest

from bazbii_plan.flags import flags_document
from rehearsal.faults import BadInjection, Faults, parse_injections
from rehearsal.reconcilers import desired_deployments, gateway_servers
from rehearsal.runner import Options, prepare


@pytest.fixture(scope="module")
def prepared():
    return prepare(Options())


def test_walk_covers_every_track_of_the_plan_in_an_order_the_requires_allow(prepared):
    order = [(track, step) for track, step, _, _ in prepared.sequence]
    assert {t for t, _ in order} == set(prepared.config.plan.tracks)
    assert len(order) == sum(len(t.steps) - 1 for t in prepared.config.plan.tracks.values())
    position = {step: i for i, (_, step) in enumerate(order)}
    for track, step in order:
        for other, needed in prepared.config.plan.tracks[track].steps[
                prepared.config.plan.tracks[track].index(step)].requires.items():
            first = prepared.config.plan.tracks[other].steps[0].name
            assert needed == first or position[needed] < position[step], (step, needed)


def test_faults_are_only_accepted_where_they_can_show(prepared):
    states = prepared.step_states
    assert parse_injections(["gateway-5xx@traffic-50", "canary-errors@canary-50", "replica-lag@db-switchover"],
                            states) == {"traffic-50": "gateway-5xx", "canary-50": "canary-errors",
                                        "db-switchover": "replica-lag"}
    for bad in ("replica-lag@old-db-retired", "canary-errors@api-2.0", "gateway-5xx@gateway-on-server2",
                "gateway-5xx@traffic-10@x"):
        with pytest.raises(BadInjection):
            parse_injections([bad], states)


def test_api_pod_shares_follow_the_release_track(prepared):
    shares = {step: {(d.version, d.faulty): w for d, w in desired_deployments(after, Faults()).items()}
              for step, (_, after) in prepared.step_states.items()}
    assert shares["worker-2.0"] == {("1.9.0", False): 100}
    assert shares["canary-10"] == {("1.9.0", False): 90, ("2.0.0", False): 10}
    assert shares["canary-100"] == {("2.0.0", False): 100}
    assert shares["api-2.0"] == {("2.0.0", False): 100}
    faulty = Faults({"canary-10": "canary-errors"}, armed="canary-errors")
    assert ("2.0.0", True) in {(d.version, d.faulty) for d in desired_deployments(prepared.step_states["canary-10"][1], faulty)}


def test_gateways_follow_the_gateway_role(prepared):
    before, after = prepared.step_states["gateway-on-server2"]
    assert gateway_servers(before) == {"server1"} and gateway_servers(after) == {"server1", "server2"}
    assert gateway_servers(prepared.step_states["gateway-off-server1"][1]) == {"server2"}


def test_api_deployments_carry_the_flags_document_so_a_flags_step_rolls_them(prepared):
    """A flags step changes only the flags document of the Deployments (new processes, same shares)."""
    flag_steps = [step for track, step, _, _ in prepared.sequence if track == "flags"]
    assert flag_steps
    for step in flag_steps:
        before, after = (desired_deployments(s, Faults()) for s in prepared.step_states[step])
        assert {(d.version, d.faulty): w for d, w in before.items()} == \
            {(d.version, d.faulty): w for d, w in after.items()}
        assert {d.flags for d in after} == {flags_document(prepared.step_states[step][1].flags)}
        assert {d.flags for d in before} != {d.flags for d in after}
    other = [step for track, step, _, _ in prepared.sequence if track != "flags"]
    for step in other:
        before, after = prepared.step_states[step]
        assert {d.flags for d in desired_deployments(after, Faults())} == {flags_document(before.flags)}
