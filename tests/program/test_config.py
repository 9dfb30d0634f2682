"""Bad config stops the program cleanly: one ``bazbii:<key>: message`` line per problem, nothing registered.

Plus property tests: randomly broken configs only ever end in a ConfigError
(library level) or a clean ``pulumi.RunError`` (program level), never in
another exception.
"""

from __future__ import annotations

import copy
import shutil

import pulumi
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bazbii_plan.errors import ConfigError
from bazbii_plan.stackconfig import load_stack_config
from testsupport.plansteps import step_key, step_of
from components import preflight
from offline_preview.harness import REPO_ROOT


def stopped(program, captured, values, secret_keys=None) -> list[str]:
    with pytest.raises(pulumi.RunError, match="nothing was registered"):
        program.run(values, secret_keys)
    assert captured.resources == [], [r.name for r in captured.resources]
    assert captured.errors, "the problems must be logged"
    for line in captured.errors:
        assert line.startswith("bazbii:"), line
    return captured.errors


def test_valid_config_registers(program, captured):
    program.run(program.values_for())
    assert len(captured.resources) > 20


def test_plaintext_secret_is_refused(program, captured):
    errors = stopped(program, captured, program.values_for(), program.secret_keys - {"dbPassword"})
    assert any(line.startswith("bazbii:dbPassword: must be stored as a secret") for line in errors)


def test_missing_secret_is_refused(program, captured):
    values = program.values_for()
    del values["tunnelSecret"]
    errors = stopped(program, captured, values, program.secret_keys - {"tunnelSecret"})
    assert any(line.startswith("bazbii:tunnelSecret: is required") for line in errors)


def test_weights_not_summing_to_100_name_the_step(program, captured):
    values = program.values_for()
    step_of(values, "infra", "traffic-10")["changes"]["traffic"]["pools"]["server2"]["weight"] = 20
    errors = stopped(program, captured, values)
    key = step_key(values, "infra", "traffic-10")
    assert any(line.startswith(key) and "sum to 100" in line for line in errors), errors


def test_unknown_key_is_named(program, captured):
    values = program.values_for()
    values["app"]["rollout"]["maxUnavailble"] = 0
    errors = stopped(program, captured, values)
    assert any(line.startswith("bazbii:app.rollout.maxUnavailble: unknown key") for line in errors), errors


@pytest.mark.parametrize(
    "field, value, key, text",
    [
        ("maxUnavailable", 1, "bazbii:app.rollout.maxUnavailable", "must be 0"),
        ("maxUnavailable", "25%", "bazbii:app.rollout.maxUnavailable", "must be 0"),
        ("maxSurge", 0, "bazbii:app.rollout.maxSurge", "must be >= 1"),
        ("revisionHistoryLimit", 1, "bazbii:app.rollout.revisionHistoryLimit", "rollout undo"),
        ("terminationGracePeriodSeconds", 15, "bazbii:app.rollout.terminationGracePeriodSeconds", "longer than drainSeconds"),
    ],
)
def test_unsafe_rollout_is_refused(program, captured, field, value, key, text):
    values = program.values_for()
    values["app"]["rollout"][field] = value
    errors = stopped(program, captured, values)
    assert any(line.startswith(key) and text in line for line in errors), errors


def test_unsafe_rollout_in_a_later_step_is_refused_now(program, captured):
    values = program.values_for()
    values["plan"]["release"]["steps"][5]["changes"]["app"]["rollout"] = {"maxUnavailable": 1}
    errors = stopped(program, captured, values)
    assert any(line.startswith("bazbii:app.rollout.maxUnavailable") and "release=api-2.0" in line for line in errors)


@pytest.fixture
def migrations_copy(tmp_path):
    target = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", target)
    return target


def test_missing_stage_file_names_the_file(program, captured, migrations_copy):
    (migrations_copy / "0002_add_category" / "migrate.sql").unlink()
    values = program.values_for()
    values["schema"]["migrationsDir"] = str(migrations_copy)
    errors = stopped(program, captured, values)
    assert any(line.startswith("bazbii:schema.migration.stage:") and "0002_add_category/migrate.sql is missing" in line
               for line in errors), errors


