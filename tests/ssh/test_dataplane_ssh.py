"""The data-plane commands the program registers, run over a real SSH connection against real servers.

Each command is the exact text of the pure builder the components use (``bazbii_db.dataplane``;
``tests/program`` checks the components register that same text), run through a local sshd
(key-only, 127.0.0.1) with its secrets on stdin, against PostgreSQL 15 primary + streaming replica
+ PgBouncer on loopback. Only the runtime root differs from production (a throwaway directory
instead of ``/opt/bazbii``), and the release there was installed over SSH by the program's own
install command (conftest.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bazbii_db.dataplane import (install_command, lag_gate_command, release_stdin, schema_apply_command,
                                 secrets_stdin, switchover_command)
from bazbii_db.migrations.spec import migration_checksum
from testsupport.replication_topology import APP_DB, WriteLoad, missing_acked, wait_streaming

from .conftest import execute, ops_dsn, password_free

pytestmark = pytest.mark.timeout(240)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


# --------------------------------------------------------------------------- install
def test_install_puts_the_release_in_place_and_refuses_a_broken_upload(sshd, installed):
    runtime, info = installed
    doc = json.loads(info["result"].stdout)
    release = Path(runtime.root) / "releases" / info["digest"]
    assert doc == {"release": str(release), "app": f"{runtime.root}/app"}
    assert Path(runtime.code).resolve() == release
    assert (release / "bazbii_db" / "replication" / "__main__.py").is_file()
    assert (release / "migrations" / "0002_add_category" / "expand.sql").is_file()
    assert "psycopg[binary]==" in (release / "requirements.txt").read_text()
    # the same release again: nothing to unpack, still switched and importable
    again = sshd.run(install_command(digest=info["digest"], runtime=runtime), stdin=release_stdin(info["tarball"]))
    assert again.returncode == 0, again.stderr
    # a new digest whose upload is not a tarball: refused, nothing switched
    broken = sshd.run(install_command(digest="0" * 16, runtime=runtime), stdin="bm90IGEgdGFyYmFsbA==\n")
    assert broken.returncode == 1 and "not a tarball: nothing installed" in one_line(broken.stderr)
    assert not (Path(runtime.root) / "releases" / ("0" * 16)).exists()
    assert Path(runtime.code).resolve() == release


# --------------------------------------------------------------------------- lag gate + consistency
def test_lag_gate_over_ssh_passes_when_streaming_and_fails_closed_when_the_replica_stops(sshd, runtime,
                                                                                         shared_topo):
    topo = shared_topo
    stdin = secrets_stdin([ops_dsn(topo.primary), ops_dsn(topo.replica)])
    command = lag_gate_command(slot=topo.slot, max_lag_bytes=1 << 20, window_seconds=0.5, timeout_seconds=15,
                               check_consistency=True, runtime=runtime)
    assert "password" not in command  # secrets only on stdin, never in the command line (ps)

    ok = sshd.run(command, stdin=stdin)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["passed"] is True and doc["gate"]["passed"] is True
    assert doc["gate"]["max_lag_bytes_observed"] < 1 << 20
    assert doc["consistency"]["passed"] is True and doc["consistency"]["tables_compared"] >= 2
    assert doc["consistency"]["differing"] == [] and doc["consistency"]["checked_lsn"]
    assert password_free(ok.stdout, ok.stderr)

    # a secret missing on stdin: usage error, nothing run
    short = sshd.run(command, stdin=secrets_stdin([ops_dsn(topo.primary)]))
    assert short.returncode == 2 and "stdin ended before BAZBII_REPLICA_DSN" in one_line(short.stderr)

    quick = lag_gate_command(slot=topo.slot, max_lag_bytes=1 << 20, window_seconds=0.3, timeout_seconds=2,
                             check_consistency=True, runtime=runtime)
    topo.replica.stop()
    try:
        failed = sshd.run(quick, stdin=stdin)
    finally:
        topo.replica.start()
        wait_streaming(topo, timeout=60)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    line = one_line(failed.stderr)
    assert line.startswith(f"lag gate failed for replica '{topo.slot}'"), line
    doc = json.loads(failed.stdout)
    assert doc["passed"] is False and doc["consistency"] is None  # never compared after a failed gate
    assert password_free(failed.stdout, failed.stderr)


# --------------------------------------------------------------------------- switchover
def test_switchover_over_ssh_under_write_load_loses_nothing(sshd, runtime, fresh_topo):
    topo = fresh_topo
    stdin = secrets_stdin([ops_dsn(topo.primary), ops_dsn(topo.replica), topo.bouncer.admin_dsn()])

    def command(ini: str) -> str:
        return switchover_command(ini_path=ini, alias=topo.alias, new_host="127.0.0.1", new_port=topo.replica.port,
                                  pause_timeout_seconds=5.0, max_lag_bytes=1 << 20, runtime=runtime)

    # not on the pooler host (no such ini): aborted in the pre-check, nothing changed
    missing = sshd.run(command("/nonexistent/pgbouncer.ini"), stdin=stdin)
    assert missing.returncode == 1
    line = one_line(missing.stderr)
    assert line.startswith("switchover aborted, old primary serving at precheck") and "not found" in line
    assert json.loads(missing.stdout)["aborted"] is True

    load = WriteLoad(topo.app_dsn(), threads=4, max_seconds=60).start()
    try:
        load.wait_acked(100)
        done = sshd.run(command(str(topo.bouncer.ini_path)), stdin=stdin)
        time.sleep(0.5)  # commits after RESUME land on the new primary
    finally:
        stats = load.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["completed"] and doc["promoted"] and not doc["already_done"]
    assert doc["fenced_lsn"] == doc["replica_replay_lsn"]
    assert set(doc["steps_ms"]) >= {"pause", "fence", "lsn", "catchup", "promote", "reload", "resume"}
    assert stats.failed == [], stats.failed[:3]
    assert missing_acked(topo.replica.dsn(dbname=APP_DB), stats) == []
    assert f"port={topo.replica.port}" in topo.bouncer.ini_path.read_text()
    assert password_free(done.stdout, done.stderr) and topo.bouncer.admin_password not in done.stdout

    # the same step again (a retried update): rolls forward, promotes nothing
    again = sshd.run(command(str(topo.bouncer.ini_path)), stdin=stdin)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_done"] is True


# --------------------------------------------------------------------------- schema runner
def test_schema_runner_expand_over_ssh(sshd, runtime, shared_topo):
    topo = shared_topo
    execute(topo.primary.dsn(), "DROP DATABASE IF EXISTS ssh_schema")
    execute(topo.primary.dsn(), "CREATE DATABASE ssh_schema")
    primary, replica = topo.primary.dsn(dbname="ssh_schema"), topo.replica.dsn(dbname="ssh_schema")
    deadline = time.monotonic() + 20
    while not execute(topo.replica.dsn(), "SELECT count(*) FROM pg_database WHERE datname = 'ssh_schema'")[0][0]:
        assert time.monotonic() < deadline, "CREATE DATABASE did not reach the replica"
        time.sleep(0.05)
    migrations = Path(runtime.migrations_dir)
    stdin = secrets_stdin([primary, replica])

    def apply(migration: str, checksum: str | None = None):
        command = schema_apply_command(
            migration_id=migration, stage="expand",
            expected_checksum=checksum or migration_checksum(migrations, migration, "expand"),
            app_versions=["registry.example.com/bazbii/api:1.9.0"], replicas=1, runtime=runtime)
        assert topo.primary.password not in command
        return sshd.run(command, stdin=stdin)

    stale = apply("0001_init", checksum="0" * 64)
    assert stale.returncode == 2 and "nothing was run" in one_line(stale.stderr)
    assert execute(primary, "SELECT to_regclass('public.posts')") == [(None,)]

    for migration in ("0001_init", "0002_add_category"):
        run = apply(migration)
        assert run.returncode == 0, run.stderr
        doc = json.loads(run.stdout)
        assert (doc["migration_id"], doc["stage"], doc["status"]) == (migration, "expand", "applied")
        assert topo.primary.password not in run.stdout + run.stderr
    assert execute(primary, "SELECT is_nullable FROM information_schema.columns "
                            "WHERE table_name = 'posts' AND column_name = 'category'") == [("YES",)]
    rerun = apply("0002_add_category")
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["status"] == "already-applied"
