"""Planned switchover through PgBouncer under write load, and its abort paths."""

from __future__ import annotations

import subprocess
import time

import psycopg
import pytest

from .repl_helpers import execute, su
from testsupport.replication_topology import APP_DB, APP_PASSWORD, WriteLoad, missing_acked
from testsupport.localcluster import pg_bin_dir
from bazbii_db.replication import (SwitchoverAborted, SwitchoverConfig, planned_switchover, read_database_entry,
                                   reattach_standby_script, verify_streaming)

pytestmark = pytest.mark.timeout(120)


def _config(topo, **overrides) -> SwitchoverConfig:
    values = dict(database_alias=topo.alias, pgbouncer_ini_path=str(topo.bouncer.ini_path), new_host="127.0.0.1",
                  new_port=topo.replica.port)
    values.update(overrides)
    return SwitchoverConfig(**values)


def _in_recovery(dsn: str) -> bool:
    return execute(dsn, "SELECT pg_is_in_recovery()")[0][0]


def _read_only(dsn: str) -> str:
    return execute(dsn, "SHOW default_transaction_read_only")[0][0]


def _write_through_bouncer(topo, writer: int, seq: int, timeout: float = 5.0) -> int:
    """One committed write via PgBouncer; returns the port of the server that took it."""
    with psycopg.connect(topo.app_dsn(), autocommit=True, prepare_threshold=None, connect_timeout=int(timeout)) as c:
        c.execute("INSERT INTO ledger (writer, seq) VALUES (%s, %s)", (writer, seq))
        return c.execute("SELECT inet_server_port()").fetchone()[0]


def test_switchover_under_write_load_loses_nothing(fresh_topo):
    topo = fresh_topo
    load = WriteLoad(topo.app_dsn(), threads=6, max_seconds=30).start()
    try:
        load.wait_acked(300, timeout=15)
        time.sleep(0.5)
        acked_before = len(load.result.acked)
        report = planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo),
                                    stop_old_primary=topo.primary.stop)
        switched_at = time.monotonic()
        time.sleep(1.0)  # traffic must keep flowing on the new primary
    finally:
        result = load.stop()

    assert report.completed and report.promoted and not report.aborted, report.to_text()
    assert result.failed == [] and result.in_doubt == [], result.failed[:5]
    assert acked_before > 0 and sum(1 for _, _, t in result.acked if t > switched_at) > 50
    assert missing_acked(su(topo, "replica"), result) == []  # every acknowledged commit is on the new primary
    assert report.fenced_lsn == report.replica_replay_lsn
    assert set(report.steps_ms) >= {"pause", "fence", "lsn", "catchup", "promote", "reload", "resume"}
    stall, _ = result.max_stall()
    assert stall < 2.0, f"write stall {stall:.3f} s"  # loose bound for a loaded 2-core CI box; bench measures it
    assert not _in_recovery(su(topo, "replica"))
    assert not topo.primary.is_running() and report.old_primary_state.startswith("stopped")
    entry = read_database_entry(topo.bouncer.ini_path, topo.alias)
    assert entry["port"] == str(topo.replica.port) and entry["dbname"] == APP_DB
    assert _write_through_bouncer(topo, 900, 1) == topo.replica.port
    assert "postgres-test-password" not in report.to_text() and APP_PASSWORD not in report.to_text()

    # Re-running is idempotent: nothing to do, nothing touched.
    again = planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo))
    assert again.completed and again.already_done

    # The stopped old primary is re-attachable as a standby of the new one with pg_rewind.
    old = topo.primary
    script = reattach_standby_script(datadir=str(old.datadir), new_primary_host="127.0.0.1",
                                     new_primary_port=topo.replica.port, rewind_user="postgres",
                                     slot="server2_standby", passfile=str(topo.workdir / "rewind.pgpass"),
                                     pg_bin=str(pg_bin_dir()))
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                              "BAZBII_REPLICATION_PASSWORD": topo.replica.password})
    assert run.returncode == 0, run.stderr
    assert topo.replica.password not in (old.datadir / "postgresql.auto.conf").read_text()
    old.write_conf()  # the local test layout keeps port settings in an include pg_rewind overwrote
    old.start()
    status = verify_streaming(topo.replica.dsn(), "server2_standby", timeout=20)
    assert status.streaming
    assert _in_recovery(su(topo)) and execute(su(topo), "SELECT count(*) FROM ledger WHERE writer = 900")[0][0] == 1


