"""flags-*: a feature flag climbs its ladder, goes on only where it is understood, and its old path goes last.

Every case runs the real program under mocks with a chosen applied record and
the whole pack, as ./preview does. The shipped flag is ``new_category_ui``
(API 2.0.0, schema 0002_add_category expand, soak 24 h, its old path needs
what the 0002 contract removes).
"""

from datetime import datetime, timedelta, timezone

import pytest

from bazbii_plan.errors import ConfigError
from policies.rules.common import Transition
from policies.rules.flags import contract_after_old_path, old_path_after_soak, on_only_where_understood, rollout_ladder

from .helpers import Stack, ago, preview

PROD = Stack.prod()
# Where the flags track runs in the shipped plan: everything else done, the schema before its contract.
READY = dict(infra="old-db-retired", dns="ttl-restored", release="api-2.0", schema="0002-migrate")
FLAG = "new_category_ui"
DONE = dict(READY, flags="new-category-ui-old-path-removed")


def at(stack: Stack = PROD, **steps) -> Stack:
    return stack.at(**dict(READY, **steps))


def flags_step(stack: Stack, name: str) -> dict:
    return stack.step("flags", name)


def only(result, rule):
    assert rule in result.names(), result.explain()
    messages = result.messages(rule)
    assert all(". Fix: " in m for m in messages), messages
    return messages


# --------------------------------------------------------------------------- ladder
@pytest.mark.parametrize("before,after", [("new-category-ui-0", "new-category-ui-10"),
                                          ("new-category-ui-10", "new-category-ui-50"),
                                          ("new-category-ui-50", "new-category-ui-100")])
def test_each_rung_of_the_shipped_ladder_passes_after_its_soak(before, after):
    result = preview(at(flags=after), at(flags=before), applied_at=ago(hours=25))
    assert not result.mandatory, result.explain()


def test_skipping_a_rung_is_denied_naming_the_key():
    edited = PROD.edit(lambda s: flags_step(s, "new-category-ui-10")["changes"]["flags"][FLAG].update(rollout=50))
    result = preview(at(edited, flags="new-category-ui-10"), at(edited, flags="new-category-ui-0"))
    assert result.names() == {"flags-rollout-ladder"}, result.explain()
    [message] = result.messages("flags-rollout-ladder")
    assert "flag 'new_category_ui' rollout jumps 0 -> 50 %, past the next rung 10 of the flag ladder [0, 10, 50, 100]" \
        in message
    assert "Fix: set bazbii:flags.new_category_ui.rollout to 10 (or less)" in message


def test_a_flag_appearing_above_the_first_rung_is_denied():
    edited = PROD.edit(lambda s: flags_step(s, "new-category-ui-0")["changes"]["flags"][FLAG].update(rollout=50))
    result = preview(at(edited, flags="new-category-ui-0"), at(edited, flags="none"))
    [message] = only(result, "flags-rollout-ladder")
    assert "flag 'new_category_ui' appears at rollout 50 %, past the next rung 10" in message


def test_the_flag_ladder_is_policy_config():
    config = {"flags-rollout-ladder": {"flagLadder": [0, 5, 10, 50, 100]}}
    result = preview(at(flags="new-category-ui-10"), at(flags="new-category-ui-0"), policy_config=config)
    [message] = only(result, "flags-rollout-ladder")
    assert "jumps 0 -> 10 %, past the next rung 5 of the flag ladder [0, 5, 10, 50, 100]" in message


def test_lowering_a_flag_by_one_step_passes():
    result = preview(at(flags="new-category-ui-10"), at(flags="new-category-ui-50"), applied_at=ago(minutes=5))
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- understood by every running version
def _no_flag_requires(s):
    flags_step(s, "new-category-ui-10").pop("requires")


def test_enabling_before_the_version_rolled_out_is_denied():
    edited = PROD.edit(_no_flag_requires)  # the plan no longer waits for api-2.0
    target = edited.at(release="canary-10", flags="new-category-ui-10")
    result = preview(target, edited.at(release="canary-10", flags="new-category-ui-0"))
    messages = only(result, "flags-on-only-where-understood")
    assert any("flag 'new_category_ui' is on for 10 % of users while target app.api runs "
               "registry.example.com/bazbii/api:1.9.0 (1.9.0 < 2.0.0), which does not read the flag" in m
               for m in messages), messages
    assert all("keep bazbii:flags.new_category_ui.rollout at 0 until the release track" in m for m in messages)
    # the canary (2.0.0) and the workers (2.0.0) read it: only the stable 1.9.0 pods are named
    whats = [m.split(". Fix: ")[0] for m in messages]
    assert not any("app.canary" in w or "app.worker" in w for w in whats), whats