def test_missing_migration_directory_is_named(program, captured, migrations_copy):
    shutil.rmtree(migrations_copy / "0002_add_category")
    values = program.values_for()
    values["schema"]["migrationsDir"] = str(migrations_copy)
    errors = stopped(program, captured, values)
    assert any(line.startswith("bazbii:schema.migration.id:") and "does not exist" in line for line in errors), errors


def test_broken_migration_metadata_is_named(program, captured, migrations_copy):
    (migrations_copy / "0002_add_category" / "migration.toml").write_text("id = [\n")
    values = program.values_for()
    values["schema"]["migrationsDir"] = str(migrations_copy)
    errors = stopped(program, captured, values)
    assert any("migration.toml" in line and "invalid TOML" in line for line in errors), errors


def test_contract_version_must_match_the_migration(program, captured):
    values = program.values_for()
    values["plan"]["schema"]["steps"][1]["changes"]["schema"]["migration"]["contractRequiresAppVersion"] = "1.9.0"
    errors = stopped(program, captured, values)
    assert any(line.startswith("bazbii:schema.migration.contractRequiresAppVersion") for line in errors), errors


# --------------------------------------------------------------------------- property tests
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "0", "-1", "100%", "{", "[]", "latest", "203.0.113.999", "server9", "none"]),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@st.composite
def broken(draw, base: dict) -> dict:
    """``base`` with 1-3 random edits: a value replaced by junk, a key deleted, or an unknown key added."""
    values = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        node = values
        while True:
            keys = sorted(node, key=str) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, (dict, list)) and child and draw(st.booleans()):
                node = child
                continue
            action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if action == "replace":
                node[key] = draw(JUNK)
            elif action == "delete":
                node.pop(key)
            elif isinstance(node, dict):
                node[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
            else:
                node.append(draw(JUNK))
            break
    return values


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list) and node and not all(isinstance(v, str) for v in node):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    else:
        yield path, node


@st.composite
def tweaked(draw, base: dict) -> dict:
    """``base`` with 1-2 leaves replaced by a value of the same kind: often still valid, so the
    components themselves see unusual (but accepted) input."""
    values = copy.deepcopy(base)
    leaves = sorted(_leaves(values), key=str)
    strings = sorted({v for _, v in leaves if isinstance(v, str)})
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        path, old = draw(st.sampled_from(leaves))
        if isinstance(old, bool):
            new = not old
        elif isinstance(old, int):
            new = draw(st.one_of(st.integers(min_value=0, max_value=120), st.sampled_from([1, 2, 5, 10, 60, 300, 3600])))
        elif isinstance(old, float):
            new = draw(st.floats(min_value=0.001, max_value=100))
        elif isinstance(old, str):
            new = draw(st.one_of(st.sampled_from(strings), st.just(old + "x"), st.just(old.upper())))
        elif isinstance(old, list):
            new = draw(st.lists(st.sampled_from(["api", "gateway", "database", "pooler", "server1"]), max_size=3, unique=True))
        else:
            new = draw(JUNK)
        node = values
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = new
    return values


def _load(values, secret_keys):
    try:
        config = load_stack_config(values, secret_keys)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p.startswith("bazbii") for p in exc.problems)
        event("config error")
        return None
    lines = preflight.check(config)  # must report, never raise
    assert all(line.startswith("bazbii:") for line in lines)
    event("preflight problems" if lines else "valid")
    return config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_broken_config_only_ever_raises_config_error(program, data):
    values = data.draw(st.one_of(broken(program.values), tweaked(program.values)))
    _load(values, set(program.secret_keys))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_broken_config_never_escapes_the_program_as_a_traceback(program, data):
    values = data.draw(st.one_of(broken(program.values), tweaked(program.values)))
    try:
        program.run(values)
        event("program ran")
    except pulumi.RunError as exc:
        assert "nothing was registered" in str(exc)
        event("stopped cleanly")