def test_catch_up_timeout_unfences_and_resumes(fresh_topo):
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    load = WriteLoad(topo.app_dsn(), threads=2, max_seconds=20).start()

    def stall_replica(stage: str) -> None:
        if stage == "pause":  # after the pre-check passed: freeze replay and add WAL it will not see
            execute(su(topo, "replica"), "SELECT pg_wal_replay_pause()")
            execute(su(topo), "INSERT INTO ledger (writer, seq) SELECT 800, g FROM generate_series(1, 100) g")

    try:
        load.wait_acked(20)
        started = time.monotonic()
        with pytest.raises(SwitchoverAborted) as caught:
            planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(),
                               _config(topo, catchup_timeout=0.3), on_stage=stall_replica)
        assert time.monotonic() - started < 3.0
        acked = len(load.result.acked)
        time.sleep(0.5)
        resumed = len(load.result.acked) - acked
    finally:
        result = load.stop()
        execute(su(topo, "replica"), "SELECT pg_wal_replay_resume()")
    report = caught.value.report
    assert report.stage == "catchup" and report.aborted and not report.promoted, report.to_text()
    assert "un-fenced" in " ".join(report.events) and report.old_primary_state.startswith("serving")
    assert resumed > 10, "traffic did not resume on the old primary after the abort"
    assert result.failed == []  # writers saw a stall, never an error (the fence was lifted before RESUME)
    assert _read_only(su(topo)) == "off" and _in_recovery(su(topo, "replica"))
    assert topo.bouncer.ini_path.read_text() == ini_before
    assert not list(topo.workdir.glob(".pgbouncer.ini.*.tmp"))
    assert _write_through_bouncer(topo, 801, 1) == topo.primary.port


def test_precheck_refuses_paused_or_stopped_replica_without_touching_anything(fresh_topo):
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    execute(su(topo, "replica"), "SELECT pg_wal_replay_pause()")
    with pytest.raises(SwitchoverAborted) as caught:
        planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo))
    assert caught.value.report.stage == "precheck" and "paused" in caught.value.report.error
    execute(su(topo, "replica"), "SELECT pg_wal_replay_resume()")
    # A role without the switchover grants is refused before the window, with the missing grants named.
    execute(su(topo), "CREATE ROLE weak LOGIN PASSWORD 'weak-password'")
    weak = [c.dsn(dbname=APP_DB, user="weak", password="weak-password") for c in (topo.primary, topo.replica)]
    time.sleep(0.3)  # let the role replicate
    with pytest.raises(SwitchoverAborted) as caught:
        planned_switchover(weak[0], weak[1], topo.bouncer.admin_dsn(), _config(topo))
    assert caught.value.report.stage == "precheck" and "pg_promote" in caught.value.report.error
    assert "pg_reload_conf" in caught.value.report.error and "weak-password" not in str(caught.value)
    topo.replica.stop()
    with pytest.raises(SwitchoverAborted) as caught:
        planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo))
    assert caught.value.report.stage == "precheck" and "cannot connect" in caught.value.report.error
    assert "postgres-test-password" not in str(caught.value)
    assert _read_only(su(topo)) == "off" and topo.bouncer.ini_path.read_text() == ini_before
    assert _write_through_bouncer(topo, 802, 1) == topo.primary.port


def test_flush_wal_flushes_a_non_commit_record_on_a_fenced_primary(shared_topo):
    """Under PAUSE nothing commits after the fence; a last non-commit WAL record would wait for a hibernating WAL
    writer (up to 25 x wal_writer_delay) and the switchover would abort. flush_wal flushes it at once."""
    from bazbii_db.replication._conn import connect
    from bazbii_db.replication.lsn import parse_lsn
    from bazbii_db.replication.switchover import fence, flush_wal, unfence

    with connect(su(shared_topo)) as conn:
        fence(conn)
        try:
            conn.execute("SELECT pg_logical_emit_message(false, 'test', 'a record no commit follows')")
            target = parse_lsn(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
            flush_wal(conn)
            flushed = parse_lsn(conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0])
            assert flushed >= target
            # the fence still holds for every other transaction
            assert conn.execute("SELECT current_setting('default_transaction_read_only')").fetchone()[0] == "on"
        finally:
            unfence(conn)