def test_rolling_the_release_back_to_the_full_canary_with_the_flag_on_passes():
    on = dict(flags="new-category-ui-10")
    result = preview(at(release="canary-100", **on), at(**on))  # the 1.9 stable is scaled to 0: it runs no pod
    assert not result.mandatory, result.explain()


def test_rolling_the_release_back_below_the_flag_is_denied():
    edited = PROD.edit(_no_flag_requires)  # the plan would refuse it as config: flag on needs canary-100
    on = dict(flags="new-category-ui-10")
    result = preview(at(edited, release="canary-50", **on), at(edited, release="canary-100", **on))
    messages = only(result, "flags-on-only-where-understood")
    assert any("target app.api runs registry.example.com/bazbii/api:1.9.0" in m for m in messages), messages
    assert any("lower the flag before rolling the release back" in m for m in messages)


def test_enabling_before_the_schema_it_needs_is_denied():
    edited = PROD.edit(lambda s: flags_step(s, "new-category-ui-0")["changes"]["flags"][FLAG].update(
        needsSchema={"migration": "0002_add_category", "stage": "contract"}))
    result = preview(at(edited, flags="new-category-ui-10"), at(edited, flags="new-category-ui-0"))
    [message] = only(result, "flags-on-only-where-understood")
    assert "the schema is at 0002_add_category migrate, before 0002_add_category contract " \
           "(flags.new_category_ui.needsSchema)" in message
    assert "keep bazbii:flags.new_category_ui.rollout at 0 until bazbii:schemaPhase is at 0002_add_category contract" in message


# --------------------------------------------------------------------------- old path after the soak
def test_removing_the_old_path_after_the_soak_passes():
    result = preview(at(flags="new-category-ui-old-path-removed"), at(flags="new-category-ui-100"),
                     applied_at=ago(hours=25))
    assert not result.mandatory, result.explain()


def test_removing_the_old_path_too_early_is_denied():
    result = preview(at(flags="new-category-ui-old-path-removed"), at(flags="new-category-ui-100"),
                     applied_at=ago(hours=2))
    assert result.names() == {"flags-old-path-after-soak"}, result.explain()
    [message] = result.messages("flags-old-path-after-soak")
    assert "flag 'new_category_ui' removes its old path (the 1.x post form" in message
    assert "after only 2 h at 100 %, less than its soak of 24 h" in message
    assert "Fix: wait another 22 h" in message and "flags.new_category_ui.soakHours" in message


def test_the_soak_is_the_flags_own():
    edited = PROD.edit(lambda s: flags_step(s, "new-category-ui-0")["changes"]["flags"][FLAG].update(soakHours=1))
    result = preview(at(edited, flags="new-category-ui-old-path-removed"), at(edited, flags="new-category-ui-100"),
                     applied_at=ago(hours=2))
    assert not result.mandatory, result.explain()


def test_the_soak_counts_from_when_the_flag_reached_100_not_from_other_tracks():
    # The 100 % step was applied 25 h ago; the record keeps that time while the rollout stays at 100.
    applied = at(flags="new-category-ui-100").record(ago(hours=25))
    assert applied["flagRollout"][FLAG]["rollout"] == 100
    result = preview(at(flags="new-category-ui-old-path-removed"), applied)
    assert not result.mandatory, result.explain()


def test_removing_the_old_path_with_an_unknown_time_is_denied_with_the_base_age_fix():
    result = preview(at(flags="new-category-ui-old-path-removed"), at(flags="new-category-ui-100"), applied_at=None)
    [message] = only(result, "flags-old-path-after-soak")
    assert "when it reached 100 % is not recorded" in message and "--base-age" in message


def test_removing_the_old_path_below_100_is_denied():
    result = preview(at(flags="new-category-ui-old-path-removed"), at(flags="new-category-ui-50"),
                     applied_at=ago(days=3))
    [message] = only(result, "flags-old-path-after-soak")
    assert "its applied rollout is 50 %, not 100 %" in message
    assert "raise bazbii:flags.new_category_ui.rollout to 100 in its own step" in message


