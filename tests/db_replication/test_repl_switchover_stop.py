"""Stopping a running switchover: SIGINT/SIGTERM abort it at its next safe point before pg_promote (un-fence,
RESUME: no committed transaction is lost, PgBouncer is never left paused); after pg_promote it finishes the window.

Through the real CLI (a process that gets the signal) before PAUSE and during PAUSE; in-process, with the CLI's
own signal handling and a real signal, inside the window, where a test hook has to pick the moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bazbii_db.replication import PgBouncerAdmin, SwitchoverAborted, planned_switchover, read_database_entry
from bazbii_db.stopping import StopRequest, stop_on_signals
from bazbii_plan.facts import SWITCHOVER_STALL_TARGET_SECONDS
from .repl_helpers import REPO, execute, su
from .test_repl_switchover import _config, _in_recovery, _read_only, _write_through_bouncer
from testsupport.replication_topology import APP_PASSWORD, WriteLoad, hold_open, missing_acked

pytestmark = pytest.mark.timeout(120)


def _start_cli(topo, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), BAZBII_OLD_PRIMARY_DSN=su(topo),
               BAZBII_NEW_PRIMARY_DSN=su(topo, "replica"), BAZBII_PGBOUNCER_ADMIN_DSN=topo.bouncer.admin_dsn())
    return subprocess.Popen([sys.executable, "-m", "bazbii_db.replication", "--json", "switchover",
                             "--ini", str(topo.bouncer.ini_path), "--alias", topo.alias, "--new-host", "127.0.0.1",
                             "--new-port", str(topo.replica.port), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _paused(topo) -> bool:
    with PgBouncerAdmin(topo.bouncer.admin_dsn()) as admin:
        return admin.is_paused(topo.alias)


def _assert_untouched(topo, ini_before: str) -> None:
    """Nothing promoted, nothing fenced, PgBouncer resumed and still routing to the old primary."""
    assert not _paused(topo)
    assert _read_only(su(topo)) == "off" and _in_recovery(su(topo, "replica"))
    assert topo.bouncer.ini_path.read_text() == ini_before and not list(topo.workdir.glob(".pgbouncer.ini.*.tmp"))
    assert _write_through_bouncer(topo, 702, 1) == topo.primary.port


def _stopped_cli(proc: subprocess.Popen, signum: int) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and APP_PASSWORD not in out + err and "postgres-test-password" not in out + err
    return json.loads(out), err.strip().splitlines()[-1]


def _signal_the_cli(topo, signum: int, cli_args: tuple[str, ...], ready, what: str):
    """The CLI's switchover under 4 writers while a client holds a transaction open; ``signum`` is sent 0.3 s
    after ``ready()``. Returns (JSON report, last stderr line, load result, stall)."""
    held = hold_open(topo)
    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=30).start()
    proc = None
    try:
        load.wait_acked(50)
        started = time.monotonic()
        proc = _start_cli(topo, *cli_args)
        _until(ready, what)
        time.sleep(0.3)
        proc.send_signal(signum)
        report, last_line = _stopped_cli(proc, signum)
        ended = time.monotonic()
        time.sleep(0.5)
    finally:
        result = load.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
    held.commit()  # the stop left the old primary writable
    held.close()
    return report, last_line, result, result.stall_during(started, ended)


def _looking_for_long_transactions(topo) -> bool:
    """The switchover's own session has run its look for long transactions: it is in its wait."""
    return execute(su(topo), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bazbii-switchover' "
                             "AND position('FROM pg_stat_activity' in query) > 0")[0][0] > 0


def test_sigterm_while_waiting_for_a_held_transaction_stops_before_pause(fresh_topo):
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    started = time.monotonic()
    report, last_line, result, stall = _signal_the_cli(
        topo, signal.SIGTERM, ("--long-transaction-wait", "60"), lambda: _looking_for_long_transactions(topo),
        "the switchover to look for long transactions")
    assert time.monotonic() - started < 15  # it did not wait out its 60 s
    assert report["aborted"] and report["stopped_by"] == "SIGTERM" and report["stage"] == "transactions"
    assert report["window_started_at"] is None  # never paused
    assert last_line.startswith("switchover stopped by SIGTERM at transactions, old primary serving (unchanged)")
    assert "run the same command again" in last_line
    assert result.failed == [] and stall < SWITCHOVER_STALL_TARGET_SECONDS / 2
    _assert_untouched(topo, ini_before)


