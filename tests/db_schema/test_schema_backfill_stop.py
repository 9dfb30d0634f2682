"""Stopping a running backfill: SIGTERM/SIGINT to the real CLI stops it after the batch in flight, journaled,
and a second run resumes and completes with every row done exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from bazbii_db.migrations.journal import Journal

from .conftest import REPO, apply_all, execute, fetch, runner, write_migration
from .test_schema_backfill import hits_histogram, quiet

pytestmark = pytest.mark.timeout(90)

ROWS = 6000
GATE = 4242  # an advisory lock every batch takes (shared) before it changes a row: the test holds a batch in flight
# hits + 1 is deliberately not idempotent: a row done twice shows hits = 2. The uncorrelated subquery runs
# once per batch statement (an InitPlan), taking the gate's shared lock for the batch's transaction.
MIGRATION = ('[[backfill]]\nname = "hits"\ntable = "counters"\n'
             f'set = {{ hits = "hits + 1 + (SELECT 0 FROM pg_advisory_xact_lock_shared({GATE}))" }}\n'
             'batch_size = 100\npause_ms = 20\n')


@pytest.fixture
def counters(db, small_dir):
    shutil.rmtree(small_dir / "0002_add_category")
    apply_all(db, small_dir, "0001_init")
    write_migration(small_dir, "0007_counters", MIGRATION,
                    expand="CREATE TABLE IF NOT EXISTS counters (id bigint PRIMARY KEY, hits integer NOT NULL DEFAULT 0);\n")
    runner(db, small_dir).apply("0007_counters", "expand")
    execute(db, "INSERT INTO counters (id) SELECT g * 3 FROM generate_series(1, %s) g", (ROWS,))  # keys with gaps
    return db, small_dir


def _start_cli(db: str, migrations: os.PathLike) -> subprocess.Popen:
    env = dict(os.environ, SCHEMA_TEST_DSN=db, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "bazbii_db.migrations", "--migrations-dir", str(migrations),
                             "apply", "--dsn-env", "SCHEMA_TEST_DSN", "--migration", "0007_counters",
                             "--stage", "migrate", "--progress-interval-s", "0.2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint(db: str) -> tuple[int, int, int, bool]:
    """(last_key, batches, rows_changed, finished) as committed."""
    rows = fetch(db, "SELECT last_key, batches, rows_changed, finished_at IS NOT NULL "
                     "FROM bazbii_migrations.backfill_checkpoint") \
        if fetch(db, "SELECT to_regclass('bazbii_migrations.backfill_checkpoint')")[0][0] else []
    return rows[0] if rows else (0, 0, 0, False)


def _wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def _batch_waiting_on_gate(db: str) -> bool:
    return fetch(db, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                     "WHERE l.locktype = 'advisory' AND l.objid = %s AND NOT l.granted "
                     "AND a.application_name LIKE 'bazbii-migrate%%'", (GATE,))[0][0] == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_backfill_after_the_batch_in_flight_and_a_rerun_finishes_it_exactly_once(counters, signum):
    db, migrations = counters
    proc = _start_cli(db, migrations)
    gate = psycopg.connect(db, autocommit=True)
    try:
        _wait(lambda: _checkpoint(db)[1] >= 5, "five committed batches")
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))  # the next batch blocks inside its transaction
        _wait(lambda: _batch_waiting_on_gate(db), "a batch in flight, waiting on the gate")
        key_at_signal, batches_at_signal, _, _ = _checkpoint(db)  # stable: the batch in flight cannot commit
        proc.send_signal(signum)
        time.sleep(0.3)  # the stop request is in; the batch is still held in flight (lock_timeout is 1 s)
        assert proc.poll() is None and _checkpoint(db)[1] == batches_at_signal
        gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        out, err = proc.communicate(timeout=30)
    finally:
        gate.close()
        if proc.poll() is None:
            proc.kill()

    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"0007_counters/migrate STOPPED: backfill hits: stopped by {name}"), err
    assert "run the same command again" in last_line and "Traceback" not in err
    # Stopped after exactly the batch that was in flight: it committed, nothing after it started.
    last_key, batches, rows_changed, finished = _checkpoint(db)
    assert batches == batches_at_signal + 1 and last_key > key_at_signal and not finished
    assert f"checkpoint at key {last_key} of {ROWS * 3}" in last_line
    assert fetch(db, "SELECT count(*) FILTER (WHERE hits = 1 AND id <= %s), count(*) FILTER (WHERE hits = 0 AND id > %s),"
                     " count(*) FILTER (WHERE hits > 1) FROM counters", (last_key, last_key)) == \
        [(rows_changed, ROWS - rows_changed, 0)]
    # The journal says the step stopped, and where.
    with psycopg.connect(db, autocommit=True) as conn:
        entry = Journal(conn).get("0007_counters", "migrate")
    assert entry.status == "failed" and f"stopped by {name}" in entry.last_error
    assert f"checkpoint at key {last_key}" in entry.last_error
    status = subprocess.run([sys.executable, "-m", "bazbii_db.migrations", "--migrations-dir", str(migrations),
                             "status", "--dsn-env", "SCHEMA_TEST_DSN"], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, SCHEMA_TEST_DSN=db, PYTHONPATH=str(REPO)), timeout=60)
    assert status.returncode == 0, status.stderr
    assert ["0007_counters/hits", "counters", str(last_key), str(ROWS * 3), str(rows_changed), str(batches)] in \
        [line.split()[:6] for line in status.stdout.splitlines()]
    assert f"0007_counters/migrate failed: BackfillStopped: backfill hits: stopped by {name}" in status.stdout

    # A second run resumes at the checkpoint and completes: every row exactly once.
    res = runner(db, migrations, backfill=quiet()).apply("0007_counters", "migrate")
    b = res.backfills[0]
    assert res.status == "applied" and b.resumed_from_key == last_key
    assert b.rows_changed == ROWS - rows_changed and b.total_rows_changed == ROWS
    assert hits_histogram(db) == [(1, ROWS)]


def test_a_second_signal_stops_at_once_mid_batch_and_nothing_is_lost_or_done_twice(counters):
    db, migrations = counters
    proc = _start_cli(db, migrations)
    gate = psycopg.connect(db, autocommit=True)
    try:
        _wait(lambda: _checkpoint(db)[1] >= 3, "three committed batches")
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
        _wait(lambda: _batch_waiting_on_gate(db), "a batch in flight, waiting on the gate")
        _, batches_at_signal, _, _ = _checkpoint(db)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)  # while the batch still waits on the gate
        # The batch's lock wait times out (lock_timeout 1 s): it rolls back with its checkpoint.
        _wait(lambda: not _batch_waiting_on_gate(db), "the killed batch to go away")
    finally:
        gate.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM  # ended by the signal itself, as without a handler
    last_key, batches, rows_changed, _ = _checkpoint(db)
    assert batches == batches_at_signal
    assert fetch(db, "SELECT count(*) FILTER (WHERE hits = 1 AND id <= %s), count(*) FILTER (WHERE hits <> 1)"
                     " FROM counters", (last_key,)) == [(rows_changed, ROWS - rows_changed)]
    res = runner(db, migrations, backfill=quiet()).apply("0007_counters", "migrate")
    assert res.backfills[0].resumed_from_key == last_key and hits_histogram(db) == [(1, ROWS)]


def _start_cli_as_pid_1(db: str, migrations: os.PathLike) -> tuple[subprocess.Popen, int]:
    """The CLI as PID 1 of its own PID namespace, as in a Kubernetes Job's container; returns (unshare, CLI pid)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a PID namespace")
    env = dict(os.environ, SCHEMA_TEST_DSN=db, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "bazbii_db.migrations",
                             "--migrations-dir", str(migrations), "apply", "--dsn-env", "SCHEMA_TEST_DSN",
                             "--migration", "0007_counters", "--stage", "migrate"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    child = _wait(lambda: children.read_text().split(), "the CLI to start in its PID namespace")
    return proc, int(child[0])


@pytest.mark.parametrize("signals", [1, 2], ids=["one SIGTERM", "two SIGTERMs"])
def test_as_pid_1_of_a_container_sigterm_stops_it_too(counters, signals):
    """A Job's container: the kernel gives PID 1 only the signals it handles (kubectl delete pod sends SIGTERM)."""
    db, migrations = counters
    proc, cli = _start_cli_as_pid_1(db, migrations)
    gate = psycopg.connect(db, autocommit=True)
    try:
        _wait(lambda: _checkpoint(db)[1] >= 3, "three committed batches")
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
        _wait(lambda: _batch_waiting_on_gate(db), "a batch in flight, waiting on the gate")
        _, batches_at_signal, _, _ = _checkpoint(db)
        for _ in range(signals):
            os.kill(cli, signal.SIGTERM)
            time.sleep(0.2)
        # One signal waits for the batch in flight; a second one ends the process while the batch still waits.
        assert (proc.poll() is None) == (signals == 1)
        gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        out, err = proc.communicate(timeout=30)
    finally:
        gate.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    _wait(lambda: not _batch_waiting_on_gate(db), "the backfill's session to end")
    last_key, batches, rows_changed, _ = _checkpoint(db)
    # One signal: the batch in flight committed. Two: the server had its COMMIT already (one round trip), so it
    # may still commit once its lock wait ends, or roll back: with its checkpoint either way.
    assert batches == batches_at_signal + 1 if signals == 1 else batches in (batches_at_signal, batches_at_signal + 1)
    assert fetch(db, "SELECT count(*) FILTER (WHERE hits = 1 AND id <= %s), count(*) FILTER (WHERE hits <> 1)"
                     " FROM counters", (last_key,)) == [(rows_changed, ROWS - rows_changed)]
    res = runner(db, migrations, backfill=quiet()).apply("0007_counters", "migrate")
    assert res.backfills[0].resumed_from_key == last_key and hits_histogram(db) == [(1, ROWS)]