def test_deleting_a_flag_whose_old_path_is_gone_is_denied():
    def add_retire_step(s):
        s.values["plan"]["flags"]["steps"].append({
            "name": "new-category-ui-retired", "summary": "Drop the flag.", "gate": "None.", "rollback": "Re-add it.",
            "changes": {"flags": {FLAG: None}}})
    edited = PROD.edit(add_retire_step)
    result = preview(at(edited, flags="new-category-ui-retired"), at(edited, flags="new-category-ui-old-path-removed"))
    [message] = only(result, "flags-old-path-after-soak")
    assert "flag 'new_category_ui' is deleted although its old path was removed" in message
    assert "keep bazbii:flags.new_category_ui (rollout 100, oldPath.removed: true)" in message


# --------------------------------------------------------------------------- removal order: front end -> API -> DB
def _contract_without_flag_requires(s):
    s.step("schema", "0002-contract")["requires"].pop("flags")


def test_contract_after_the_old_path_was_removed_passes():
    result = preview(PROD.at(**dict(DONE, schema="0002-contract")), PROD.at(**DONE), applied_at=ago(hours=1))
    assert not result.mandatory, result.explain()


def test_contract_before_the_flag_held_100_is_denied():
    edited = PROD.edit(_contract_without_flag_requires)
    result = preview(at(edited, schema="0002-contract", flags="new-category-ui-50"), at(edited, flags="new-category-ui-50"))
    messages = only(result, "flags-contract-after-old-path")
    assert any("migration '0002_add_category' contracts, which removes what flag 'new_category_ui''s old path needs" in m
               and "the target rollout of the flag is 50 %" in m for m in messages), messages
    assert any("the applied rollout of the flag is 50 %" in m for m in messages), messages
    assert any("keep bazbii:flags.new_category_ui.rollout at 100 while 0002_add_category is contracted" in m for m in messages)


def test_contract_at_100_before_the_old_path_removal_was_applied_is_denied():
    edited = PROD.edit(_contract_without_flag_requires)
    result = preview(at(edited, schema="0002-contract", flags="new-category-ui-100"), at(edited, flags="new-category-ui-100"))
    [message] = only(result, "flags-contract-after-old-path")
    assert "the flag's old path was not removed in an applied step (removal order: front end, then API, then DB)" \
        in message
    assert "apply a flags step that sets bazbii:flags.new_category_ui.oldPath.removed: true" in message


def test_flag_rollback_after_the_contract_is_refused_by_the_plan_but_100_would_pass_the_policy():
    contracted = dict(DONE, schema="0002-contract")
    with pytest.raises(ConfigError, match="requires track .flags."):  # the contract step requires the removal step: config refuses the rollback
        PROD.at(**dict(contracted, flags="new-category-ui-100")).config()
    edited = PROD.edit(_contract_without_flag_requires)
    result = preview(edited.at(**dict(contracted, flags="new-category-ui-100")), edited.at(**contracted))
    assert not result.mandatory, result.explain()  # the flag stays at 100 %: nobody gets the old path


def test_lowering_the_flag_after_the_contract_is_denied():
    contracted = dict(DONE, schema="0002-contract")
    edited = PROD.edit(_contract_without_flag_requires)
    result = preview(edited.at(**dict(contracted, flags="new-category-ui-50")),
                     edited.at(**dict(contracted, flags="new-category-ui-100")))
    messages = only(result, "flags-contract-after-old-path")
    assert any("the target rollout of the flag is 50 %" in m for m in messages), messages


# --------------------------------------------------------------------------- what the program registers
def test_every_pod_reads_the_target_flags():
    result = preview(at(flags="new-category-ui-10"), at(flags="new-category-ui-0"))
    assert "flags-reach-every-pod" not in result.names(mandatory=False), result.explain()


def test_a_deployment_that_would_not_roll_is_denied():
    def stale_worker(resources):
        worker = next(r for r in resources if r.name == "app-worker")
        worker.inputs["spec"]["template"]["metadata"]["annotations"]["bazbii.io/flags-checksum"] = "0" * 64

    result = preview(at(flags="new-category-ui-10"), at(flags="new-category-ui-0"), mutate=stale_worker)
    [message] = only(result, "flags-reach-every-pod")
    assert "Deployment worker's pod template carries flags checksum '000" in message
    assert "its pods would not roll to the new flags" in message