def test_sigint_during_pause_resumes_at_once(fresh_topo):
    """A transaction the check lets through (bound raised) holds a long PAUSE: the signal ends it, RESUMEd."""
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    report, last_line, result, stall = _signal_the_cli(
        topo, signal.SIGINT, ("--long-transaction-seconds", "600", "--pause-timeout", "30"), lambda: _paused(topo),
        "PAUSE to be pending")
    assert report["aborted"] and report["stopped_by"] == "SIGINT" and report["stage"] == "pause", report
    assert "given up" in report["error"] and any("RESUME" in e for e in report["events"])
    assert last_line.startswith("switchover stopped by SIGINT at pause, old primary serving")
    print(f"SIGINT 0.3 s into a PAUSE held by a transaction: stall {stall * 1000:.0f} ms")
    assert stall < SWITCHOVER_STALL_TARGET_SECONDS and result.failed == []
    _assert_untouched(topo, ini_before)


def _switch_over_with_a_signal_at(topo, stage: str, signum: int):
    """planned_switchover under load, inside the CLI's signal handling; ``signum`` is sent to this process
    (twice: the second must be ignored) as ``stage`` starts. Returns (report or abort, load result, stall)."""
    stop = StopRequest()

    def signal_at(name: str) -> None:
        if name == stage:
            os.kill(os.getpid(), signum)
            os.kill(os.getpid(), signum)

    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=30).start()
    outcome = None
    try:
        load.wait_acked(50)
        started = time.monotonic()
        with stop_on_signals(stop, first="stopping (test)", again="ignore"):
            try:
                outcome = planned_switchover(su(topo), su(topo, "replica"), topo.bouncer.admin_dsn(), _config(topo),
                                             on_stage=signal_at, stop=stop, stop_old_primary=topo.primary.stop)
            except SwitchoverAborted as exc:
                outcome = exc
        ended = time.monotonic()
        time.sleep(0.5)
    finally:
        result = load.stop()
    assert stop.signum == signum
    return outcome, result, result.stall_during(started, ended)


def test_sigterm_inside_the_window_before_promotion_unfences_and_resumes(fresh_topo):
    topo = fresh_topo
    ini_before = topo.bouncer.ini_path.read_text()
    outcome, result, stall = _switch_over_with_a_signal_at(topo, "catchup", signal.SIGTERM)
    assert isinstance(outcome, SwitchoverAborted), outcome
    report = outcome.report
    assert report.stage == "catchup" and report.stopped_by == "SIGTERM" and not report.promoted
    assert report.error == "stopped by SIGTERM before catchup"
    assert "un-fenced" in " ".join(report.events) and report.old_primary_state.startswith("serving")
    # Every commit acknowledged before, during and after the attempt is on the old primary: nothing lost.
    assert result.failed == [] and missing_acked(su(topo), result) == []
    assert stall < SWITCHOVER_STALL_TARGET_SECONDS
    _assert_untouched(topo, ini_before)


def test_sigterm_after_promotion_finishes_the_window(fresh_topo):
    topo = fresh_topo
    outcome, result, stall = _switch_over_with_a_signal_at(topo, "reload", signal.SIGTERM)
    assert not isinstance(outcome, Exception), outcome.report.to_text()
    assert outcome.completed and outcome.promoted and outcome.stopped_by == "SIGTERM"
    assert any("after pg_promote: the window was finished" in e for e in outcome.events)
    assert result.failed == [] and missing_acked(su(topo, "replica"), result) == []
    assert stall < SWITCHOVER_STALL_TARGET_SECONDS
    assert not _paused(topo)
    assert read_database_entry(topo.bouncer.ini_path, topo.alias)["port"] == str(topo.replica.port)
    assert _write_through_bouncer(topo, 703, 1) == topo.replica.port
