"""A transaction held open through PgBouncer across the switchover costs the other clients at most 1 s of stall.

Real primary + streaming replica + PgBouncer (transaction pool mode) on loopback, under a write load
whose every acknowledged commit is recorded; the stall is the longest gap between two acknowledged
commits while the switchover runs.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import psycopg
import pytest

from bazbii_db.replication import PgBouncerAdmin, SwitchoverAborted, planned_switchover, read_database_entry
from bazbii_plan.facts import DEFAULT_PAUSE_TIMEOUT_SECONDS, SWITCHOVER_STALL_TARGET_SECONDS
from .repl_helpers import execute, su
from .test_repl_switchover import _config, _in_recovery, _read_only, _write_through_bouncer
from testsupport.replication_topology import APP_PASSWORD, WriteLoad, hold_open, missing_acked

pytestmark = pytest.mark.timeout(120)
HELD_APP = "held-open-client"


def test_a_transaction_held_open_before_the_switchover_is_waited_out_unpaused_then_named(fresh_topo):
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    held = hold_open(topo, HELD_APP)
    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=30).start()
    try:
        load.wait_acked(50)
        time.sleep(0.3)  # the held transaction is now older than the bound (0.25 s)
        started = time.monotonic()
        with pytest.raises(SwitchoverAborted) as caught:
            planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(),
                               _config(topo, long_transaction_wait=1.5))
        ended = time.monotonic()
        time.sleep(0.8)
    finally:
        result = load.stop()
    report = caught.value.report
    assert report.stage == "transactions" and report.aborted and not report.promoted, report.to_text()
    assert report.window_started_at is None and "pause" not in report.steps_ms  # PAUSE was never sent
    assert 1.5 <= ended - started < 4.0
    # The message names the session (the client behind the pooler too), never its query or a password.
    assert f"application {HELD_APP!r}" in report.error and "idle in transaction for" in report.error
    assert "PgBouncer client 127.0.0.1:" in report.error
    # the wait it reports is the one it did: at least the bound, at most what the test measured around it
    waited = re.search(r"after waiting ([0-9.]+) s without pausing", report.error)
    assert waited and 1.5 <= float(waited.group(1)) <= round(ended - started, 1) + 0.05, report.error
    assert "INSERT" not in report.error and APP_PASSWORD not in report.error
    assert "postgres-test-password" not in report.to_text()
    stall = result.stall_during(started, ended)
    print(f"held open before the switchover, aborted unpaused after 1.5 s: stall {stall * 1000:.0f} ms")
    assert stall < SWITCHOVER_STALL_TARGET_SECONDS / 2, f"stall {stall:.3f} s though nothing was paused"
    assert result.failed == []
    assert _read_only(su(topo)) == "off" and _in_recovery(su(topo, "replica"))
    assert topo.bouncer.ini_path.read_text() == ini_before and not list(topo.workdir.glob(".pgbouncer.ini.*.tmp"))
    held.commit()
    held.close()
    assert execute(su(topo), "SELECT count(*) FROM ledger WHERE writer = 700")[0][0] == 1


def test_a_held_transaction_that_ends_during_the_wait_lets_the_switchover_complete(fresh_topo):
    topo = fresh_topo
    held = hold_open(topo, HELD_APP)
    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=30).start()
    committed: list[float] = []

    def commit() -> None:
        committed.append(time.monotonic())  # before it is sent: nothing can see it end earlier
        held.commit()

    # 2 s after the switchover starts: its pre-check first (which took ~0.9 s on a busy CI machine), then its wait
    release = threading.Timer(2.0, commit)
    try:
        load.wait_acked(50)
        time.sleep(0.3)
        started = time.monotonic()
        release.start()
        report = planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo),
                                    stop_old_primary=topo.primary.stop)
        ended = time.monotonic()
        time.sleep(0.8)
    finally:
        release.join()
        result = load.stop()
        held.close()
    assert report.completed and report.promoted, report.to_text()
    # it waited for the held transaction, unpaused: PAUSE only after the client committed
    assert report.steps_ms["transactions"] > 0 and report.window_started_at >= committed[0], report.to_text()
    assert report.window_started_at - started >= 0.7
    assert any("unpaused" in e and HELD_APP in e for e in report.events), report.events
    stall = result.stall_during(started, ended)
    print(f"held open before the switchover, committed 1 s later: switchover completed, stall {stall * 1000:.0f} ms, "
          f"window {report.window_ms:.0f} ms")
    assert stall < SWITCHOVER_STALL_TARGET_SECONDS, f"stall {stall:.3f} s"
    assert result.failed == [] and missing_acked(su(topo, "replica"), result) == []
    assert execute(su(topo, "replica"), "SELECT count(*) FROM ledger WHERE writer = 700")[0][0] == 1  # not lost
    assert read_database_entry(topo.bouncer.ini_path, topo.alias)["port"] == str(topo.replica.port)


def test_a_transaction_begun_right_before_pause_costs_at_most_the_pause_timeout(fresh_topo):
    """The check cannot see a transaction begun after it: PAUSE's own (short) timeout bounds what it costs."""
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    holder: list[psycopg.Connection] = []

    def begin_after_the_check(stage: str) -> None:
        if stage == "pause":  # the check passed; this transaction starts before PAUSE and stays open
            holder.append(hold_open(topo, HELD_APP))

    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=30).start()
    try:
        load.wait_acked(50)
        started = time.monotonic()
        with pytest.raises(SwitchoverAborted) as caught:
            planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo),
                               on_stage=begin_after_the_check)
        ended = time.monotonic()
        acked_at_abort = len(load.result.acked)
        time.sleep(0.8)
        resumed = len(load.result.acked) - acked_at_abort
    finally:
        result = load.stop()
    report = caught.value.report
    assert report.stage == "pause" and report.aborted and not report.promoted, report.to_text()
    assert f"did not complete within {DEFAULT_PAUSE_TIMEOUT_SECONDS:g} s" in report.error
    stall = result.stall_during(started, ended)
    print(f"begun right before PAUSE: aborted at the PAUSE timeout ({DEFAULT_PAUSE_TIMEOUT_SECONDS:g} s), "
          f"stall {stall * 1000:.0f} ms")
    # The clients waited out the PAUSE timeout (that is what the stall measures), and no more than the target.
    assert DEFAULT_PAUSE_TIMEOUT_SECONDS * 0.8 <= stall < SWITCHOVER_STALL_TARGET_SECONDS, f"stall {stall:.3f} s"
    assert resumed > 10, "traffic did not resume after the PAUSE timeout"
    assert result.failed == []
    # Nothing promoted, nothing fenced, PgBouncer untouched and still routing to the old primary.
    assert _in_recovery(su(topo, "replica")) and _read_only(su(topo)) == "off"
    assert topo.bouncer.ini_path.read_text() == ini_before
    assert not list(topo.workdir.glob(".pgbouncer.ini.*.tmp"))  # the staged ini was discarded
    assert _write_through_bouncer(topo, 701, 1) == topo.primary.port
    holder[0].commit()
    holder[0].close()
    assert execute(su(topo), "SELECT count(*) FROM ledger WHERE writer = 700")[0][0] == 1


