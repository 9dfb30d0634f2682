"""traffic-*: pool weights climb the ladder, new pools start at 0 under a monitor, drained before removal."""

from .helpers import GATE_TYPE, Stack, preview

PROD = Stack.prod()
AT_GATEWAY = PROD.at(infra="gateway-on-server2")  # server2's pool at weight 0
LB = "cloudflare:index/loadBalancer:LoadBalancer"
POOL = "cloudflare:index/loadBalancerPool:LoadBalancerPool"


def _set_traffic(stack, step, **weights):
    stack.step("infra", step)["changes"]["traffic"] = {"pools": {k: {"weight": w} for k, w in weights.items()}}


# --------------------------------------------------------------------------- ladder
def test_next_rung_passes():
    result = preview(PROD, AT_GATEWAY)  # 0 -> 10
    assert not result.mandatory, result.explain()


def test_jumping_past_a_rung_is_denied():
    edited = PROD.edit(lambda s: _set_traffic(s, "traffic-10", server1=50, server2=50))
    result = preview(edited.at(infra="traffic-10"), edited.at(infra="gateway-on-server2"))
    assert result.names() == {"traffic-weight-ladder"}, result.explain()
    [message] = result.messages("traffic-weight-ladder")
    assert "pool 'server2' weight jumps 0 -> 50, past the next rung 10" in message
    assert "set bazbii:plan.infra.steps[4].changes.traffic.pools.server2.weight to 10" in message


def test_ladder_is_configurable():
    edited = PROD.edit(lambda s: _set_traffic(s, "traffic-10", server1=50, server2=50))
    target, applied = edited.at(infra="traffic-10"), edited.at(infra="gateway-on-server2")
    coarse = {"traffic-weight-ladder": {"trafficLadder": [0, 50, 100]}}
    assert not preview(target, applied, policy_config=coarse).mandatory
    fine = {"traffic-weight-ladder": {"trafficLadder": [0, 5, 10, 50, 100]}}
    result = preview(PROD, AT_GATEWAY, policy_config=fine)
    assert "past the next rung 5 of the ladder [0, 5, 10, 50, 100]" in result.messages("traffic-weight-ladder")[0]


def test_one_step_rollback_is_exempt_from_the_ladder():
    # traffic-100 -> traffic-50 raises server1 0 -> 50 (two rungs): it restores an already checked state.
    result = preview(PROD.at(infra="traffic-50"), PROD.at(infra="traffic-100"))
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- new pools
def test_new_pool_with_traffic_is_denied():
    def edit(s):
        s.step("infra", "gateway-on-server2")["changes"]["traffic"]["pools"] = {
            "server2": {"server": "server2", "weight": 10}, "server1": {"weight": 90}}
    edited = PROD.edit(edit)
    result = preview(edited.at(infra="gateway-on-server2"), edited.at(infra="replica-streaming"))
    assert "traffic-new-pool-at-zero" in result.names()
    [message] = result.messages("traffic-new-pool-at-zero")
    assert "pool 'server2' gets weight 10 but was not applied before" in message and "weight 0" in message


def test_new_pool_at_zero_passes():
    result = preview(AT_GATEWAY, PROD.at(infra="replica-streaming"))
    assert not result.mandatory, result.explain()


def test_unmonitored_pool_with_traffic_is_denied():
    def edit(s):
        s.step("infra", "gateway-on-server2")["changes"]["traffic"]["pools"]["server2"]["monitored"] = False
    edited = PROD.edit(edit)
    assert not preview(edited.at(infra="gateway-on-server2"), edited.at(infra="replica-streaming")).mandatory
    result = preview(edited, edited.at(infra="gateway-on-server2"))
    assert "traffic-pool-health-monitor" in result.names()
    assert "monitored: false" in result.messages("traffic-pool-health-monitor")[0]


# --------------------------------------------------------------------------- removal
def test_removing_a_pool_that_still_has_weight_is_denied():
    def edit(s):
        _set_traffic(s, "traffic-100", server1=10, server2=90)
        s.step("infra", "gateway-off-server1")["changes"]["traffic"] = {"pools": {"server1": None, "server2": {"weight": 100}}}
    edited = PROD.edit(edit)
    steps = dict(dns="switched")
    result = preview(edited.at(infra="gateway-off-server1", **steps), edited.at(infra="traffic-100", **steps))
    assert "traffic-drain-before-remove" in result.names()
    assert "pool 'server1' is removed while its applied weight is 10" in result.messages("traffic-drain-before-remove")[0]


def test_removing_a_drained_pool_passes():
    steps = dict(dns="switched")
    result = preview(PROD.at(infra="gateway-off-server1", **steps), PROD.at(infra="traffic-100", **steps))
    assert not result.mandatory, result.explain()


# --------------------------------------------------------------------------- never zero
def _zero_weights(resources):
    for r in resources:
        if r.type == GATE_TYPE and r.inputs.get("gate"):
            for pool in r.inputs["target"]["state"]["traffic"]["pools"].values():
                pool["weight"] = 0.0


def test_all_weights_zero_is_denied():
    # The config model already refuses weights that do not sum to 100; the policy is the second line.
    result = preview(PROD, PROD.at(infra="gateway-on-server2"), mutate=_zero_weights)
    assert "traffic-never-zero" in result.names()
    assert "sum to 0" in result.messages("traffic-never-zero")[0]


def test_weights_above_zero_pass():
    assert "traffic-never-zero" not in preview(PROD, AT_GATEWAY).names()
