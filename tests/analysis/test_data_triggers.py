"""Data-consistency rollback triggers against real PostgreSQL 15 (primary + streaming replica) on 127.0.0.1.

The triggers call the existing tools (bazbii_db.replication.check_consistency,
bazbii_db.migrations.journal.Journal); these tests check the watch reads them
right: a failed journal step is a breach, an unreachable server is not.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timezone

import psycopg
import pytest

from bazbii_analysis import watch as watch_cli
from bazbii_analysis.watchsetup import migration_journal, replica_consistency
from bazbii_db.migrations.journal import Journal
from testsupport.localcluster import LocalCluster, free_port, make_workdir, remove_workdir

from .conftest import repository


@pytest.fixture(scope="module")
def clusters():
    workdir = make_workdir("bazbii-analysis-pg-")
    primary = LocalCluster.init(workdir, "primary")
    primary.start()
    replica = None
    try:
        replica = primary.basebackup_replica(workdir, "replica", slot="analysis_replica")
        replica.start()
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop(mode="immediate")
        primary.stop(mode="immediate")
        remove_workdir(workdir)


def _no_password(cluster: LocalCluster) -> str:
    return f"host=127.0.0.1 port={cluster.port} dbname=postgres user=postgres connect_timeout=5"


def test_replica_consistency_trigger_passes_on_a_consistent_replica(clusters, monkeypatch):
    primary, replica = clusters
    monkeypatch.setenv("PGPASSWORD", primary.password)
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS posts (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO posts SELECT g, 'x' || g FROM generate_series(1, 500) g ON CONFLICT DO NOTHING")
    result = replica_consistency(_no_password(primary), _no_password(replica)).run()
    assert result.status == "pass", result.reason
    assert result.value == 0 and "CONSISTENT" in result.reason
    unreachable = replica_consistency(_no_password(primary), f"host=127.0.0.1 port={free_port()} user=postgres").run()
    assert unreachable.status == "inconclusive" and "could not run" in unreachable.reason


def test_failed_migration_journal_step_is_a_breach(clusters, monkeypatch):
    primary, _replica = clusters
    monkeypatch.setenv("PGPASSWORD", primary.password)
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        journal = Journal(conn)
        journal.ensure()
        journal.start("0002_add_category", "expand", "sum-expand", "test", ["1.9.0"])
        journal.finish("0002_add_category", "expand")
    trigger = migration_journal(_no_password(primary))
    assert trigger.run().status == "pass"
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        journal = Journal(conn)
        journal.start("0002_add_category", "migrate", "sum-migrate", "test", ["1.9.0"])
        journal.fail("0002_add_category", "migrate", "canceling statement due to lock timeout")
    result = trigger.run()
    assert result.status == "fail" and result.value == 1
    assert "0002_add_category migrate failed: canceling statement due to lock timeout" in result.reason


def test_watch_rolls_back_on_a_data_trigger_with_healthy_metrics(clusters, metrics_stack, tmp_path, monkeypatch,
                                                                  capsys):
    primary, _replica = clusters
    monkeypatch.setenv("PGPASSWORD", primary.password)  # never on the command line
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        journal = Journal(conn)
        journal.ensure()
        journal.start("0003_example", "expand", "sum", "test", ["2.0.0"])
        journal.fail("0003_example", "expand", "deadlock detected")
    repo = repository(tmp_path, metrics_stack.prometheus_url,
                      criteria={"traffic-100": {"soak": "30s", "scope": {"kind": "pool", "name": "server2"},
                                                "minSamples": 20}})
    stop = threading.Event()
    metrics_stack.service.set(error_percent=0, latency=0.003)
    driver = threading.Thread(target=metrics_stack.drive, args=(60,), kwargs={"stop": stop}, daemon=True)
    driver.start()
    started = time.monotonic()
    try:
        rc = watch_cli.main(["--repo", str(repo.runner), "--since", datetime.now(timezone.utc).isoformat(),
                             "--interval", "1", "--window", "4s", "--dry-run", "--min-samples", "20",
                             "--journal-dsn", _no_password(primary)])
    finally:
        stop.set()
        driver.join()
    out = capsys.readouterr().out
    assert rc == 1 and time.monotonic() - started < 20, out
    assert "dry run: would push" in out and "Roll back infra: bazbii:phase traffic-50 -> traffic-10" in out
    assert re.search(r"FAIL +migration-journal", out), out
    assert repo.main_phase() == "traffic-50"


def test_watch_refuses_a_password_in_a_dsn(tmp_path, capsys):
    rc = watch_cli.main(["--journal-dsn", "host=127.0.0.1 user=postgres password=hunter2", "--duration", "1m",
                         "--metrics", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "--journal-dsn: must not contain a password (put it in ~/.pgpass or PGPASSFILE)"
    assert "hunter2" not in err
