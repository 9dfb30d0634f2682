"""Runner guarantees and fault cases: journal, single runner, lock timeouts, CIC repair, contract gate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from bazbii_db.migrations import (ChecksumMismatch, ContractRefused, LockRetryExhausted, RunnerLockTimeout,
                                  SqlSafetyError, StageOrderError, StatementFailed)
from bazbii_db.migrations.lock import LOCK_KEY

from .conftest import REPO, apply_all, execute, fetch, runner, write_migration

pytestmark = pytest.mark.timeout(60)


def seed_posts(dsn, small_dir, n=2000):
    apply_all(dsn, small_dir, "0001_init")
    execute(dsn, "INSERT INTO posts (title, content) SELECT 'title ' || g, 'c' FROM generate_series(1, %s) g", (n,))


def only_init(mig_dir):
    """Leave only 0001_init, so a test's own 0007_* migration has no other predecessor."""
    shutil.rmtree(mig_dir / "0002_add_category")


def journal(dsn, mig):
    return fetch(dsn, "SELECT step, status, units_done, attempts FROM bazbii_migrations.journal "
                      "WHERE migration_id = %s ORDER BY id", (mig,))


def cli(small_dir, dsn, *args, wait=True):
    env = dict(os.environ, SCHEMA_TEST_DSN=dsn, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "bazbii_db.migrations", "--migrations-dir", str(small_dir), *args]
    if not wait:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


# --- journal ------------------------------------------------------------------------------
def test_reapply_is_a_noop_and_a_changed_file_is_an_error(db, small_dir):
    seed_posts(db, small_dir, 10)
    r = runner(db, small_dir)
    first = r.apply("0002_add_category", "expand")
    assert first.status == "applied" and first.units_run == 1
    again = r.apply("0002_add_category", "expand")
    assert again.status == "already-applied" and again.units_run == 0
    assert journal(db, "0002_add_category") == [("expand", "applied", 1, 1)]
    (small_dir / "0002_add_category" / "expand.sql").write_text(
        "ALTER TABLE posts ADD COLUMN IF NOT EXISTS category varchar(80);\n")
    with pytest.raises(ChecksumMismatch, match="must not change after it is applied"):
        r.apply("0002_add_category", "expand")


def test_failed_step_resumes_after_its_last_completed_statement(db, small_dir):
    only_init(small_dir)
    seed_posts(db, small_dir, 10)
    write_migration(small_dir, "0007_partial", expand=(
        "CREATE TABLE t1 (id bigint PRIMARY KEY);\n"
        "ALTER TABLE missing_table ADD COLUMN IF NOT EXISTS x text;\n"
        "CREATE TABLE t2 (id bigint PRIMARY KEY);\n"))
    r = runner(db, small_dir)
    with pytest.raises(StatementFailed, match=r"0007_partial/expand.sql:2: 42P01") as exc:
        r.apply("0007_partial", "expand")
    assert exc.value.sqlstate == "42P01"
    assert journal(db, "0007_partial") == [("expand", "failed", 1, 1)]
    sql_file = small_dir / "0007_partial" / "expand.sql"
    # changing the part that already ran is refused ...
    sql_file.write_text(sql_file.read_text().replace("CREATE TABLE t1 (id bigint PRIMARY KEY)",
                                                     "CREATE TABLE t1 (id integer PRIMARY KEY)"))
    with pytest.raises(ChecksumMismatch, match="partly applied"):
        r.apply("0007_partial", "expand")
    # ... fixing the failed statement resumes after t1 (re-running CREATE TABLE t1 would fail)
    sql_file.write_text("CREATE TABLE t1 (id bigint PRIMARY KEY);\n"
                        "ALTER TABLE t1 ADD COLUMN IF NOT EXISTS x text;\n"
                        "CREATE TABLE t2 (id bigint PRIMARY KEY);\n")
    res = r.apply("0007_partial", "expand")
    assert (res.status, res.units_skipped, res.units_run) == ("applied", 1, 2)
    assert journal(db, "0007_partial") == [("expand", "applied", 3, 2)]


def test_unsafe_sql_is_reported_and_nothing_runs(db, small_dir):
    write_migration(small_dir, "0000_bad", expand=(
        "CREATE TABLE IF NOT EXISTS early (id bigint PRIMARY KEY);\n"
        "ALTER TABLE early2 ALTER COLUMN x TYPE bigint;\n"))
    with pytest.raises(SqlSafetyError) as exc:
        runner(db, small_dir).apply("0000_bad", "expand")
    assert "0000_bad/expand.sql:2" in str(exc.value) and "changing-column-type" in str(exc.value)
    assert fetch(db, "SELECT to_regclass('early'), to_regclass('bazbii_migrations.journal')") == [(None, None)]


