"""db-*: promote only a gated replica, switch over alone and through the pooler, retire the old primary last."""

from .helpers import Stack, preview

PROD = Stack.prod()
DNS = dict(dns="switched")  # gateway-off-server1 and later require the DNS switch
RESIZED = PROD.at(infra="server1-resized", **DNS)
SWITCHOVER = PROD.at(infra="db-switchover", **DNS)
RETIRED = PROD.at(infra="old-db-retired", **DNS)


def test_switchover_to_the_gated_replica_passes():
    result = preview(SWITCHOVER, RESIZED, origin="plan-walk")
    assert not result.mandatory, result.explain()


def test_promoting_a_replica_without_lag_gate_is_denied():
    def edit(s):
        s.step("infra", "replica-streaming")["changes"]["database"]["replicas"]["server3"]["lagGate"] = False
    edited = PROD.edit(edit)
    result = preview(edited.at(infra="db-switchover", **DNS), edited.at(infra="server1-resized", **DNS), origin="plan-walk")
    assert result.names() == {"db-promote-only-gated-replica"}, result.explain()
    assert "its applied replica has lagGate: False" in result.messages("db-promote-only-gated-replica")[0]


def test_promoting_a_server_that_was_never_a_replica_is_denied():
    def edit(s):
        # No replica is ever built: the switchover step makes server3 a database server and primary at once.
        s.step("infra", "replica-streaming")["changes"] = {}
        changes = s.step("infra", "db-switchover")["changes"]
        changes["database"].pop("replicas")
        changes["servers"] = {"server3": {"roles": ["database"]}}
    edited = PROD.edit(edit)
    result = preview(edited.at(infra="db-switchover", **DNS), edited.at(infra="server1-resized", **DNS), origin="plan-walk")
    [message] = result.messages("db-promote-only-gated-replica")
    assert "'server3' becomes primary (replacing 'server2') but was not applied as a streaming replica" in message


def test_rolling_back_the_switchover_by_setting_the_previous_step_is_denied():
    result = preview(RESIZED, SWITCHOVER, origin="plan-walk")
    assert "db-promote-only-gated-replica" in result.names()
    [message] = [m for m in result.messages("db-promote-only-gated-replica") if "becomes primary" in m]
    assert "'server2' becomes primary (replacing 'server3')" in message and "pg_rewind" in message


def test_lag_gate_limit_is_configurable():
    config = {"db-replica-lag-gate": {"maxReplicaLagBytes": 65536}}
    result = preview(PROD.at(infra="replica-streaming"), PROD.at(infra="server3-provisioned"), policy_config=config)
    assert result.names() == {"db-replica-lag-gate"}, result.explain()
    assert "maxBytes is 1048576, above the policy limit 65536" in result.messages("db-replica-lag-gate")[0]
    assert not preview(PROD.at(infra="replica-streaming"), PROD.at(infra="server3-provisioned")).mandatory


def test_switchover_with_other_changes_is_denied():
    def edit(s):
        s.step("infra", "db-switchover")["changes"]["database"]["pooler"] = {"pauseTimeoutSeconds": 30}
        s.step("infra", "db-switchover")["changes"]["gateway"] = {"image": "registry.example.com/bazbii/gateway:1.5.0"}
    edited = PROD.edit(edit)
    result = preview(edited.at(infra="db-switchover", **DNS), edited.at(infra="server1-resized", **DNS), origin="plan-walk")
    # The step-scope and safety-parameter rules see the same edit from their side (a PAUSE of 30 s is out of bounds
    # and weaker than applied); db-switchover-alone names every other change.
    assert result.names() == {"db-switchover-alone", "plan-step-scope", "safety-not-weakened",
                              "safety-parameter-bounds"}, result.explain()
    [message] = result.messages("db-switchover-alone")
    assert "database.pooler.pauseTimeoutSeconds" in message and "gateway.image" in message


def test_switchover_with_direct_app_connections_is_denied():
    edited = PROD.edit(lambda s: s.values["database"].update(appConnection="direct"))
    result = preview(edited.at(infra="db-switchover", **DNS), edited.at(infra="server1-resized", **DNS), origin="plan-walk")
    assert result.names() == {"db-switchover-through-pooler", "db-apps-through-pooler"}, result.explain()
    assert "appConnection is 'direct' during a switchover" in result.messages("db-switchover-through-pooler")[0]
    # The registered Deployments agree: they would talk to the new primary directly.
    assert any("Deployment api connects to 203.0.113.13:5432 during the switchover, not through PgBouncer on server1 "
               "(203.0.113.11:6432)" in m for m in result.messages("db-apps-through-pooler"))


def test_switchover_through_the_pooler_passes_on_the_registered_deployments():
    result = preview(SWITCHOVER, RESIZED, origin="plan-walk")
    assert "db-apps-through-pooler" not in result.names(mandatory=False), result.explain()


def test_retiring_the_old_primary_after_the_switchover_passes():
    assert not preview(RETIRED, SWITCHOVER, origin="plan-walk").mandatory


def test_retiring_in_the_switchover_step_is_denied():
    def edit(s):
        changes = s.step("infra", "db-switchover")["changes"]
        changes["database"]["retired"] = ["server2"]
        changes["servers"] = {"server2": {"roles": ["gateway"]}}
    edited = PROD.edit(edit)
    result = preview(edited.at(infra="db-switchover", **DNS), edited.at(infra="server1-resized", **DNS), origin="plan-walk")
    assert "db-retire-after-switchover" in result.names()
    assert "'server2' is retired but it is the applied primary" in result.messages("db-retire-after-switchover")[0]


def test_rollback_of_the_retirement_passes():
    assert not preview(SWITCHOVER, RETIRED, origin="plan-walk").mandatory


def test_retiring_a_server_no_switchover_moved_away_from_is_denied():
    def edit(s):
        s.step("infra", "old-db-retired")["changes"]["database"]["retired"] = ["server2", "server1"]
    edited = PROD.edit(edit)
    result = preview(edited.at(infra="old-db-retired", **DNS), edited.at(infra="db-switchover", **DNS), origin="plan-walk")
    [message] = result.messages("db-retire-after-switchover")
    assert "'server1' is retired but no applied switchover moved the primary away from it" in message