def test_a_server_login_in_progress_is_waited_for_before_pause(fresh_topo):
    """PAUSE would cut a server login short, which PgBouncer takes for a failed login (no new server connection
    for server_login_retry, new clients failed fast). The switchover waits for it, unpaused."""
    topo = fresh_topo
    postmaster = int((topo.primary.datadir / "postmaster.pid").read_text().split()[0])
    connected: list[object] = []

    def first_client() -> None:  # the pool has no server yet: PgBouncer logs one in for this client
        try:
            with psycopg.connect(topo.app_dsn(), autocommit=True, prepare_threshold=None, connect_timeout=10) as c:
                connected.append(c.execute("SELECT inet_server_port()").fetchone()[0])
        except psycopg.Error as exc:
            connected.append(exc)

    client = threading.Thread(target=first_client)
    resume = threading.Timer(1.0, os.kill, (postmaster, signal.SIGCONT))

    def stall_the_login(stage: str) -> None:
        if stage == "transactions":  # the pre-check is done: its connections exist, the postmaster may sleep
            os.kill(postmaster, signal.SIGSTOP)  # accepted TCP connections get no answer: the login hangs
            client.start()
            deadline = time.monotonic() + 5
            with PgBouncerAdmin(topo.bouncer.admin_dsn()) as admin:
                while not any(row["sv_login"] for row in admin.show("pools") if row["database"] == topo.alias):
                    assert time.monotonic() < deadline, "PgBouncer did not start a server login"
                    time.sleep(0.01)
            resume.start()

    try:
        report = planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo),
                                    on_stage=stall_the_login, stop_old_primary=topo.primary.stop)
    finally:
        if topo.primary.is_running():
            os.kill(postmaster, signal.SIGCONT)
        resume.cancel()
        client.join(timeout=15)
    assert report.completed, report.to_text()
    assert report.steps_ms["transactions"] >= 800, report.steps_ms  # PAUSE waited for the login to finish
    assert any("server login(s) in progress" in e for e in report.events), report.events
    # the client was served (before the window by the old primary, or held by PAUSE and then by the new one)
    assert connected in ([topo.primary.port], [topo.replica.port]), connected
