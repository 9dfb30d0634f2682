"""The typed stack config and the phase plan (pure Python, no Pulumi)."""

import copy

import pytest

from bazbii_plan.errors import ConfigError
from bazbii_plan.plan import merge_patch
from bazbii_plan.stackconfig import load_stack_config
from testsupport.plansteps import step_key, step_of


def load(values, secret_keys, mutate=None):
    values, secret_keys = copy.deepcopy(values), set(secret_keys)
    if mutate:
        mutate(values, secret_keys)
    return load_stack_config(values, secret_keys)


def problems(values, secret_keys, mutate):
    with pytest.raises(ConfigError) as info:
        load(values, secret_keys, mutate)
    return info.value.problems


def test_shipped_prod_stack_is_valid(prod_values):
    config = load(*prod_values)
    assert config.current == {"infra": "traffic-10", "dns": "ttl-lowered", "release": "canary-10", "schema": "0002-migrate",
                              "flags": "none"}
    pools = config.state().traffic.pools
    assert (pools["server1"].weight, pools["server2"].weight) == (90, 10)


def test_every_step_of_every_track_folds_to_a_valid_state(prod_values):
    config = load(*prod_values)
    for track_name, track in config.plan.tracks.items():
        for step in track.names():
            state = config.with_steps(**{track_name: step}).state()
            assert state.traffic.pools, (track_name, step)


def test_server1_resize_follows_the_seed_spec(prod_values):
    config = load(*prod_values)
    before = config.with_steps(infra="gateway-off-server1").state().servers["server1"]
    after = config.with_steps(infra="server1-resized").state().servers["server1"]
    assert (before.vcpu, before.memory_gb, before.disk_gb) == (2, 4, 100)
    assert (after.vcpu, after.memory_gb, after.disk_gb) == (4, 8, 200)


def test_mvp_has_no_server3_and_switchover_moves_primary(prod_values):
    config = load(*prod_values)
    assert "server3" not in config.with_steps(infra="mvp").state().servers
    switched = config.with_steps(infra="db-switchover").state().database
    assert switched.primary == "server3" and switched.switchover.from_ == "server2" and not switched.replicas


def test_bad_weight_in_a_step_names_the_step_key(prod_values):
    lines = problems(*prod_values, lambda v, s: step_of(v, "infra", "traffic-10")["changes"]["traffic"]["pools"]["server2"].update(weight=150))
    assert lines == [f"{step_key(prod_values[0], 'infra', 'traffic-10')}.changes.traffic.pools.server2.weight: must be 0..100"]


def test_bad_base_value_names_the_base_key(prod_values):
    lines = problems(*prod_values, lambda v, s: v["traffic"]["pools"]["server1"].update(weight=-1))
    assert lines == ["bazbii:traffic.pools.server1.weight: must be 0..100"]


def test_one_line_per_problem(prod_values):
    def mutate(values, secrets):
        values["servers"]["server1"]["vcpu"] = "four"
        values["servers"]["server1"]["colour"] = "red"
        values["phase"] = "traffic-1000"
    lines = problems(*prod_values, mutate)
    assert any(line.startswith("bazbii:servers.server1.vcpu:") for line in lines)
    assert any(line.startswith("bazbii:servers.server1.colour: unknown key") for line in lines)
    assert any(line.startswith("bazbii:phase: unknown step 'traffic-1000'") for line in lines)


def test_plaintext_or_missing_secret_is_refused(prod_values):
    def mutate(values, secrets):
        secrets.discard("dbPassword")
        del values["tunnelSecret"]
    lines = problems(*prod_values, mutate)
    assert any(line.startswith("bazbii:dbPassword: must be stored as a secret") for line in lines)
    assert any(line.startswith("bazbii:tunnelSecret: is required") for line in lines)


def test_step_requirements_across_tracks(prod_values):
    lines = problems(*prod_values, lambda v, s: v.update(phase="mvp", dnsPhase="switched"))
    assert lines == ["bazbii:dnsPhase: step 'switched' requires track 'infra' at 'gateway-on-server2' or later (bazbii:phase is 'mvp')"]


def test_track_may_only_patch_its_own_sections(prod_values):
    lines = problems(*prod_values, lambda v, s: step_of(v, "dns", "ttl-lowered").update(changes={"traffic": {}}))
    assert lines[0].startswith(f"{step_key(prod_values[0], 'dns', 'ttl-lowered')}.changes.traffic: is owned by track 'infra'")


def test_cross_section_reference_is_checked(prod_values):
    lines = problems(*prod_values, lambda v, s: v["database"]["pooler"].update(server="server7"))
    assert "bazbii:database.pooler.server: unknown server 'server7' (servers: server1, server2)" in lines


def test_weights_must_sum_to_100(prod_values):
    lines = problems(*prod_values, lambda v, s: step_of(v, "infra", "traffic-10")["changes"]["traffic"]["pools"]["server1"].update(weight=80))
    assert lines == [f"{step_key(prod_values[0], 'infra', 'traffic-10')}.changes.traffic: pool weights are percentages and must sum to 100 (got 90)"]


def test_override_needs_a_reason(prod_values):
    lines = problems(*prod_values, lambda v, s: v.update(phaseOverride="yes"))
    assert lines == ["bazbii:phaseOverride: must be a reason of at least 10 characters (it is logged and recorded)"]


def test_merge_patch_follows_rfc7396():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_every_config_pattern_is_explained_in_words():
    # a config error says what a key must be, not its regular expression: every Field pattern of
    # the stack config is registered with its words (bazbii_plan.errors.pattern)
    import inspect

    from pydantic import BaseModel

    import bazbii_plan.gates
    import bazbii_plan.models
    import bazbii_plan.plan
    from bazbii_plan.errors import PATTERN_WORDS

    patterns = {(cls.__name__, name): meta.pattern
                for module in (bazbii_plan.models, bazbii_plan.plan, bazbii_plan.gates)
                for cls in vars(module).values() if inspect.isclass(cls) and issubclass(cls, BaseModel)
                for name, field in cls.model_fields.items()
                for meta in field.metadata if getattr(meta, "pattern", None)}
    assert len(patterns) > 20
    assert {key: regex for key, regex in patterns.items() if regex not in PATTERN_WORDS} == {}
