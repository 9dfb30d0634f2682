"""The migrate-stage backfill: exactly-once across kill -9, throttling, lock handling, progress output."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from rich.console import Console

from bazbii_db.migrations import BackfillError, ReplicaLagProbe
from bazbii_db.migrations.backfill import Backfill, BackfillConfig
from bazbii_db.migrations.journal import Journal
from bazbii_db.migrations.spec import BackfillSpec

from .conftest import REPO, apply_all, execute, fetch, runner, write_migration

pytestmark = pytest.mark.timeout(60)

COUNTERS = "CREATE TABLE counters (id bigint PRIMARY KEY, hits integer NOT NULL DEFAULT 0, note text)"


def counters_db(dsn, n=3000, step=3):
    execute(dsn, COUNTERS)
    execute(dsn, "INSERT INTO counters (id) SELECT g * %s FROM generate_series(1, %s) g", (step, n))
    with psycopg.connect(dsn, autocommit=True) as conn:
        Journal(conn).ensure()


def hits_spec(**kw) -> BackfillSpec:
    base = dict(name="hits", kind="update", table="counters", key="id", set={"hits": "hits + 1"}, batch_size=100)
    base.update(kw)
    return BackfillSpec(**base)


def quiet(**kw) -> BackfillConfig:
    base = dict(probe_interval_s=0.02, throttle_sleep_s=0.05, progress_interval_s=3600,
                console=Console(file=io.StringIO(), force_terminal=False))
    base.update(kw)
    return BackfillConfig(**base)


def hits_histogram(dsn):
    return fetch(dsn, "SELECT hits, count(*) FROM counters GROUP BY hits ORDER BY hits")


def test_kill_9_mid_backfill_then_rerun_resumes_with_exact_data(db, small_dir):
    import shutil

    shutil.rmtree(small_dir / "0002_add_category")
    apply_all(db, small_dir, "0001_init")
    # hits = hits + 1 is deliberately not idempotent: a row done twice would show hits = 2
    write_migration(small_dir, "0007_counters",
                    '[[backfill]]\nname = "hits"\ntable = "counters"\nset = { hits = "hits + 1" }\n'
                    'batch_size = 100\npause_ms = 30\n',
                    expand="CREATE TABLE IF NOT EXISTS counters (id bigint PRIMARY KEY, hits integer NOT NULL DEFAULT 0);\n")
    runner(db, small_dir).apply("0007_counters", "expand")
    execute(db, "INSERT INTO counters (id) SELECT g * 3 FROM generate_series(1, 6000) g")  # keys with gaps
    env = dict(os.environ, SCHEMA_TEST_DSN=db, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "bazbii_db.migrations", "--migrations-dir", str(small_dir), "apply",
                             "--dsn-env", "SCHEMA_TEST_DSN", "--migration", "0007_counters", "--stage", "migrate"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            rows = fetch(db, "SELECT batches FROM bazbii_migrations.backfill_checkpoint") \
                if fetch(db, "SELECT to_regclass('bazbii_migrations.backfill_checkpoint')")[0][0] else []
            if rows and rows[0][0] >= 10:
                break
            time.sleep(0.02)
        else:
            pytest.fail("backfill did not make progress")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # wait for the server to notice the dead client (its open batch transaction rolls back)
    deadline = time.monotonic() + 10
    while fetch(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'bazbii-migrate%%'")[0][0]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    last_key, rows_changed, finished = fetch(db, "SELECT last_key, rows_changed, finished_at IS NOT NULL "
                                                 "FROM bazbii_migrations.backfill_checkpoint")[0]
    assert not finished and 0 < last_key < 18000
    # the checkpoint and the data agree exactly: every row up to last_key once, nothing after it
    assert fetch(db, "SELECT count(*) FILTER (WHERE hits = 1 AND id <= %s), count(*) FILTER (WHERE hits = 0 AND id > %s),"
                     " count(*) FILTER (WHERE hits > 1) FROM counters", (last_key, last_key)) == \
        [(rows_changed, 6000 - rows_changed, 0)]
    assert fetch(db, "SELECT status FROM bazbii_migrations.journal WHERE migration_id = '0007_counters' "
                     "AND step = 'migrate'") == [("running",)]
    res = runner(db, small_dir, backfill=quiet()).apply("0007_counters", "migrate")
    b = res.backfills[0]
    assert b.resumed_from_key == last_key and b.rows_changed == 6000 - rows_changed
    assert b.total_rows_changed == 6000
    assert hits_histogram(db) == [(1, 6000)]


def test_replica_lag_pauses_the_backfill_until_the_window_is_clear(db, pg_cluster, replica):
    counters_db(db, n=3000)
    with psycopg.connect(replica.dsn(), autocommit=True) as rep:
        deadline = time.monotonic() + 20
        while rep.execute("SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()").fetchone()[0] is not True:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        rep.execute("SELECT pg_wal_replay_pause()")
        try:
            timer = threading.Timer(1.5, lambda: psycopg.connect(replica.dsn(), autocommit=True).execute(
                "SELECT pg_wal_replay_resume()").connection.close())
            timer.start()
            probe = ReplicaLagProbe([replica.dsn()])
            t0 = time.monotonic()
            try:
                result = Backfill(db, "m", hits_spec(batch_size=100, pause_ms=10), "c",
                                  quiet(lag_probe=probe, max_lag_s=0.3, lag_window_s=0.4)).run()
            finally:
                probe.close()
                timer.join()
        finally:
            rep.execute("SELECT pg_wal_replay_resume()")
    elapsed = time.monotonic() - t0
    lag_pauses = [s for reason, s in result.throttle_events if reason.startswith("replica lag")]
    assert lag_pauses and sum(lag_pauses) >= 0.8, result.throttle_events
    assert elapsed >= 1.5
    assert hits_histogram(db) == [(1, 3000)]


def test_lock_waits_in_the_database_pause_the_backfill(db):
    counters_db(db, n=2000)
    execute(db, "CREATE TABLE other (id int)")
    holder = psycopg.connect(db)
    holder.execute("LOCK TABLE other IN ACCESS EXCLUSIVE MODE")
    waiter_done = threading.Event()

    def waiter():
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM other")
        waiter_done.set()

    threading.Thread(target=waiter, daemon=True).start()
    time.sleep(0.3)  # the waiter is now queued for > lock_wait_threshold_ms
    release = threading.Timer(1.2, lambda: (holder.commit(), holder.close()))
    release.start()
    result = Backfill(db, "m", hits_spec(batch_size=200), "c", quiet(lock_wait_threshold_ms=100)).run()
    release.join()
    assert waiter_done.wait(5)
    waits = [s for reason, s in result.throttle_events if "waiting on locks" in reason]
    assert waits and sum(waits) >= 0.7, result.throttle_events
    assert hits_histogram(db) == [(1, 2000)]


def test_a_batch_blocked_by_a_row_lock_times_out_and_retries_smaller(db):
    counters_db(db, n=2000)
    holder = psycopg.connect(db)
    holder.execute("SELECT * FROM counters WHERE id = 3000 FOR UPDATE")  # row in the middle of the range
    release = threading.Timer(0.8, lambda: (holder.commit(), holder.close()))
    release.start()
    result = Backfill(db, "m", hits_spec(batch_size=400), "c",
                      quiet(lock_timeout_ms=100, retry_base_s=0.05, retry_max_s=0.2, min_batch_size=50,
                            lock_wait_threshold_ms=None)).run()
    release.join()
    assert result.lock_timeouts >= 2
    assert result.final_batch_size < 400
    assert hits_histogram(db) == [(1, 2000)]


def test_row_lock_retries_are_bounded(db):
    counters_db(db, n=500)
    with psycopg.connect(db) as holder:
        holder.execute("SELECT * FROM counters WHERE id = 3 FOR UPDATE")
        with pytest.raises(BackfillError, match="could not get its row locks in 2 tries"):
            Backfill(db, "m", hits_spec(), "c", quiet(lock_timeout_ms=50, max_lock_retries=2, retry_base_s=0.01,
                                                      lock_wait_threshold_ms=None)).run()
        holder.rollback()
    assert hits_histogram(db) == [(0, 500)]


def test_adaptive_batch_size_follows_the_target_duration(db):
    counters_db(db, n=20000, step=1)
    grown = Backfill(db, "m", hits_spec(name="a", batch_size=50), "c", quiet(target_batch_ms=200)).run()
    assert grown.final_batch_size > 1000 and grown.batches < 40
    shrunk = Backfill(db, "m", hits_spec(name="b", batch_size=5000), "c",
                      quiet(target_batch_ms=0.01, min_batch_size=100)).run()
    assert shrunk.final_batch_size == 100
    assert hits_histogram(db) == [(2, 20000)]


def test_batches_hold_locks_briefly_and_are_pk_ranges(db):
    counters_db(db, n=5000, step=7)
    result = Backfill(db, "m", hits_spec(batch_size=500), "c", quiet()).run()
    assert result.batches == 10 and len(result.batch_hold_ms) == 10
    assert result.max_batch_hold_ms < 1000
    assert fetch(db, "SELECT last_key, upper_key, rows_changed, keys_done, batches FROM "
                     "bazbii_migrations.backfill_checkpoint") == [(35000, 35000, 5000, 5000, 10)]
    # a finished backfill is not run again
    again = Backfill(db, "m", hits_spec(batch_size=500), "c", quiet()).run()
    assert again.already_done and again.batches == 0
    with pytest.raises(BackfillError, match="definition changed"):
        Backfill(db, "m", hits_spec(batch_size=500), "other-checksum", quiet()).run()


def test_backfill_refuses_keys_it_cannot_range_over(db):
    counters_db(db, n=10)
    execute(db, "CREATE TABLE noindex (id bigint, hits int DEFAULT 0)")
    execute(db, "CREATE TABLE textkey (id text PRIMARY KEY, hits int DEFAULT 0)")
    with pytest.raises(BackfillError, match="no valid index"):
        Backfill(db, "m", hits_spec(table="noindex"), "c", quiet()).run()
    with pytest.raises(BackfillError, match="integer key"):
        Backfill(db, "m", hits_spec(table="textkey"), "c", quiet()).run()
    with pytest.raises(BackfillError, match="does not exist"):
        Backfill(db, "m", hits_spec(table="nope"), "c", quiet()).run()


def test_progress_is_sparse_without_a_terminal_and_a_bar_with_one(db):
    counters_db(db, n=3000)
    plain = io.StringIO()
    Backfill(db, "m", hits_spec(name="p1", batch_size=100), "c",
             quiet(console=Console(file=plain, force_terminal=False, width=200), progress_interval_s=3600)).run()
    lines = plain.getvalue().strip().splitlines()
    assert len(lines) == 2 and "starting, 3,000 keys" in lines[0] and "rows/s" in lines[1]  # no per-batch spam
    chatty = io.StringIO()
    Backfill(db, "m", hits_spec(name="p2", batch_size=100, pause_ms=20), "c",
             quiet(console=Console(file=chatty, force_terminal=False, width=200), progress_interval_s=0.2)).run()
    middle = chatty.getvalue().strip().splitlines()[1:-1]
    assert 2 <= len(middle) < 30 and all("rows/s" in m and "ETA" in m for m in middle)
    tty = io.StringIO()
    Backfill(db, "m", hits_spec(name="p3", batch_size=100), "c",
             quiet(console=Console(file=tty, force_terminal=True, width=200))).run()
    assert "rows/s" in tty.getvalue() and "\x1b[" in tty.getvalue()


def test_backfill_session_settings(db):
    """Batches run with the dual-write bypass flag, lock_timeout, and without waiting for WAL flush."""
    counters_db(db, n=300)
    spec = hits_spec(set={"note": "current_setting('bazbii.backfill') || ' ' || current_setting('lock_timeout') "
                                  "|| ' ' || current_setting('synchronous_commit')"})
    Backfill(db, "m", spec, "c", quiet(lock_timeout_ms=750)).run()
    assert fetch(db, "SELECT DISTINCT note FROM counters") == [("on 750ms off",)]
    Backfill(db, "m", hits_spec(name="sync", set={"note": "current_setting('synchronous_commit')"}), "c",
             quiet(synchronous_commit=True)).run()
    assert fetch(db, "SELECT DISTINCT note FROM counters") == [("on",)]


def test_lag_probes(pg_cluster, replica):
    from bazbii_db.migrations import PrimaryLagProbe

    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        deadline = time.monotonic() + 20
        while not conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert 0.0 <= PrimaryLagProbe(conn).sample() < 5.0
    healthy = ReplicaLagProbe([replica.dsn()])
    try:
        assert 0.0 <= healthy.sample() < 5.0
    finally:
        healthy.close()
    # an unreachable replica is not "no lag": it throttles
    gone = ReplicaLagProbe([replica.dsn(port="1")])
    assert gone.sample() == float("inf")
