"""The Pulumi dynamic provider's methods, called directly against the real database (no engine)."""

from __future__ import annotations

import pytest

from bazbii_db.migrations import migration_checksum
from components.providers.schema_migration import SchemaMigrationProvider, SchemaMigrationStep

from .conftest import apply_all, execute, fetch

pytestmark = pytest.mark.timeout(60)


def props(dsn, mig_dir, migration_id, stage, versions=("registry.example.com/bazbii/api:2.0.0",)):
    return {"dsn": dsn, "migrationId": migration_id, "stage": stage,
            "sqlChecksum": migration_checksum(mig_dir, migration_id, stage), "appVersions": list(versions),
            "migrationsDir": str(mig_dir)}


def test_create_update_apply_stages_and_outputs_hold_no_secret(db, small_dir):
    apply_all(db, small_dir, "0001_init")
    execute(db, "INSERT INTO posts (title) SELECT 't' || g FROM generate_series(1, 500) g")
    p = SchemaMigrationProvider()
    expand = p.create(props(db, small_dir, "0002_add_category", "expand"))
    assert expand.id == "0002_add_category/expand"
    assert expand.outs["status"] == "applied" and "dsn" not in expand.outs
    assert "postgres-test-password" not in repr(expand.outs)
    migrate = p.create(props(db, small_dir, "0002_add_category", "migrate"))
    assert migrate.outs["backfillRows"] == 500
    # update with the same stage again: the journal makes it a no-op
    again = p.update(expand.id, expand.outs, props(db, small_dir, "0002_add_category", "expand"))
    assert again.outs["status"] == "already-applied"
    contract = p.create(props(db, small_dir, "0002_add_category", "contract"))
    assert contract.outs["status"] == "applied"
    assert fetch(db, "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'posts' "
                     "AND column_name = 'category'") == [("NO",)]
    assert p.delete(contract.id, contract.outs) is None  # schema stays
    assert fetch(db, "SELECT count(*) FROM bazbii_migrations.journal WHERE migration_id = '0002_add_category'") == [(3,)]


def test_contract_refused_for_old_app_version_and_error_is_redacted(db, small_dir):
    apply_all(db, small_dir, "0001_init")
    p = SchemaMigrationProvider()
    p.create(props(db, small_dir, "0002_add_category", "expand"))
    p.create(props(db, small_dir, "0002_add_category", "migrate"))
    old = props(db, small_dir, "0002_add_category", "contract",
                ["registry.example.com/bazbii/api:2.0.0", "registry.example.com/bazbii/api:1.4.0"])
    with pytest.raises(RuntimeError, match=r"api:1.4.0") as exc:
        p.create(old)
    assert "postgres-test-password" not in str(exc.value)
    assert fetch(db, "SELECT count(*) FROM bazbii_migrations.journal WHERE migration_id = '0002_add_category' AND step = 'contract'") == [(0,)]


def test_changed_files_since_preview_are_refused(db, small_dir):
    apply_all(db, small_dir, "0001_init")
    stale = props(db, small_dir, "0002_add_category", "expand")
    (small_dir / "0002_add_category" / "expand.sql").write_text(
        "ALTER TABLE posts ADD COLUMN IF NOT EXISTS category text;\n")
    with pytest.raises(RuntimeError, match="changed since preview"):
        SchemaMigrationProvider().create(stale)
    assert SchemaMigrationProvider().check({}, stale).failures[0].property == "sqlChecksum"


def test_diff_triggers_on_id_stage_checksum_and_versions(small_dir):
    p = SchemaMigrationProvider()
    old = props("host=x password=y", small_dir, "0002_add_category", "expand")
    assert p.diff("id", old, dict(old)).changes is False
    assert p.diff("id", old, dict(old, dsn="host=z password=rotated")).changes is False
    for key, value in [("migrationId", "0003_x"), ("stage", "migrate"), ("sqlChecksum", "abc"),
                       ("appVersions", ["registry.example.com/bazbii/api:2.1.0"])]:
        assert p.diff("id", old, dict(old, **{key: value})).changes is True, key


def test_check_reports_unsafe_sql_with_file_line_and_rule(small_dir):
    bad = small_dir / "0002_add_category" / "expand.sql"
    bad.write_text("-- comment\nCREATE INDEX posts_title_idx ON posts (title);\n")
    news = props("host=x", small_dir, "0002_add_category", "expand")
    failures = SchemaMigrationProvider().check({}, news).failures
    assert len(failures) == 1
    assert "migrations_small/0002_add_category/expand.sql:2" in failures[0].reason and "require-concurrent-index-creation" in failures[0].reason
    assert SchemaMigrationProvider().check({}, dict(news, stage="deploy")).failures[0].property == "stage"


def test_resource_constructor_signature_is_the_agreed_one():
    import inspect

    params = inspect.signature(SchemaMigrationStep.__init__).parameters
    assert list(params)[:8] == ["self", "name", "dsn", "migration_id", "stage", "sql_checksum", "app_versions", "opts"]
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in list(params)[2:])
