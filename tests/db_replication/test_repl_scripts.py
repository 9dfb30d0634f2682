"""The generated replica-setup and retirement scripts, run for real against the local primary."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess

import pytest

from .repl_helpers import execute
from testsupport.localcluster import LocalCluster, free_port, pg_bin_dir
from bazbii_db.replication.errors import SlotActive
from bazbii_db.replication import (GateConfig, drop_replication_slot, replica_setup_script, retire_primary_script,
                                   run_lag_gate, verify_streaming)

pytestmark = pytest.mark.timeout(90)

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _run(script: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=timeout)


def test_replica_script_builds_a_streaming_replica_and_retire_script_stops_it(shared_topo):
    primary = shared_topo.primary
    datadir = shared_topo.workdir / "script_replica"
    passfile = shared_topo.workdir / "script.pgpass"
    script = replica_setup_script(primary_host="127.0.0.1", primary_port=primary.port, replication_user="postgres",
                                  slot="script_replica", datadir=str(datadir), passfile=str(passfile),
                                  pg_bin=str(pg_bin_dir()))
    assert primary.password not in script

    missing = _run(script, ENV)
    assert missing.returncode == 2 and "BAZBII_REPLICATION_PASSWORD" in missing.stderr

    run = _run(script, dict(ENV, BAZBII_REPLICATION_PASSWORD=primary.password))
    assert run.returncode == 0, run.stderr
    assert primary.password not in run.stdout + run.stderr
    mode = stat.S_IMODE(passfile.stat().st_mode)
    assert mode == 0o600
    if os.geteuid() == 0:
        assert pwd.getpwuid(passfile.stat().st_uid).pw_name == "postgres"
    auto = (datadir / "postgresql.auto.conf").read_text()
    assert f"passfile=''{passfile}''" in auto  # quotes doubled inside the conf string
    assert "password=" not in auto and "primary_slot_name = 'script_replica'" in auto
    assert (datadir / "standby.signal").exists()
    slot = execute(primary.dsn(), "SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'script_replica'")
    assert slot == [("physical",)]

    again = _run(script, dict(ENV, BAZBII_REPLICATION_PASSWORD=primary.password))
    assert again.returncode == 3 and "non-empty" in again.stderr

    replica = LocalCluster(datadir=datadir, port=free_port(), password=primary.password,
                           extra_conf=dict(primary.extra_conf))
    replica.write_conf()
    replica.start()
    try:
        assert verify_streaming(primary.dsn(), "script_replica", timeout=20).streaming
        # application_name given to pg_basebackup is carried into primary_conninfo too.
        assert verify_streaming(primary.dsn(), "script_replica", timeout=5).state == "streaming"
        gate = run_lag_gate(primary.dsn(), "script_replica", config=GateConfig(window_seconds=0.5, timeout_seconds=10))
        assert gate.passed, gate.to_text()

        retire = retire_primary_script(systemd_unit=None, debian_start_conf=str(shared_topo.workdir / "start.conf"),
                                       datadir=str(datadir), pg_bin=str(pg_bin_dir()))
        out = _run(retire, ENV)
        assert out.returncode == 0, out.stderr
        assert not replica.is_running()
        assert (shared_topo.workdir / "start.conf").read_text().strip().endswith("disabled")
        assert _run(retire, ENV).returncode == 0  # idempotent on a stopped server
    finally:
        replica.stop()
    with pytest.raises(SlotActive, match="active"):
        drop_replication_slot(primary.dsn(), shared_topo.slot)  # the shared replica is using its slot
    assert drop_replication_slot(primary.dsn(), "script_replica") is True
    assert drop_replication_slot(primary.dsn(), "script_replica") is False
