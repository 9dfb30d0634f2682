"""components/providers/replication.py: under Pulumi mocks, and create() against real servers.

The real-server tests use a non-superuser operations role with exactly the grants from
bazbii_db.replication.grants, as the PostgresCluster component does with its replication user.
"""

from __future__ import annotations

import time

import psycopg
import pulumi
import pytest

from repl_helpers import execute, su
from testsupport.replication_topology import APP_DB, WriteLoad, missing_acked
from bazbii_db.replication import apply_ops_grants
from components.providers.replication import (PlannedSwitchover, PlannedSwitchoverProvider, ReplicaLagGate,
                                              ReplicaLagGateProvider)

pytestmark = pytest.mark.timeout(120)

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi's special secret signature
OPS_USER, OPS_PASSWORD = "bazbii_ops", "ops-test-password"


def _ops_dsn(cluster) -> str:
    return cluster.dsn(dbname=APP_DB, user=OPS_USER, password=OPS_PASSWORD)


def _make_ops_role(topo) -> None:
    exists = execute(topo.primary.dsn(), "SELECT 1 FROM pg_roles WHERE rolname = %s", (OPS_USER,))
    if not exists:
        execute(topo.primary.dsn(), f"CREATE ROLE {OPS_USER} LOGIN REPLICATION PASSWORD '{OPS_PASSWORD}'")
        # Function grants are per database: apply them in the one the operational DSNs use.
        apply_ops_grants(topo.primary.dsn(dbname=APP_DB), OPS_USER)
    lsn = execute(topo.primary.dsn(), "SELECT pg_current_wal_lsn()::text")[0][0]
    deadline = time.monotonic() + 10
    while not execute(topo.replica.dsn(), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert execute(_ops_dsn(topo.primary), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]


# --------------------------------------------------------------------------- Pulumi mocks
class _Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        outputs.update({"passed": True, "completed": True})
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


_mocks = _Mocks()


@pytest.fixture
def pulumi_mocks():
    # Set per test, not at import: other test directories install their own mocks.
    pulumi.runtime.set_mocks(_mocks, preview=False)
    yield _mocks


@pulumi.runtime.test
def test_resources_construct_under_mocks_with_secret_dsns(pulumi_mocks):
    gate = ReplicaLagGate("gate", primary_dsn="host=10.0.0.2 password=p1", replica_dsn="host=10.0.0.3 password=p2",
                          slot="server3", max_lag_bytes=1 << 20, window_seconds=1.0, timeout_seconds=30.0,
                          check_consistency=True)
    switch = PlannedSwitchover("switch", old_primary_dsn="host=10.0.0.2 password=p1",
                               new_primary_dsn="host=10.0.0.3 password=p2",
                               pgbouncer_admin_dsn="host=127.0.0.1 password=p3",
                               pgbouncer_ini_path="/etc/pgbouncer/pgbouncer.ini", database_alias="bazbii",
                               new_host="10.0.0.3", new_port=5432, pause_timeout_seconds=5.0, max_lag_bytes=1 << 20)

    def check(values):
        passed, completed, gate_urn, switch_urn, report = values
        assert passed is True and completed is True
        assert "ReplicaLagGate" in gate_urn and "PlannedSwitchover" in switch_urn
        by_type = {r.typ: r for r in _mocks.resources}
        gate_args = by_type["pulumi-python:dynamic/bazbii:ReplicaLagGate"]
        switch_args = by_type["pulumi-python:dynamic/bazbii:PlannedSwitchover"]
        assert gate_args.inputs["slot"] == "server3" and gate_args.inputs["check_consistency"] is True
        for args, key in ((gate_args, "primary_dsn"), (gate_args, "replica_dsn"), (switch_args, "old_primary_dsn"),
                          (switch_args, "new_primary_dsn"), (switch_args, "pgbouncer_admin_dsn")):
            value = args.inputs[key]
            # Registered as a secret: the engine receives the secret envelope, not a plain string.
            assert isinstance(value, dict) and SECRET_SIG in value.values(), (key, value)
            assert value["value"].startswith("host=")
        assert "__provider" in gate_args.inputs and "__provider" in switch_args.inputs
        assert switch_args.inputs["new_port"] == 5432 and switch_args.inputs["database_alias"] == "bazbii"

    return pulumi.Output.all(gate.passed, switch.completed, gate.urn, switch.urn, gate.report).apply(check)


def test_provider_check_and_diff_rules():
    gate = ReplicaLagGateProvider()
    bad = gate.check({}, {"slot": "Bad-Slot", "max_lag_bytes": 0, "window_seconds": 5, "timeout_seconds": 1})
    assert {f.property for f in bad.failures} >= {"slot", "max_lag_bytes"}
    ok = gate.check({}, {"slot": "s1", "max_lag_bytes": 10, "window_seconds": 1, "timeout_seconds": 5})
    assert ok.failures == []
    olds = {"slot": "s1", "max_lag_bytes": 10, "window_seconds": 1, "timeout_seconds": 5,
            "check_consistency": False, "passed": True, "primary_target": "h:5432/d as u",
            "replica_target": "r:5432/d as u"}
    same = dict(olds, primary_dsn="host=h port=5432 dbname=d user=u password=x",
                replica_dsn="host=r port=5432 dbname=d user=u password=y")
    assert gate.diff("id", olds, same).changes is False
    assert gate.diff("id", olds, dict(same, max_lag_bytes=20)).changes is True
    assert gate.diff("id", dict(olds, passed=False), same).changes is True

    switch = PlannedSwitchoverProvider()
    base = {"database_alias": "app", "new_host": "10.0.0.3", "new_port": 5432,
            "pgbouncer_ini_path": "/etc/pgbouncer/pgbouncer.ini"}
    assert switch.diff("id", base, dict(base, pause_timeout_seconds=9, old_primary_dsn="x")).changes is False
    moved = switch.diff("id", base, dict(base, new_host="10.0.0.4"))
    assert moved.changes is True and moved.replaces == ["new_host"]
    assert switch.delete("id", base) is None
    bad = switch.check({}, dict(base, database_alias="bad alias", pgbouncer_ini_path="rel.ini",
                                pause_timeout_seconds=5, max_lag_bytes=1))
    assert {f.property for f in bad.failures} == {"database_alias", "pgbouncer_ini_path"}


# --------------------------------------------------------------------------- real servers
def test_lag_gate_provider_create_against_real_servers(shared_topo):
    _make_ops_role(shared_topo)
    props = {"primary_dsn": _ops_dsn(shared_topo.primary), "replica_dsn": _ops_dsn(shared_topo.replica),
             "slot": shared_topo.slot, "max_lag_bytes": 1 << 20, "window_seconds": 0.5, "timeout_seconds": 15.0,
             "check_consistency": True}
    result = ReplicaLagGateProvider().create(props)
    outs = result.outs
    assert outs["passed"] is True and outs["tables_compared"] >= 2 and outs["tables_differing"] == []
    assert outs["measured_max_lag_bytes"] is not None and outs["measured_max_lag_bytes"] < 1 << 20
    assert outs["checked_lsn"] and outs["primary_target"].endswith(f"as {OPS_USER}")
    assert OPS_PASSWORD not in repr(outs) and "dsn" not in " ".join(outs)

    with pytest.raises(RuntimeError, match="lag gate FAILED") as failed:
        ReplicaLagGateProvider().create(dict(props, slot="no_such_slot", timeout_seconds=1.0, window_seconds=0.3))
    assert OPS_PASSWORD not in str(failed.value)


def test_switchover_provider_create_against_real_servers(fresh_topo):
    topo = fresh_topo
    _make_ops_role(topo)
    props = {"old_primary_dsn": _ops_dsn(topo.primary), "new_primary_dsn": _ops_dsn(topo.replica),
             "pgbouncer_admin_dsn": topo.bouncer.admin_dsn(), "pgbouncer_ini_path": str(topo.bouncer.ini_path),
             "database_alias": topo.alias, "new_host": "127.0.0.1", "new_port": topo.replica.port,
             "pause_timeout_seconds": 5.0, "max_lag_bytes": 1 << 20}
    provider = PlannedSwitchoverProvider()
    with pytest.raises(RuntimeError, match="not found on this machine"):
        provider.create(dict(props, pgbouncer_ini_path="/nonexistent/pgbouncer.ini"))

    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=30).start()
    try:
        load.wait_acked(100)
        result = provider.create(props)
        time.sleep(0.5)
    finally:
        stats = load.stop()
    outs = result.outs
    assert outs["completed"] and outs["promoted"] and not outs["already_done"], outs["report"]
    assert stats.failed == [] and missing_acked(su(topo, "replica"), stats) == []
    assert outs["fenced_lsn"] == outs["replica_replay_lsn"]
    assert outs["old_primary_state"].startswith("fenced")  # the retirement step stops it
    assert OPS_PASSWORD not in repr(outs) and topo.bouncer.admin_password not in repr(outs)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        execute(su(topo), "INSERT INTO ledger (writer, seq) VALUES (999, 1)")

    # Same target again (e.g. state lost, or a retried update): rolls forward, promotes nothing.
    again = provider.create(props)
    assert again.outs["already_done"] is True and again.outs["completed"] is True
    assert provider.diff(result.id, outs, dict(props, pause_timeout_seconds=1.0)).changes is False