def test_a_hand_edited_flags_config_map_is_denied():
    def edited_map(resources):
        cm = next(r for r in resources if r.name == "app-flags")
        cm.inputs["data"]["flags.json"] = '{"new_category_ui":{"oldPathRemoved":false,"rollout":100}}'

    result = preview(at(flags="new-category-ui-10"), at(flags="new-category-ui-0"), mutate=edited_map)
    messages = only(result, "flags-reach-every-pod")
    assert any('holds the target flags {"new_category_ui":{"oldPathRemoved":false,"rollout":10}}' in m
               for m in messages), messages


# --------------------------------------------------------------------------- the rule functions on crafted records
def _transition(target_state, previous_state=None, previous_extra=None, source="base-file", evaluated_at=None):
    steps = {"flags": ["a", "b"]}
    previous = None
    if previous_state is not None:
        previous = {"steps": {"flags": "a"}, "state": previous_state, **(previous_extra or {})}
    return Transition(step_names=steps, target={"steps": {"flags": "b"}, "state": target_state}, previous=previous,
                      previous_source=source, override=None, now=evaluated_at or datetime.now(timezone.utc))


def _state(rollout, *, api="r/api:2.0.0", worker="r/worker:2.0.0", quiet=False, removed=False, stage="migrate"):
    return {
        "app": {"api": {"image": api, "replicas": 10}, "worker": {"image": worker, "replicas": 2, "quiet": quiet}},
        "schema": {"migration": {"id": "0002_add_category", "stage": stage}},
        "flags": {FLAG: {"rollout": rollout, "minAppVersion": "2.0.0", "soakHours": 24,
                         "needsSchema": {"migration": "0002_add_category", "stage": "expand"},
                         "oldPath": {"description": "old form", "droppedBy": "0002_add_category", "removed": removed}}},
    }


def test_quiet_workers_still_count_as_running():
    findings = on_only_where_understood(_transition(_state(10, worker="r/worker:1.9.0", quiet=True)))
    assert [f.what for f in findings] == [
        "flag 'new_category_ui' is on for 10 % of users while target app.worker runs r/worker:1.9.0 (1.9.0 < 2.0.0), "
        "which does not read the flag"]


def test_an_unversioned_image_counts_as_not_understanding_the_flag():
    findings = on_only_where_understood(_transition(_state(10, api="r/api:latest")))
    assert len(findings) == 1 and "so its version is unknown" in findings[0].what


def test_a_first_deployment_is_judged_on_the_target_alone():
    assert rollout_ladder(_transition(_state(100)), [0, 10, 50, 100]) == []  # plan-fail-closed handles it
    assert old_path_after_soak(_transition(_state(100, removed=True))) == []
    findings = contract_after_old_path(_transition(_state(100, stage="contract")))
    assert [f.fix.split(" (")[0] for f in findings] == [
        "apply a flags step that sets bazbii:flags.new_category_ui.oldPath.removed: true"]
    assert contract_after_old_path(_transition(_state(100, removed=True, stage="contract"))) == []


def test_a_soak_time_recorded_for_another_rollout_does_not_count():
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    stale = {"flagRollout": {FLAG: {"rollout": 50, "since": "2026-11-01T00:00:00+00:00"}}}
    [finding] = old_path_after_soak(_transition(_state(100, removed=True), _state(100), stale, evaluated_at=now))
    assert "when it reached 100 % is not recorded" in finding.what
    held = {"flagRollout": {FLAG: {"rollout": 100, "since": "2026-11-28T11:00:00+00:00"}}}
    assert old_path_after_soak(_transition(_state(100, removed=True), _state(100), held, evaluated_at=now)) == []


def test_a_rehearsal_stacks_time_scale_divides_the_soak():
    # At 1/1800 (bazbii:timeScale, from the applied record's judgedBy) the 24 h soak is 48 s, as the gates' are.
    reached = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    extra = {"judgedBy": {"timeScale": 1800}, "flagRollout": {FLAG: {"rollout": 100, "since": reached.isoformat()}}}

    def removing_after(seconds):
        return old_path_after_soak(_transition(_state(100, removed=True), _state(100), previous_extra=extra,
                                               evaluated_at=reached + timedelta(seconds=seconds)))

    assert removing_after(50) == []
    [early] = removing_after(20)
    assert "after only 20 s (time scale 1/1800) at 100 %, less than its soak of 48 s (time scale 1/1800)" in early.what
    assert "wait another 28 s" in early.fix
    unscaled = dict(extra, judgedBy={})
    assert old_path_after_soak(_transition(_state(100, removed=True), _state(100), previous_extra=unscaled,
                                           evaluated_at=reached + timedelta(seconds=50)))  # 24 h otherwise
