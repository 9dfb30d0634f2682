"""The real CLI validates the project's config schema (Pulumi.yaml) against the stack before the program runs.

The mocks never read Pulumi.yaml; these tests run ``pulumi preview`` as an operator does.
"""

from __future__ import annotations

import pytest
import yaml

from bazbii_plan.stackconfig import SECRET_KEYS, known_keys
from engine.workspace import REPO_ROOT
from offline_preview import scenarios
from policies.pack import JUDGED_AT_UP
from twin.operator import TwinOperator
from twin.stack import load_prod

pytestmark = pytest.mark.engine

PROJECT = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())


@pytest.fixture
def prod_operator(twin_with_cloud):
    """The shipped Pulumi.prod.yaml as it is, as stack ``prod``, with its secrets set as an operator sets them."""
    operator = TwinOperator.create(twin_with_cloud, stack="prod", document=load_prod())
    yield operator
    operator.cleanup()


def applied_as_it_is(operator: TwinOperator) -> None:
    """The stack's last outputs say the shipped steps are what is applied (the record ./preview rebuilds)."""
    prod = scenarios.load_side(REPO_ROOT / "Pulumi.prod.yaml")
    operator.set_applied_record(scenarios.between_files(prod, prod, scenarios.parse_age("2d")).previous_record)


def test_the_shipped_stack_passes_the_clis_config_validation_and_previews_clean(prod_operator):
    applied_as_it_is(prod_operator)
    judged = prod_operator.judged("preview")
    assert "missing configuration value" not in judged.output and "validating stack config" not in judged.output
    assert not judged.denied, judged.output[-4000:]
    assert not judged.errors and not judged.mandatory_policies
    # What a real preview cannot judge (values other resources give), and only that, is said, as advisory.
    assert {v.policy for v in judged.violations} == set(JUDGED_AT_UP)
    assert all("can't run policy" in v.message and "during preview" in v.message for v in judged.violations)


def test_a_key_declared_without_a_default_that_the_stack_never_sets_stops_the_cli(prod_operator):
    project = prod_operator.workspace.project / "Pulumi.yaml"
    declared = yaml.safe_load(project.read_text())
    del declared["config"]["bazbii:flags"]["default"]  # as the project shipped it before
    project.write_text(yaml.safe_dump(declared, sort_keys=False))
    result = prod_operator.preview(check=False)
    assert result.returncode != 0
    assert "missing configuration value 'bazbii:flags'" in result.output


def test_a_stack_key_the_project_does_not_declare_is_refused_naming_it(prod_operator):
    applied_as_it_is(prod_operator)
    prod_operator.workspace.config_set("prod", "bazbii:phaze", "traffic-50")  # a typo of bazbii:phase
    judged = prod_operator.judged("preview")
    assert judged.denied
    assert any("bazbii:phaze: unknown key" in e.message for e in judged.errors), judged.output[-3000:]
    assert "Traceback" not in judged.output


def test_every_declared_key_is_one_the_program_reads_and_every_required_one_is_set():
    declared = set(PROJECT["config"])
    prod = load_prod()
    pointers = [track["key"] for track in prod["config"]["bazbii:plan"].values()]
    known = {f"bazbii:{key}" for key in known_keys(pointers)}
    assert declared == known, f"declared only: {sorted(declared - known)}; read only: {sorted(known - declared)}"
    required = {key for key, spec in PROJECT["config"].items() if "default" not in spec and "value" not in spec}
    secrets = {f"bazbii:{key}" for key in SECRET_KEYS}
    # Every required key is in the stack file, except the secrets, which an operator sets with the CLI.
    assert required - set(prod["config"]) == secrets
    for key in secrets:
        assert PROJECT["config"][key].get("secret") is True, f"{key} must be declared secret: true"


def test_the_stack_file_holds_no_key_the_project_does_not_declare():
    prod = load_prod()
    ours = {key for key in prod["config"] if key.startswith("bazbii:")}
    assert ours <= set(PROJECT["config"]), sorted(ours - set(PROJECT["config"]))
