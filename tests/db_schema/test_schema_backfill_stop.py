"""Stopping a running backfill: SIGTERM/SIGINT to the real CLI stops it after the batch in flight, journaled,
and a second run resumes and completes with every row done exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
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


def _start_cli(db: str, migrations: os.PathLike, *, as_pid_1: bool = False) -> tuple[subprocess.Popen, int]:
    """The CLI applying 0007_counters/migrate; returns (process, pid to signal). ``as_pid_1``: as PID 1 of its
    own PID namespace, as in a Kubernetes Job's container (the process is then unshare(1), the CLI its child)."""
    prefix = []
    if as_pid_1:
        if os.geteuid() != 0 or not shutil.which("unshare"):
            pytest.skip("needs root and unshare(1) for a PID namespace")
        prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    env = dict(os.environ, SCHEMA_TEST_DSN=db, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "bazbii_db.migrations", "--migrations-dir", str(migrations),
                             "apply", "--dsn-env", "SCHEMA_TEST_DSN", "--migration", "0007_counters",
                             "--stage", "migrate", "--progress-interval-s", "0.2"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not as_pid_1:
        return proc, proc.pid
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return proc, int(_wait(lambda: children.read_text().split(), "the CLI to start in its PID namespace")[0])


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


@contextmanager
def _batch_held_in_flight(db: str, proc: subprocess.Popen, after_batches: int):
    """Once ``after_batches`` batches committed, hold the next one in flight (inside its transaction, waiting on
    the gate) and yield the checkpoint as committed; the batch goes on when the block ends. Kills ``proc`` if
    the block fails."""
    gate = psycopg.connect(db, autocommit=True)
    try:
        _wait(lambda: _checkpoint(db)[1] >= after_batches, f"{after_batches} committed batches")
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
        _wait(lambda: _batch_waiting_on_gate(db), "a batch in flight, waiting on the gate")
        yield _checkpoint(db)  # stable: the batch in flight cannot commit
    except BaseException:
        proc.kill()
        raise
    finally:
        gate.close()  # releases the gate


def _assert_each_row_once_up_to(db: str, last_key: int, rows_changed: int) -> None:
    """The checkpoint and the data agree: every row up to last_key done once, none after it."""
    assert fetch(db, "SELECT count(*) FILTER (WHERE hits = 1 AND id <= %s), count(*) FILTER (WHERE hits = 0 AND id > %s),"
                     " count(*) FILTER (WHERE hits > 1) FROM counters", (last_key, last_key)) == \
        [(rows_changed, ROWS - rows_changed, 0)]


def _resume_completes_exactly_once(db: str, migrations, last_key: int, rows_changed: int) -> None:
    res = runner(db, migrations, backfill=quiet()).apply("0007_counters", "migrate")
    b = res.backfills[0]
    assert res.status == "applied" and b.resumed_from_key == last_key
    assert b.rows_changed == ROWS - rows_changed and b.total_rows_changed == ROWS
    assert hits_histogram(db) == [(1, ROWS)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_backfill_after_the_batch_in_flight_and_a_rerun_finishes_it_exactly_once(counters, signum):
    db, migrations = counters
    proc, pid = _start_cli(db, migrations)
    with _batch_held_in_flight(db, proc, after_batches=5) as (key_at_signal, batches_at_signal, _, _):
        os.kill(pid, signum)
        time.sleep(0.3)  # the stop request is in; the batch is still held in flight (lock_timeout is 1 s)
        assert proc.poll() is None and _checkpoint(db)[1] == batches_at_signal
    out, err = proc.communicate(timeout=30)

    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"0007_counters/migrate STOPPED: backfill hits: stopped by {name}"), err
    assert "run the same command again" in last_line and "Traceback" not in err
    # Stopped after exactly the batch that was in flight: it committed, nothing after it started.
    last_key, batches, rows_changed, finished = _checkpoint(db)
    assert batches == batches_at_signal + 1 and last_key > key_at_signal and not finished
    assert f"checkpoint at key {last_key} of {ROWS * 3}" in last_line
    _assert_each_row_once_up_to(db, last_key, rows_changed)
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
    _resume_completes_exactly_once(db, migrations, last_key, rows_changed)


@pytest.mark.parametrize("as_pid_1", [False, True], ids=["a process", "PID 1 of a container"])
@pytest.mark.parametrize("signals", [1, 2], ids=["one SIGTERM", "two SIGTERMs"])
def test_sigterm_stops_it_as_pid_1_too_and_a_second_one_at_once(counters, signals, as_pid_1):
    """A Job's container: the kernel gives PID 1 only the signals it handles (kubectl delete pod sends SIGTERM), and
    ignores PID 1's own default-action signals (the second signal's way out)."""
    db, migrations = counters
    proc, pid = _start_cli(db, migrations, as_pid_1=as_pid_1)
    with _batch_held_in_flight(db, proc, after_batches=3) as (_, batches_at_signal, _, _):
        for _ in range(signals):
            os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)
        # One signal waits for the batch in flight; a second one ends the process while the batch still waits.
        assert (proc.poll() is None) == (signals == 1)
    out, err = proc.communicate(timeout=30)
    # a second signal: ended by it (as a process), or by exit(143) (as PID 1, which the kernel shields from it)
    assert proc.returncode == (-signal.SIGTERM if signals == 2 and not as_pid_1 else 128 + signal.SIGTERM), err
    _wait(lambda: not _batch_waiting_on_gate(db), "the backfill's session to end")
    last_key, batches, rows_changed, _ = _checkpoint(db)
    # One signal: the batch in flight committed. Two: the server had its COMMIT already (one round trip), so it
    # still commits once its lock wait ends (or rolls back, past lock_timeout): with its checkpoint either way.
    assert batches == batches_at_signal + 1 if signals == 1 else batches in (batches_at_signal, batches_at_signal + 1)
    _assert_each_row_once_up_to(db, last_key, rows_changed)
    _resume_completes_exactly_once(db, migrations, last_key, rows_changed)
