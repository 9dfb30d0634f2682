"""The rules are pure functions: properties of the ladders and helpers, without the program."""

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.rules import kubernetes, traffic
from policies.rules.common import Transition, cfg_ladder, image_tag, next_rung, parse_version

NAMES = {"infra": ["a", "b", "c"], "release": ["r1", "r2", "r3"]}


def _transition(before_pools, after_pools, steps_after="b", canary=(None, None)):
    def record(step, pools, can):
        app = {"canary": can} if can else {}
        return {"steps": {"infra": step, "release": "r1"}, "state": {"traffic": {"pools": pools}, "app": app}}
    return Transition(NAMES, record(steps_after, after_pools, canary[1]), record("a", before_pools, canary[0]),
                      "plan-walk", None, None)


ladders = st.sets(st.integers(1, 99), max_size=6).map(lambda s: sorted(s | {0, 100}))


@settings(max_examples=60, deadline=None)
@given(ladders)
def test_climbing_at_full_speed_visits_every_rung(ladder):
    def pools(w):
        return {"p": {"server": "s", "weight": w}, "q": {"server": "t", "weight": 100 - w}}

    weight, steps = 0, 0
    while weight < 100:
        rung = next_rung(ladder, weight)
        assert not traffic.weight_ladder(_transition(pools(weight), pools(rung)), ladder)
        if rung < 100:
            assert traffic.weight_ladder(_transition(pools(weight), pools(rung + 1)), ladder)
        weight, steps = rung, steps + 1
    assert steps == len(ladder) - 1


@settings(max_examples=60, deadline=None)
@given(ladders, st.integers(0, 100), st.integers(0, 100))
def test_decreases_are_always_allowed_and_rises_never_pass_a_rung(ladder, old, new):
    found = traffic.weight_ladder(_transition({"p": {"weight": old}}, {"p": {"weight": new}}), ladder)
    allowed = new <= old or new <= next_rung(ladder, old)
    assert (not found) == allowed


@given(ladders, st.integers(0, 100))
def test_canary_image_change_restarts_at_the_first_rung(ladder, weight):
    old = {"image": "r/api:2.0.0", "weight": 100}
    new = {"image": "r/api:2.0.1", "weight": weight}
    t = _transition({"p": {"weight": 100}}, {"p": {"weight": 100}}, steps_after="a", canary=(old, new))
    assert bool(kubernetes.canary_ladder(t, ladder)) == (weight > ladder[1])


def test_ladder_config_always_has_the_ends():
    assert cfg_ladder({"l": [50.0, 10.0, 10.0]}, "l", [0, 100]) == [0, 10, 50, 100]
    assert cfg_ladder({}, "l", [0, 25, 100]) == [0, 25, 100]


def test_image_tags_and_versions():
    assert image_tag("registry.example.com:5000/bazbii/api:2.0.0") == "2.0.0"
    assert image_tag("registry.example.com:5000/bazbii/api") is None
    assert image_tag("registry.example.com/bazbii/api@sha256:" + "a" * 64) is None
    assert parse_version("2.0.0-rc1") < parse_version("2.0.0") < parse_version("2.0.1") < parse_version("10.0.0")
    assert parse_version("latest") is None and parse_version("2.0") is None
