"""Gate rules of the release and schema tracks: canary ladder, pinned images, contract after the app rollout."""

from .helpers import Stack, preview

PROD = Stack.prod()  # release canary-10, schema 0002-migrate
DNS = dict(infra="old-db-retired", dns="ttl-restored")


# --------------------------------------------------------------------------- canary ladder
def test_canary_at_the_first_rung_passes():
    assert not preview(PROD, PROD.at(release="worker-2.0")).mandatory


def test_canary_appearing_above_the_first_rung_is_denied():
    edited = PROD.edit(lambda s: s.step("release", "canary-10")["changes"]["app"]["canary"].update(weight=50))
    result = preview(edited.at(release="canary-10"), edited.at(release="worker-2.0"))
    assert result.names() == {"k8s-canary-ladder"}, result.explain()
    [message] = result.messages("k8s-canary-ladder")
    assert "canary registry.example.com/bazbii/api:2.0.0 appears at weight 50, past the next rung 10" in message


def test_canary_with_a_new_image_starts_again_at_the_first_rung():
    edited = PROD.edit(lambda s: s.step("release", "canary-50")["changes"]["app"]["canary"].update(
        image="registry.example.com/bazbii/api:2.0.1"))
    result = preview(edited.at(release="canary-50"), edited.at(release="canary-10"))
    assert "api:2.0.1 appears at weight 50" in result.messages("k8s-canary-ladder")[0]


def test_canary_ladder_is_configurable():
    config = {"k8s-canary-ladder": {"canaryLadder": [0, 10, 25, 50, 100]}}
    result = preview(PROD.at(release="canary-50"), PROD, policy_config=config)
    assert "canary weight jumps 10 -> 50, past the next rung 25" in result.messages("k8s-canary-ladder")[0]
    assert not preview(PROD.at(release="canary-50"), PROD).mandatory


def test_canary_rollback_by_one_step_passes():
    # api-2.0 -> canary-100 brings the canary back at 100 %: a state checked on the way up.
    result = preview(PROD.at(release="canary-100"), PROD.at(release="api-2.0"))
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- images pinned
def test_latest_image_in_the_state_is_denied():
    edited = PROD.edit(lambda s: s.values["app"]["worker"].update(image="registry.example.com/bazbii/worker:latest"))
    result = preview(edited.at(release="api-1.9"), None)
    assert "k8s-image-pinned-in-state" in result.names()
    assert "bazbii:app.worker.image: image 'registry.example.com/bazbii/worker:latest' has tag 'latest', which is not " \
           "a version" in result.messages("k8s-image-pinned-in-state")[0]
    assert "k8s-image-pinned-in-state" not in preview(PROD, PROD.at(release="worker-2.0")).names()


# --------------------------------------------------------------------------- contract
def test_contract_after_every_deployment_runs_the_new_version_passes():
    at = dict(DNS, release="api-2.0", flags="new-category-ui-old-path-removed")  # the flags track first: DB goes last
    result = preview(PROD.at(schema="0002-contract", **at), PROD.at(schema="0002-migrate", **at), origin="plan-walk")
    assert not result.mandatory, result.explain()


def _without_contract_requires(s):
    s.step("schema", "0002-contract").pop("requires")


def test_contract_while_old_versions_run_is_denied():
    edited = PROD.edit(_without_contract_requires)  # the plan no longer waits for api-2.0
    result = preview(edited.at(schema="0002-contract"), edited.at(schema="0002-migrate"), origin="plan-walk")
    assert "schema-contract-after-app-rollout" in result.names()
    messages = result.messages("schema-contract-after-app-rollout")
    assert any("migration '0002_add_category' contracts, but target app.api runs registry.example.com/bazbii/api:1.9.0 "
               "(1.9.0 < 2.0.0)" in m for m in messages), messages
    assert all("finish the release track first" in m for m in messages)


def test_contract_with_a_latest_image_is_denied_as_unknown_version():
    def edit(s):
        _without_contract_requires(s)
        s.step("release", "api-2.0")["changes"]["app"]["api"]["image"] = "registry.example.com/bazbii/api:latest"
    edited = PROD.edit(edit)
    at = dict(DNS, release="api-2.0")
    result = preview(edited.at(schema="0002-contract", **at), edited.at(schema="0002-migrate", **at), origin="plan-walk")
    assert any("tag 'latest' is not a version MAJOR.MINOR.PATCH" in m for m in result.messages("schema-contract-after-app-rollout"))
