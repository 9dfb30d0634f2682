"""dns-*: switch a DNS-only record only at a TTL lowered in an earlier step, after one old TTL."""

from .helpers import Stack, ago, preview

PROD = Stack.prod()  # dns at ttl-lowered (direct: 300 s, was 3600 s)
SWITCHED = PROD.at(infra="traffic-10", dns="switched")
LOWERED = PROD.at(infra="traffic-10", dns="ttl-lowered")


def test_switch_after_the_old_ttl_has_expired_passes():
    result = preview(SWITCHED, LOWERED, applied_at=ago(hours=2))
    assert not result.mandatory, result.explain()


def test_switch_before_the_old_ttl_has_expired_is_denied():
    result = preview(SWITCHED, LOWERED, applied_at=ago(minutes=20))
    assert result.names() == {"dns-lower-ttl-before-switch"}, result.explain()
    [message] = result.messages("dns-lower-ttl-before-switch")
    assert "record 'direct' switches A 203.0.113.11 -> A 203.0.113.12 only 20 min after" in message
    assert "old TTL of 1 h" in message and "wait another 40 min" in message


def test_switch_with_unknown_time_of_the_ttl_change_is_denied_with_the_base_age_fix():
    result = preview(SWITCHED, LOWERED, applied_at=None)  # an offline base file without --base-age
    [message] = result.messages("dns-lower-ttl-before-switch")
    assert "is not recorded" in message and "--base-age" in message


def test_times_are_enforced_for_the_programs_own_stack_output():
    record = LOWERED.record(ago(minutes=5), origin=None)  # as exported by the program: no origin tag
    result = preview(SWITCHED, record)
    assert result.gate().inputs["previousSource"] == "stack-output"
    assert "dns-lower-ttl-before-switch" in result.names()


def test_static_plan_walk_checks_structure_only():
    result = preview(SWITCHED, LOWERED, origin="plan-walk")  # no times at all
    assert not result.mandatory, result.explain()


def test_switch_without_lowering_the_ttl_first_is_denied():
    edited = PROD.edit(lambda s: s.step("dns", "ttl-lowered").update(changes={}))
    result = preview(edited.at(dns="switched"), edited.at(dns="ttl-lowered"), origin="plan-walk")
    [message] = result.messages("dns-lower-ttl-before-switch")
    assert "while its applied TTL is 3600 s (> 300 s)" in message
    assert "only lowers bazbii:dns.records.direct.ttl to 300" in message


def test_lowering_the_ttl_and_switching_in_the_same_step_is_denied():
    edited = PROD.edit(lambda s: s.step("dns", "switched")["changes"]["dns"]["records"]["direct"].update(ttl=120))
    result = preview(edited.at(dns="switched"), edited.at(dns="ttl-lowered"), applied_at=ago(hours=2))
    [message] = result.messages("dns-lower-ttl-before-switch")
    assert "lowers its TTL 300 -> 120 in the same step" in message


def test_max_ttl_for_switch_is_configurable():
    config = {"dns-lower-ttl-before-switch": {"maxTtlForSwitch": 120}}
    result = preview(SWITCHED, LOWERED, applied_at=ago(hours=2), policy_config=config)
    assert "applied TTL is 300 s (> 120 s)" in result.messages("dns-lower-ttl-before-switch")[0]


def test_unknown_old_ttl_uses_the_assumed_old_ttl():
    record = LOWERED.record(ago(hours=2))
    record["dnsTtl"]["direct"]["previousTtl"] = None
    result = preview(SWITCHED, record)
    assert "old TTL of 24 h" in result.messages("dns-lower-ttl-before-switch")[0]
    config = {"dns-lower-ttl-before-switch": {"assumedOldTtlSeconds": 3600}}
    assert "dns-lower-ttl-before-switch" not in preview(SWITCHED, record, policy_config=config).names()


def test_rollback_of_the_switch_passes():
    # switched -> ttl-lowered points the record back, still at the low TTL lowered two steps ago.
    result = preview(LOWERED, SWITCHED, applied_at=ago(hours=2))
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- proxied records
def test_switching_a_proxied_record_is_denied():
    def edit(s):
        s.step("dns", "switched")["changes"]["dns"]["records"]["www"] = {"content": "lb.bazbii.example"}
    edited = PROD.edit(edit)
    result = preview(edited.at(dns="switched"), edited.at(dns="ttl-lowered"), applied_at=ago(hours=2))
    assert result.names() == {"dns-proxied-moves-with-load-balancer"}, result.explain()
    [message] = result.messages("dns-proxied-moves-with-load-balancer")
    assert "proxied record 'www' changes" in message and "load-balancer pool weights" in message


def test_proxied_record_left_alone_passes():
    assert "dns-proxied-moves-with-load-balancer" not in preview(SWITCHED, LOWERED, applied_at=ago(hours=2)).names()
