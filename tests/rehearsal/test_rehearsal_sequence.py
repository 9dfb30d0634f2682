"""The rehearsal's reading of the shipped plan (no servers): the apply order it walks, where a fault can
show, and ``./rehearse``'s refusals of bad arguments (exit 2, one line, nothing started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal.faults import BadInjection, parse_injections
from rehearsal.sequence import load_config, plan_sequence, step_states

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan():
    config = load_config(ROOT / "Pulumi.prod.yaml")
    sequence = plan_sequence(config, None)
    return config, sequence, step_states(config, sequence)


def test_walk_covers_every_track_of_the_plan_in_an_order_the_requires_allow(plan):
    config, sequence, _ = plan
    order = [(track, step) for track, step, _, _ in sequence]
    assert {t for t, _ in order} == set(config.plan.tracks)
    assert len(order) == sum(len(t.steps) - 1 for t in config.plan.tracks.values())
    position = {step: i for i, (_, step) in enumerate(order)}
    for track, step in order:
        for other, needed in config.plan.tracks[track].steps[config.plan.tracks[track].index(step)].requires.items():
            first = config.plan.tracks[other].steps[0].name
            assert needed == first or position[needed] < position[step], (step, needed)


def test_until_stops_the_walk_at_that_step_and_an_unknown_step_is_named(plan):
    config, _, _ = plan
    assert plan_sequence(config, "traffic-10")[-1][:2] == ("infra", "traffic-10")
    with pytest.raises(ValueError, match="--until 'traffic-7': no such step"):
        plan_sequence(config, "traffic-7")


def test_faults_are_only_accepted_where_they_can_show(plan):
    _, _, states = plan
    assert parse_injections(["gateway-5xx@traffic-50", "canary-errors@canary-50", "replica-lag@db-switchover"],
                            states) == {"traffic-50": "gateway-5xx", "canary-50": "canary-errors",
                                        "db-switchover": "replica-lag"}
    for bad in ("replica-lag@old-db-retired", "canary-errors@api-2.0", "gateway-5xx@gateway-on-server2",
                "gateway-5xx@traffic-10@x"):
        with pytest.raises(BadInjection):
            parse_injections([bad], states)
    with pytest.raises(BadInjection, match="step 'traffic-50' already has fault 'gateway-5xx'"):
        parse_injections(["gateway-5xx@traffic-50", "gateway-5xx@traffic-50"], states)


@pytest.mark.parametrize("args, message", [
    (["--inject", "gateway-5xx@canary-10"], "gateway-5xx cannot show at canary-10; valid steps: traffic-10, traffic-50, traffic-100"),
    (["--inject", "meteor@traffic-10"], "expected FAULT@STEP"),
    (["--until", "traffic-7"], "--until 'traffic-7': no such step"),
    (["--rate", "0"], "--rate must be 1..2000"),
    (["--baseline", "1"], "--baseline must be 3..600"),
    (["--time-scale", "0"], "--time-scale must be 1.."),
])
def test_bad_arguments_exit_2_with_one_line_and_start_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "rehearsal", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert message in text and "Traceback" not in text
    assert len([line for line in text.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists()


def test_the_older_walks_options_are_gone_not_ignored(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rehearsal", "--reconcilers", "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unrecognized arguments: --reconcilers" in done.stderr
