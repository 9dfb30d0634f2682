"""The shadow run and its users, on real PostgreSQL 15 servers.

A stage runs on a scratch database the shadow run creates and drops on the server given to it,
never on the target; PostgreSQL's observations replace the static rules it can judge; the lint CLI,
the runner's pre-run gate, the schema policy and the offline preview use it when a server is given
and say which analysis judged; without one (or when it cannot run) the static rules judge alone.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from bazbii_db.migrations import MigrationRunner
from bazbii_db.migrations.lint import lint_migration
from bazbii_db.sql_safety import SqlSafetyError
from bazbii_db.sql_safety.shadow import SCRATCH_PREFIX, ShadowServer, SqlFile, Step, judge, shadow_run
from testsupport.localcluster import LocalCluster

from .conftest import MIGRATIONS, apply_all, execute, fetch, fast_config, write_migration
from .test_schema_cli import PASSWORD, run

pytestmark = pytest.mark.timeout(180)
V2 = ["registry.example.com/bazbii/api:2.0.0"]


@pytest.fixture
def server(pg_cluster) -> ShadowServer:
    return ShadowServer(pg_cluster.dsn())


def scratch_databases(cluster) -> list[str]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                           (SCRATCH_PREFIX + "%",)).fetchall()]


def errors(findings) -> list[tuple[str, str, int]]:
    return [(f.rule, f.file.rsplit("/", 1)[-1], f.line) for f in findings if f.severity == "error"]


# --------------------------------------------------------------------------- the run itself
def test_a_stage_runs_on_a_scratch_database_that_is_dropped_never_on_the_target(db, small_dir, server, pg_cluster):
    apply_all(db, small_dir, "0001_init")
    write_migration(small_dir, "0007_note", "", expand="ALTER TABLE posts ADD COLUMN note text;\n")
    lint = lint_migration(small_dir / "0007_note", shadow=server, stages=("expand",))
    assert lint.run.ok and [obs.locks for _, obs in lint.run.observed] == [{"public.posts": 7}]  # ACCESS EXCLUSIVE
    assert not errors(lint.findings["expand"])  # a catalog-only change: the lock is brief
    assert fetch(db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == [(0,)]
    assert scratch_databases(pg_cluster) == []


def test_findings_name_the_statement_and_the_file_and_a_failure_stops_the_run(small_dir, server):
    write_migration(small_dir, "0007_mixed", 'contract_min_app_version = "2.0.0"\n', expand=(
        "-- a rewrite, a scan under SHARE, a catalog-only change, then PostgreSQL refuses a statement\n"
        "ALTER TABLE posts ALTER COLUMN user_id TYPE numeric;\n"
        "CREATE INDEX posts_title_idx ON posts (title);\n"
        "ALTER TABLE posts ADD COLUMN note text;\n"
        "ALTER TABLE posts ADD CONSTRAINT no_such FOREIGN KEY (note) REFERENCES nowhere (id) NOT VALID;\n"
        "CREATE INDEX posts_note_idx ON posts (note);\n"))
    lint = lint_migration(small_dir / "0007_mixed", shadow=server, use_squawk=False, stages=("expand",))
    found = errors(lint.findings["expand"])
    assert ("shadow-rewrite", "expand.sql", 2) in found and ("shadow-scan", "expand.sql", 3) in found
    assert ("shadow-error", "expand.sql", 5) in found and not any(line == 4 for _, _, line in found)
    # the run stopped at line 5: line 6 is judged by the static rules alone
    assert ("require-concurrent-index-creation", "expand.sql", 6) in found
    assert "stopped at migrations_small/0007_mixed/expand.sql:5" in lint.judged_by
    [scan] = [f for f in lint.findings["expand"] if f.rule == "shadow-scan"]
    assert "`CREATE INDEX posts_title_idx ON posts (title)`" in scan.message and "ShareLock" in scan.message


def test_statements_run_as_the_runner_runs_them(small_dir, server):
    """Autocommit where PostgreSQL refuses a transaction block (CIC), the runner's timeouts (capped), a DO block as
    one transaction, LOCK TABLE refused outside one."""
    base = [SqlFile("0001", (MIGRATIONS / "0001_init" / "expand.sql").read_text())]
    quick = ShadowServer(server.dsn, statement_timeout_ms=300)
    run = shadow_run(quick, base, [Step("expand", (SqlFile("f.sql", (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS posts_title_idx ON posts (title);\n"
        "DO $$ BEGIN ALTER TABLE posts ADD COLUMN IF NOT EXISTS note text; PERFORM pg_sleep(0.05); END $$;\n"
        "SHOW lock_timeout;\n"
        "DO $$ BEGIN PERFORM pg_sleep(1); END $$;\n")),))])
    [cic, do, show, sleep] = [obs for _, obs in run.observed]
    assert not cic.in_transaction and not cic.error and cic.scanned == ["public.posts"]  # SHARE UPDATE EXCLUSIVE
    assert do.in_transaction and do.locks == {"public.posts": 7} and "followed by 1 more statement" in do.holds_lock_while
    assert [f.rule for f in judge(do, "expand")] == ["shadow-lock-held"]
    assert not show.error and sleep.error.startswith("57014")  # statement_timeout, as the runner's session has it
    locked = shadow_run(server, base, [Step("expand", (SqlFile("f.sql", "LOCK TABLE posts;"),))])
    assert locked.observed[0][1].error.startswith("25P01")  # in the runner's autocommit it fails


def test_a_server_of_another_major_version_is_refused(server, small_dir):
    lint = lint_migration(small_dir / "0002_add_category", shadow=ShadowServer(server.dsn, major=16))
    assert not lint.run.ok and "production 16" in lint.judged_by and "static rules only" in lint.judged_by


# --------------------------------------------------------------------------- the lint CLI
def test_lint_cli_says_which_analysis_judged(small_dir, pg_cluster):
    write_migration(small_dir, "0007_partition", "", expand=(
        "CREATE TABLE ev (id bigint NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);\n"
        "CREATE TABLE ev_2030 (id bigint NOT NULL, at date NOT NULL, "
        "CONSTRAINT ev_2030_range CHECK (at >= '2030-01-01' AND at < '2031-01-01'));\n"),
        migrate="ALTER TABLE ev ATTACH PARTITION ev_2030 FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');\n")
    args = ("--migrations-dir", str(small_dir), "lint", "--migration", "0007_partition")
    static = run(*args, "--no-shadow")
    assert static.returncode == 1
    assert "migrate.sql:1: error[needs-shadow-run]" in static.stdout and "a shadow run would judge more" in static.stdout
    shadowed = run(*args, "--shadow-dsn-env", "SHADOW", "--require-shadow", env_extra={"SHADOW": pg_cluster.dsn()})
    assert shadowed.returncode == 0, shadowed.stdout + shadowed.stderr
    assert "0007_partition: judged by static rules + shadow run on PostgreSQL 15" in shadowed.stdout
    down = f"host=127.0.0.1 port=1 user=u password={PASSWORD} connect_timeout=2"
    missing = run(*args, "--shadow-dsn-env", "SHADOW", "--require-shadow", env_extra={"SHADOW": down})
    assert missing.returncode == 1 and "the shadow run could not run (cannot connect" in missing.stdout
    assert "needs-shadow-run" in missing.stdout  # and the static rules still refuse


# --------------------------------------------------------------------------- the runner's gate
def test_the_runner_gate_lets_postgresql_judge_what_the_static_rules_refuse(db, small_dir, server):
    write_migration(small_dir, "0007_partition", "", expand=(
        "CREATE TABLE ev (id bigint NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);\n"
        "CREATE TABLE ev_2030 (id bigint NOT NULL, at date NOT NULL, "
        "CONSTRAINT ev_2030_range CHECK (at >= '2030-01-01' AND at < '2031-01-01'));\n"),
        migrate="ALTER TABLE ev ATTACH PARTITION ev_2030 FOR VALUES FROM ('2030-01-01') TO ('2031-01-01');\n")
    apply_all(db, small_dir, "0001_init")
    apply_all(db, small_dir, "0002_add_category", app_versions=V2)
    apply_all(db, small_dir, "0007_partition", stages=("expand",))
    with pytest.raises(SqlSafetyError, match="(?s)needs-shadow-run.*judged by: static rules only"):
        MigrationRunner(db, small_dir, fast_config()).apply("0007_partition", "migrate")
    shadowed = MigrationRunner(db, small_dir, fast_config(shadow=server)).apply("0007_partition", "migrate")
    assert shadowed.status == "applied" and "shadow run on PostgreSQL 15" in shadowed.judged_by
    assert fetch(db, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'ev_2030'::regclass") == [(1,)]


def test_from_the_target_schema_the_shadow_sees_what_the_migrations_do_not(db, small_dir, server, pg_cluster):
    """A view made by hand on the target uses the column a contract drops: replaying the migrations cannot know;
    a schema-only dump of the target can, and PostgreSQL refuses the drop there. Nothing changes on the target."""
    apply_all(db, small_dir, "0001_init")
    apply_all(db, small_dir, "0002_add_category", app_versions=V2)
    execute(db, "CREATE VIEW titles_by_hand AS SELECT id, title, content FROM posts")
    write_migration(small_dir, "0007_drop_content", 'contract_min_app_version = "2.0.0"\n',
                    contract="ALTER TABLE posts DROP COLUMN content;\n")
    apply_all(db, small_dir, "0007_drop_content", stages=("expand", "migrate"))
    replayed = MigrationRunner(db, small_dir, fast_config(shadow=server)).judge(
        load(small_dir, "0007_drop_content"), "contract")
    assert "shadow run" in replayed.judged_by and not errors(replayed.findings["contract"])
    runner = MigrationRunner(db, small_dir, fast_config(shadow=server, shadow_from_target=True))
    with pytest.raises(SqlSafetyError, match=r"shadow-error.*2BP01.*view titles_by_hand depends on column content"
                                             r"(.|\n)*a schema-only dump of"):
        runner.apply("0007_drop_content", "contract", V2)
    assert fetch(db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts' "
                     "AND column_name = 'content'") == [(1,)]
    assert scratch_databases(pg_cluster) == []
    lint = run("--migrations-dir", str(small_dir), "lint", "--migration", "0007_drop_content", "--stage", "contract",
               "--shadow-dsn-env", "SHADOW", "--shadow-from-target", "--dsn-env", "TARGET",
               env_extra={"SHADOW": pg_cluster.dsn(), "TARGET": db})
    assert lint.returncode == 1 and "contract.sql:1: error[shadow-error]" in lint.stdout


def test_without_its_shadow_server_the_runner_falls_back_to_the_static_rules(db, small_dir):
    apply_all(db, small_dir, "0001_init")
    unreachable = ShadowServer(f"host=127.0.0.1 port=1 user=u password={PASSWORD} connect_timeout=2")
    result = MigrationRunner(db, small_dir, fast_config(shadow=unreachable)).apply("0002_add_category", "expand")
    assert result.status == "applied" and result.judged_by.startswith("static rules only: the shadow run could not run")
    assert PASSWORD not in result.judged_by


def load(root, migration_id):
    from bazbii_db.migrations import load_migration

    return load_migration(root / migration_id)


# --------------------------------------------------------------------------- the schema policy and the preview
def test_the_schema_policy_judges_the_jobs_configmap_with_a_shadow_run(server, tmp_path, monkeypatch):
    """The ConfigMap holds this migration and only the metadata of earlier ones; the shadow run finds their SQL in
    the repository's migrations directory ($BAZBII_MIGRATIONS_DIR here), where a view uses posts.title."""
    from policies.rules.schema import judge_configmap

    repo = tmp_path / "migrations"
    for mig in ("0001_init",):
        (repo / mig).mkdir(parents=True)
        for f in (MIGRATIONS / mig).iterdir():
            (repo / mig / f.name).write_text(f.read_text())
    write_migration(repo, "0002_view", "", expand="CREATE VIEW recent_titles AS SELECT id, title FROM posts;\n")
    monkeypatch.setenv("BAZBII_MIGRATIONS_DIR", str(repo))
    data = {"migration.toml": 'contract_min_app_version = "2.0.0"\n', "0001_init--migration.toml": "",
            "0002_view--migration.toml": "", "contract.sql": "ALTER TABLE posts DROP COLUMN title;\n"}
    static = judge_configmap("contract", "0007_drop_title", data, use_squawk=False)
    assert not errors(static.findings) and "a shadow run would judge more" in static.judged_by
    shadowed = judge_configmap("contract", "0007_drop_title", data, use_squawk=False, shadow=server)
    assert errors(shadowed.findings) == [("shadow-error", "contract.sql", 1)]
    assert "view recent_titles depends on column title" in shadowed.findings[0].message
    assert "static rules + shadow run" in shadowed.judged_by
    missing = judge_configmap("contract", "0007_drop_title", {**data, "0005_gone--migration.toml": ""},
                              use_squawk=False, shadow=server)
    assert "earlier migrations ['0005_gone'] are not in" in missing.judged_by
    monkeypatch.setenv("BAZBII_MIGRATIONS_DIR", str(tmp_path / "nowhere"))  # a pack published without the repository
    elsewhere = judge_configmap("contract", "0007_drop_title", data, use_squawk=False, shadow=server)
    assert "no migrations directory at" in elsewhere.judged_by and not errors(elsewhere.findings)


