"""Down steps: every rollback text of the schema track is true, on a real PostgreSQL 15.

A step of the schema track whose rollback text promises a down step must have one
(``migrations/<id>/<stage>.down.sql``), and it must run: setting the track back one step makes
the program apply the previous stage again, and the runner then runs the later stage's down
step. A stage without a down step is not promised to be undone.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bazbii_db.migrations import load_migration, migration_checksum
from bazbii_db.migrations.errors import IrreversibleStage, StageOrderError
from bazbii_plan.stackfile import read_stack_file
from bazbii_db.sql_safety import STAGES
from bazbii_db.dataplane import Runtime, schema_apply_command, secrets_stdin

from .conftest import MIGRATIONS, REPO, apply_all, execute, fetch, runner
from .test_schema_cli import run

pytestmark = pytest.mark.timeout(120)
V2 = ["registry.example.com/bazbii/api:2.0.0"]


def schema_track_steps():
    """``(step name, migration id, stage, rollback text)`` of the shipped schema track."""
    values, _, _ = read_stack_file(REPO / "Pulumi.prod.yaml")
    out, migration_id = [], None
    for step in values["plan"]["schema"]["steps"]:
        migration = (step.get("changes") or {}).get("schema", {}).get("migration") or {}
        migration_id = migration.get("id", migration_id)
        if migration.get("stage"):
            out.append((step["name"], migration_id, migration["stage"], step["rollback"]))
    return out


def claims_down_step(rollback: str) -> bool:
    return "down step" in rollback.lower()


def test_the_schema_track_names_its_migrations():
    steps = schema_track_steps()
    assert [(s[1], s[2]) for s in steps] == [("0002_add_category", stage) for stage in STAGES]
    assert [s[0] for s in steps if claims_down_step(s[3])] == ["0002-contract"]


@pytest.mark.parametrize("step,migration_id,stage,rollback", schema_track_steps())
def test_every_rollback_text_matches_the_down_steps_on_disk(step, migration_id, stage, rollback):
    migration = load_migration(MIGRATIONS / migration_id)
    down = migration.down_file(stage)
    if claims_down_step(rollback):
        assert down is not None, f"{step}: the rollback text promises a down step but {stage}.down.sql is missing"
        assert f"migrations/{migration_id}/{down.name}" in rollback, "the text names the file it relies on"
    else:
        assert down is None, f"{step}: {down} exists, but the rollback text does not say it runs"


def _posts_columns(dsn):
    return fetch(dsn, "SELECT column_name, is_nullable, column_default, data_type FROM information_schema.columns "
                      "WHERE table_name = 'posts' ORDER BY column_name")


def _constraints(dsn):
    return fetch(dsn, "SELECT conname, contype FROM pg_constraint WHERE conrelid = 'posts'::regclass ORDER BY 1")


def _base(dsn, mig_dir):
    apply_all(dsn, mig_dir, "0001_init")
    execute(dsn, "INSERT INTO posts (title) SELECT 'title ' || g FROM generate_series(1, 3000) g")


def test_every_down_step_in_migrations_runs_and_the_stage_applies_again(db, mig_dir):
    """All migrations up to and including the stage, then its down step, then the stage once more."""
    cases = [(m.name, stage) for m in sorted(MIGRATIONS.iterdir()) if (m / "migration.toml").exists()
             for stage in STAGES if load_migration(m).down_file(stage)]
    assert cases, "no down steps at all"
    r = runner(db, mig_dir)
    versions = ["registry.example.com/bazbii/api:99.0.0"]
    for migration_id, stage in cases:
        for earlier in sorted(p.name for p in mig_dir.iterdir() if (p / "migration.toml").exists()):
            if earlier > migration_id:
                break
            for s in STAGES[:STAGES.index(stage) + 1] if earlier == migration_id else ("expand",):
                r.apply(earlier, s, versions)
        before = r.revert(migration_id, stage)
        assert before.status == "reverted" and before.units_run >= 1
        assert [e.step for e in r.status() if e.migration_id == migration_id and e.status == "applied"] == \
            list(STAGES[:STAGES.index(stage)])
        # idempotent: a down step that failed part-way runs again from the start
        execute(db, load_migration(mig_dir / migration_id).down_file(stage).read_text())
        assert r.apply(migration_id, stage, versions).status == "applied"


def test_0002_contract_down_step_restores_the_migrate_schema_for_1_9_and_2_0(db, mig_dir):
    _base(db, mig_dir)
    r = runner(db, mig_dir)
    r.apply("0002_add_category", "expand")
    r.apply("0002_add_category", "migrate")
    after_migrate = (_posts_columns(db), _constraints(db))
    r.apply("0002_add_category", "contract", V2)
    assert ("category", "NO", "'general'::character varying", "character varying") in _posts_columns(db)

    # the rollback as the program does it: the schema track is set back to 0002-migrate
    result = r.apply("0002_add_category", "migrate")
    assert result.reverted == ["contract"] and result.status == "already-applied"
    assert (_posts_columns(db), _constraints(db)) == after_migrate
    # 1.9 does not know the column: its inserts get the default; 2.0 writes it, NULL included
    execute(db, "INSERT INTO posts (user_id, title, content) VALUES (NULL, 'from 1.9', 'x')")
    execute(db, "INSERT INTO posts (title, category) VALUES ('from 2.0', 'news'), ('2.0 unset', NULL)")
    assert fetch(db, "SELECT title, category FROM posts WHERE title IN ('from 1.9', 'from 2.0', '2.0 unset') "
                     "ORDER BY title") == [("2.0 unset", None), ("from 1.9", "general"), ("from 2.0", "news")]
    assert fetch(db, "SELECT id, title, content FROM posts WHERE title = 'from 1.9'")  # 1.9's read query
    assert [(e.step, e.status) for e in r.status() if e.migration_id == "0002_add_category"] == \
        [("expand", "applied"), ("migrate", "applied"), ("contract", "reverted")]

    # rolling forward again runs the whole contract (the NULL row is why a backfill would be needed first)
    execute(db, "UPDATE posts SET category = 'general' WHERE category IS NULL")
    assert r.apply("0002_add_category", "contract", V2).status == "applied"
    assert ("category", "NO", "'general'::character varying", "character varying") in _posts_columns(db)


def test_the_generated_runner_command_runs_the_down_step_when_the_track_steps_back(db, mig_dir):
    """Setting bazbii:schemaPhase back to 0002-migrate makes the program apply migrate again, on the server,
    with the command the schema component generates (tests/ssh runs it over a real SSH connection)."""
    _base(db, mig_dir)
    apply_all(db, mig_dir, "0002_add_category", app_versions=V2)
    command = schema_apply_command(
        migration_id="0002_add_category", stage="migrate", app_versions=V2,
        expected_checksum=migration_checksum(mig_dir, "0002_add_category", "migrate"), migrations_dir=str(mig_dir),
        runtime=Runtime(python=sys.executable, app_dir=str(REPO)))
    done = subprocess.run(["bash", "-c", command], input=secrets_stdin([db]), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert fetch(db, "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'posts' "
                     "AND column_name = 'category'") == [("YES",)]


def test_revert_refuses_irreversible_and_out_of_order_stages(db, mig_dir):
    _base(db, mig_dir)
    r = runner(db, mig_dir)
    with pytest.raises(IrreversibleStage, match="no down step"):
        r.revert("0002_add_category", "migrate")
    assert r.revert("0002_add_category", "contract").status == "not-applied"
    apply_all(db, mig_dir, "0002_add_category", app_versions=V2)
    # a down step only runs for the latest applied stage
    (mig_dir / "0002_add_category" / "migrate.down.sql").write_text(
        "ALTER TABLE posts ALTER COLUMN category SET DEFAULT 'general';\n")
    with pytest.raises(StageOrderError, match="revert contract first"):
        r.revert("0002_add_category", "migrate")


def test_an_unsafe_down_step_is_refused_before_anything_runs(db, mig_dir):
    _base(db, mig_dir)
    apply_all(db, mig_dir, "0002_add_category", app_versions=V2)
    (mig_dir / "0002_add_category" / "contract.down.sql").write_text("ALTER TABLE posts DROP COLUMN category;\n")
    proc = run("--migrations-dir", str(mig_dir), "down", "--dsn-env", "DOWN_DSN", "--migration", "0002_add_category",
               "--stage", "contract", env_extra={"DOWN_DSN": db})
    assert proc.returncode == 1, proc.stderr
    assert "migrations/0002_add_category/contract.down.sql:1: error[destructive-ddl-outside-contract]" in proc.stderr
    assert ("category", "NO") in [(c[0], c[1]) for c in _posts_columns(db)]


def test_cli_down_runs_the_contract_down_step(db, mig_dir):
    _base(db, mig_dir)
    apply_all(db, mig_dir, "0002_add_category", app_versions=V2)
    proc = run("--migrations-dir", str(mig_dir), "down", "--dsn-env", "DOWN_DSN", "--migration", "0002_add_category",
               "--stage", "contract", env_extra={"DOWN_DSN": db})
    assert proc.returncode == 0, proc.stderr
    assert "0002_add_category/contract: reverted" in proc.stdout
    assert ("category", "YES") in [(c[0], c[1]) for c in _posts_columns(db)]


def test_a_revert_keeps_the_journal_row_marked_reverted(db, mig_dir):
    """The history stays: who applied the stage and when, and that and when it was reverted; applying it again
    runs it in full and keeps the count."""
    _base(db, mig_dir)
    r = runner(db, mig_dir)
    apply_all(db, mig_dir, "0002_add_category", app_versions=V2)
    row = "SELECT status, units_done, cardinality(unit_checksums), reverts, reverted_at IS NOT NULL, " \
          "runner <> '', attempts FROM bazbii_migrations.journal " \
          "WHERE migration_id = '0002_add_category' AND step = 'contract'"
    assert r.revert("0002_add_category", "contract").status == "reverted"
    assert fetch(db, row) == [("reverted", 0, 0, 1, True, True, 1)]
    assert r.revert("0002_add_category", "contract").status == "not-applied"  # nothing to revert twice
    assert r.apply("0002_add_category", "contract", V2).units_run == 4  # in full: every statement again
    assert fetch(db, row) == [("applied", 4, 4, 1, True, True, 2)]
    # migrate may be reverted only once contract is reverted (a reverted row does not count as applied)
    (mig_dir / "0002_add_category" / "migrate.down.sql").write_text(
        "ALTER TABLE posts ALTER COLUMN category SET DEFAULT 'general';\n")
    with pytest.raises(StageOrderError, match="revert contract first"):
        r.revert("0002_add_category", "migrate")
    r.revert("0002_add_category", "contract")
    assert r.revert("0002_add_category", "migrate").status == "reverted"


def test_a_journal_from_before_reverts_is_upgraded_in_place(db, mig_dir):
    """A journal created by the previous version (no reverted status, no revert columns) gets them on the next
    run, its rows kept."""
    _base(db, mig_dir)
    execute(db, "ALTER TABLE bazbii_migrations.journal DROP COLUMN reverted_at, DROP COLUMN reverts, "
                "DROP CONSTRAINT journal_status_check, ADD CONSTRAINT journal_status_check "
                "CHECK (status IN ('running', 'failed', 'applied'))")
    r = runner(db, mig_dir)
    apply_all(db, mig_dir, "0002_add_category", app_versions=V2)
    assert r.revert("0002_add_category", "contract").status == "reverted"
    assert fetch(db, "SELECT count(*), count(*) FILTER (WHERE status = 'reverted') FROM bazbii_migrations.journal") \
        == [(6, 1)]