def test_stages_run_in_order(db, small_dir):
    r = runner(db, small_dir)
    with pytest.raises(StageOrderError, match="earlier migrations first: 0001_init"):
        r.apply("0002_add_category", "expand")
    apply_all(db, small_dir, "0001_init")
    with pytest.raises(StageOrderError, match="0002_add_category/expand applied first"):
        r.apply("0002_add_category", "migrate")


# --- single runner ------------------------------------------------------------------------
def test_two_runners_started_together_exactly_one_migrates(db, small_dir):
    only_init(small_dir)
    apply_all(db, small_dir, "0001_init")
    write_migration(small_dir, "0007_counters",
                    '[[backfill]]\nname = "hits"\ntable = "counters"\nset = { hits = "hits + 1" }\n'
                    'batch_size = 100\npause_ms = 60\n',
                    expand="CREATE TABLE IF NOT EXISTS counters (id bigint PRIMARY KEY, hits integer NOT NULL DEFAULT 0);\n")
    runner(db, small_dir).apply("0007_counters", "expand")
    execute(db, "INSERT INTO counters (id) SELECT g FROM generate_series(1, 4000) g")
    args = ("apply", "--dsn-env", "SCHEMA_TEST_DSN", "--migration", "0007_counters", "--stage", "migrate")
    procs = [cli(small_dir, db, *args, wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    statuses = sorted(o[0].split(":")[1].split("(")[0].strip() for o in outs)
    assert statuses == ["already-applied", "applied"], outs
    assert fetch(db, "SELECT hits, count(*) FROM counters GROUP BY hits") == [(1, 4000)]
    waiting = [o[1] for o in outs if "already-applied" in o[0]][0]
    assert "another migration runner holds the lock" in waiting


def test_runner_waits_a_bounded_time_and_reports_the_lock_holder(db, small_dir):
    apply_all(db, small_dir, "0001_init")
    with psycopg.connect(db + " application_name=deploy-job-42", autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        pid = other.info.backend_pid
        t0 = time.monotonic()
        with pytest.raises(RunnerLockTimeout) as exc:
            runner(db, small_dir, runner_lock_wait_s=0.6).apply("0002_add_category", "expand")
        assert 0.5 < time.monotonic() - t0 < 3
        assert "deploy-job-42" in str(exc.value) and f"pid {pid}" in str(exc.value)
        assert exc.value.holders[0].pid == pid
    # once the holder disconnects the lock is free again
    assert runner(db, small_dir).apply("0002_add_category", "expand").status == "applied"


# --- lock timeouts ------------------------------------------------------------------------
def test_long_reader_ddl_times_out_and_retries_while_other_readers_keep_going(db, small_dir):
    seed_posts(db, small_dir, 2000)
    lock_timeout_ms = 200
    blocker = psycopg.connect(db + " application_name=long-report")
    blocker.execute("SELECT count(*) FROM posts")  # transaction stays open: ACCESS SHARE held
    result, latencies, stop = {}, [], threading.Event()

    def migrate():
        try:
            result["res"] = runner(db, small_dir, lock_timeout_ms=lock_timeout_ms, max_attempts=60,
                                   backoff_base_s=0.05, backoff_max_s=0.2).apply("0002_add_category", "expand")
        except Exception as exc:  # pragma: no cover - reported below
            result["err"] = exc

    def read():
        with psycopg.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute("SELECT title FROM posts WHERE id = 42").fetchone()
                latencies.append(time.monotonic() - t0)
                time.sleep(0.005)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    mig = threading.Thread(target=migrate)
    mig.start()
    time.sleep(2.0)
    assert "res" not in result  # still retrying behind the long reader
    blocker.commit()
    blocker.close()
    mig.join(timeout=20)
    stop.set()
    for t in readers:
        t.join(timeout=5)
    assert "err" not in result, result.get("err")
    res = result["res"]
    assert res.status == "applied" and res.lock_timeouts >= 3 and res.ddl_attempts == res.lock_timeouts + 1
    assert fetch(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts' "
                     "AND column_name = 'category'") == [(1,)]
    assert len(latencies) > 100
    # readers queued behind the ALTER for at most lock_timeout (plus scheduling slack)
    # (without lock_timeout they would have queued for the whole 2 s the long reader held its lock)
    assert max(latencies) < lock_timeout_ms / 1000 + 0.5, max(latencies)


def test_lock_retries_are_bounded_and_name_the_blocker(db, small_dir):
    seed_posts(db, small_dir, 10)
    with psycopg.connect(db + " application_name=stuck-batch-job") as blocker:
        blocker.execute("SELECT count(*) FROM posts")
        with pytest.raises(LockRetryExhausted) as exc:
            runner(db, small_dir, lock_timeout_ms=100, max_attempts=3).apply("0002_add_category", "expand")
        blocker.rollback()
    assert exc.value.attempts == 3
    assert "stuck-batch-job" in str(exc.value) and "AccessShareLock" in str(exc.value)
    assert journal(db, "0002_add_category") == [("expand", "failed", 0, 1)]


# --- CREATE INDEX CONCURRENTLY ------------------------------------------------------------
def _unique_title_migration(small_dir):
    write_migration(small_dir, "0007_unique_title",
                    expand="CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS posts_title_key ON posts (title);\n")


def index_state(dsn):
    return fetch(dsn, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('posts_title_key')")


def test_failed_concurrent_unique_index_is_dropped_then_built_on_rerun(db, small_dir):
    only_init(small_dir)
    seed_posts(db, small_dir, 3000)
    execute(db, "UPDATE posts SET title = 'dup' WHERE id IN (10, 2000)")
    _unique_title_migration(small_dir)
    r = runner(db, small_dir)
    with pytest.raises(StatementFailed, match=r"0007_unique_title/expand.sql:1: 23505") as exc:
        r.apply("0007_unique_title", "expand")
    assert exc.value.sqlstate == "23505"
    assert index_state(db) == []  # the INVALID leftover was dropped right away
    execute(db, "UPDATE posts SET title = 'title 2000' WHERE id = 2000")
    res = r.apply("0007_unique_title", "expand")
    assert res.status == "applied" and index_state(db) == [(True,)]


def test_invalid_index_left_by_a_crashed_build_is_detected_and_rebuilt(db, small_dir):
    only_init(small_dir)
    seed_posts(db, small_dir, 3000)
    execute(db, "UPDATE posts SET title = 'dup' WHERE id IN (10, 2000)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        execute(db, "CREATE UNIQUE INDEX CONCURRENTLY posts_title_key ON posts (title)")
    assert index_state(db) == [(False,)]
    execute(db, "UPDATE posts SET title = 'title 2000' WHERE id = 2000")
    # the trap: IF NOT EXISTS "succeeds" and leaves the index INVALID
    execute(db, "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS posts_title_key ON posts (title)")
    assert index_state(db) == [(False,)]
    _unique_title_migration(small_dir)
    res = runner(db, small_dir).apply("0007_unique_title", "expand")
    assert res.repaired_indexes == ["public.posts_title_key"]
    assert index_state(db) == [(True,)]


# --- contract gate ------------------------------------------------------------------------
def snapshot(dsn):
    return (fetch(dsn, "SELECT table_name, column_name, is_nullable, column_default FROM information_schema.columns "
                       "WHERE table_schema = 'public' ORDER BY 1, 2"),
            fetch(dsn, "SELECT conname, convalidated FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
                       "ORDER BY 1"),
            fetch(dsn, "SELECT migration_id, step, status, attempts FROM bazbii_migrations.journal ORDER BY id"))


def test_contract_refused_while_an_old_version_runs_and_nothing_changes(db, small_dir):
    seed_posts(db, small_dir, 100)
    r = runner(db, small_dir)
    r.apply("0002_add_category", "expand")
    r.apply("0002_add_category", "migrate")
    before = snapshot(db)
    images = ["registry.example.com/bazbii/api:2.0.0", "registry.example.com/bazbii/api:1.9.3"]
    with pytest.raises(ContractRefused, match=r"api:1.9.3.*1.9.3 < 2.0.0"):
        r.apply("0002_add_category", "contract", images)
    assert snapshot(db) == before
    proc = cli(small_dir, db, "apply", "--dsn-env", "SCHEMA_TEST_DSN", "--migration", "0002_add_category",
               "--stage", "contract", "--app-version", images[1])
    assert proc.returncode == 1 and "contract refused, nothing changed" in proc.stderr  # CLI convention: 1 = refused
    assert snapshot(db) == before
    assert r.apply("0002_add_category", "contract", images[:1]).status == "applied"


def test_the_runner_asks_the_catalog_about_defaults_before_anything_runs(db, small_dir):
    """Offline, now() is not known to be stable; the runner asks pg_proc and lets it through, random() not."""
    apply_all(db, small_dir, "0001_init")
    runner(db, small_dir).apply("0002_add_category", "expand")
    write_migration(small_dir, "0007_seen_at", expand="ALTER TABLE posts ADD COLUMN IF NOT EXISTS seen_at timestamptz "
                                                      "DEFAULT now();\n")
    assert runner(db, small_dir).apply("0007_seen_at", "expand").status == "applied"
    write_migration(small_dir, "0008_token", expand="CREATE TABLE IF NOT EXISTS marker (id int);\n"
                                                    "ALTER TABLE posts ADD COLUMN IF NOT EXISTS token float8 "
                                                    "DEFAULT random();\n")
    with pytest.raises(SqlSafetyError, match="adding-field-with-volatile-default"):
        runner(db, small_dir).apply("0008_token", "expand")
    assert fetch(db, "SELECT to_regclass('marker')") == [(None,)]
    assert [r[0] for r in fetch(db, "SELECT migration_id FROM bazbii_migrations.journal ORDER BY 1")] == \
        ["0001_init", "0001_init", "0001_init", "0002_add_category", "0007_seen_at"]