def test_the_preview_says_which_analysis_judged_the_migration_sql(capsys, monkeypatch, pg_cluster):
    from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV
    from offline_preview.__main__ import main

    monkeypatch.setenv(SHADOW_DSN_ENV, "")  # no shadow server; restored after the test (the preview sets it)
    assert main(["--phase", "schema=0002-expand"]) == 0
    assert "note: the SQL of migration 0002_add_category/expand was judged by static rules only" in capsys.readouterr().out
    monkeypatch.setenv("PREVIEW_SHADOW", pg_cluster.dsn())
    assert main(["--phase", "schema=0002-expand", "--shadow-dsn-env", "PREVIEW_SHADOW"]) == 0
    out = capsys.readouterr().out
    assert "0002_add_category/expand was judged by static rules + shadow run on PostgreSQL 15" in out, out


# --------------------------------------------------------------------------- what it costs
@pytest.fixture(scope="module")
def durable_server(pg_workdir):
    """A server configured like production's (fsync and synchronous commit on): CREATE DATABASE pays its WAL."""
    cluster = LocalCluster.init(pg_workdir, "shadow_durable", fsync="on", synchronous_commit="on")
    cluster.start()
    try:
        yield ShadowServer(cluster.dsn())
    finally:
        cluster.stop(mode="immediate")


@pytest.mark.parametrize("migration_id, stage", [("0002_add_category", "expand"), ("0002_add_category", "contract"),
                                                 ("0004_rename_user_name", "expand")])
def test_a_typical_stage_is_judged_by_a_shadow_run_in_under_3_s(durable_server, migration_id, stage):
    started = time.monotonic()
    lint = lint_migration(MIGRATIONS / migration_id, shadow=durable_server, stages=(stage,))
    elapsed = time.monotonic() - started
    assert lint.run.ok and not errors(lint.findings[stage]), lint.judged_by
    assert elapsed < 3.0, f"{migration_id}/{stage}: {elapsed:.2f} s ({lint.judged_by})"
