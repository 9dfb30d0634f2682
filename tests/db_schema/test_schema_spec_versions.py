"""Migration metadata, checksums, version gate and secret handling (no database)."""

from __future__ import annotations

import pytest

from bazbii_db.migrations import (ContractRefused, MigrationSpecError, check_contract_allowed, load_migration,
                                  migration_checksum, parse_version, read_migration_sql, version_from_image)
from bazbii_db.migrations.backfill import LagWindow, batch_statement
from bazbii_db.migrations.dsn import DsnError, dsn_from_env, dsn_from_file, redact
from bazbii_db.migrations.dualwrite import install_statements, object_name
from bazbii_db.migrations.executor import backoff_delay
from bazbii_db.migrations.spec import BackfillSpec, DualWriteSpec
from bazbii_db.migrations.stageplan import plan_stage

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("a,b", [("1.9.9", "2.0.0"), ("2.0.0-rc.1", "2.0.0"), ("2.0.0", "2.0.1"), ("v1.10.0", "1.11.0"),
                                 ("2.0.0-alpha", "2.0.0-beta"), ("2.0.0-1", "2.0.0-alpha")])
def test_version_ordering(a, b):
    assert parse_version(a) < parse_version(b)


def test_version_equality_ignores_prefix_and_build():
    assert parse_version("2.0.0") == parse_version("2.0.0+build.5") == parse_version("v2.0.0")


@pytest.mark.parametrize("text", ["2.0", "2", "2.0.0.1", "latest", "2.0.0-", "2.0.0-rc..1", ""])
def test_short_or_malformed_versions_are_refused(text):
    """One meaning with the contract policy: a version is MAJOR.MINOR.PATCH (a `2.0` tag may be moving)."""
    assert parse_version(text) is None


def test_runner_and_contract_policy_agree_on_a_short_tag():
    from policies.rules.schema import images_below
    image = "registry.example.com/bazbii/api:2.0"
    assert version_from_image(image) is None
    with pytest.raises(ContractRefused, match="no readable version"):
        check_contract_allowed("2.0.0", [image])
    assert [why for _, _, why in images_below([("app.api", image)], "2.0.0")] == [
        "tag '2.0' is not a version MAJOR.MINOR.PATCH (e.g. 2.0.0 or 2.0.0-rc.1), so its version is unknown"]


@pytest.mark.parametrize("ref,expected", [
    ("registry.example.com/bazbii/api:2.0.0", "2.0.0"),
    ("registry.example.com:5000/bazbii/api:v2.1.3", "2.1.3"),
    ("registry.example.com/bazbii/api:2.0.0@sha256:abcd", "2.0.0"),
    ("2.0.0", "2.0.0"),
    ("registry.example.com/bazbii/api:latest", None),
    ("registry.example.com/bazbii/api", None),
    ("registry.example.com/bazbii/api@sha256:abcd", None),
    ("registry.example.com:5000/bazbii/api", None),
])
def test_version_from_image(ref, expected):
    v = version_from_image(ref)
    assert (v == parse_version(expected)) if expected else v is None


def test_contract_gate():
    check_contract_allowed("2.0.0", ["registry.example.com/bazbii/api:2.0.0", "registry.example.com/bazbii/api:2.1.0"])
    with pytest.raises(ContractRefused, match=r"api:1.9.0.*1.9.0 < 2.0.0"):
        check_contract_allowed("2.0.0", ["registry.example.com/bazbii/api:2.0.0", "registry.example.com/bazbii/api:1.9.0"])
    with pytest.raises(ContractRefused, match="no readable version"):
        check_contract_allowed("2.0.0", ["registry.example.com/bazbii/api:latest"])
    with pytest.raises(ContractRefused, match="no running application versions"):
        check_contract_allowed("2.0.0", [])
    with pytest.raises(ContractRefused):
        check_contract_allowed(None, ["3.0.0"])
    with pytest.raises(ContractRefused):
        check_contract_allowed("2.0.0", ["2.0.0-rc.1"])


def test_checksums_are_per_stage_and_change_with_content(mig_dir):
    c = {s: migration_checksum(mig_dir, "0002_add_category", s) for s in ("expand", "migrate", "contract")}
    assert len(set(c.values())) == 3
    (mig_dir / "0002_add_category" / "contract.sql").write_text("ALTER TABLE posts DROP COLUMN x;\n")
    assert migration_checksum(mig_dir, "0002_add_category", "contract") != c["contract"]
    assert migration_checksum(mig_dir, "0002_add_category", "expand") == c["expand"]
    # the backfill spec is part of the migrate checksum, its batch tuning is not
    toml = mig_dir / "0002_add_category" / "migration.toml"
    toml.write_text(toml.read_text().replace("batch_size = 2000", "batch_size = 500"))
    assert migration_checksum(mig_dir, "0002_add_category", "migrate") == c["migrate"]
    toml.write_text(toml.read_text().replace("'general'", "'misc'"))
    assert migration_checksum(mig_dir, "0002_add_category", "migrate") != c["migrate"]


def test_read_migration_sql(mig_dir):
    text = read_migration_sql(mig_dir, "0005_posts_user_fk", "migrate")
    assert "-- migrate_after.sql" in text and "VALIDATE CONSTRAINT posts_user_id_fkey" in text


def test_plan_orders_units(mig_dir):
    m = load_migration(mig_dir / "0004_rename_user_name")
    assert [u.kind for u in plan_stage(m, "expand")] == ["sql", "dual_write_install", "dual_write_install"]
    assert [u.kind for u in plan_stage(m, "migrate")] == ["backfill"]
    assert [u.kind for u in plan_stage(m, "contract")][:2] == ["dual_write_drop", "dual_write_drop"]
    m5 = load_migration(mig_dir / "0005_posts_user_fk")
    assert [u.label for u in plan_stage(m5, "migrate")] == ["backfill posts_orphan_user_ids", "migrate_after.sql:2"]


@pytest.mark.parametrize("toml,match", [
    ('id = "other"\n', "does not match"),
    ('contract_min_app_version = "two"\n', "not a version"),
    ('surprise = 1\n', "unknown keys"),
    ('[[backfill]]\nname = "b"\ntable = "t"\n', "needs set"),
    ('[[backfill]]\nname = "b"\ntable = "a.b.c"\nset = { c = "1" }\n', "schema.table"),
    ('[[backfill]]\nname = "b"\ntable = "t"\nset = { c = "1" }\nwhere = "true; DELETE FROM t"\n', "where"),
    ('[[backfill]]\nname = "b"\ntable = "t"\nkind = "copy"\n', "needs target"),
    ('[dual_write]\ntable = "t"\nold_column = "a"\n', "new_column"),
    ('x = [\n', "invalid TOML"),
])
def test_bad_metadata(tmp_path, toml, match):
    d = tmp_path / "0009_bad"
    d.mkdir()
    (d / "migration.toml").write_text(toml)
    with pytest.raises(MigrationSpecError, match=match):
        load_migration(d)


def test_backfill_statement_is_a_pk_range_without_cte():
    spec = BackfillSpec(name="b", kind="update", table="app.posts", key="id", set={"category": "'a%b'"},
                        where="category IS NULL")
    text = batch_statement(spec).as_string(None)
    assert text == ('UPDATE "app"."posts" SET "category" = (\'a%%b\') '
                    'WHERE "id" > %s AND "id" <= %s AND (category IS NULL)')
    assert "WITH" not in text.upper()
    copy = BackfillSpec(name="c", kind="copy", table="posts", key="id", target="post_metadata",
                        columns={"post_id": "id", "metadata": "jsonb_build_object('content', content)"},
                        conflict=("post_id",))
    assert batch_statement(copy).as_string(None) == (
        'INSERT INTO "post_metadata" ("post_id", "metadata") SELECT (id), (jsonb_build_object(\'content\', content)) '
        'FROM "posts" WHERE "id" > %s AND "id" <= %s ON CONFLICT ("post_id") DO NOTHING')


def test_dual_write_identifiers_are_quoted_and_names_bounded():
    spec = DualWriteSpec(table="users", old_column='we"ird', new_column="x" * 60)
    function, trigger = install_statements(spec)
    assert '"we""ird"' in function.replace("''", "'") or '"we""ird"' in function
    assert len(object_name(spec).encode()) <= 63


def test_lag_window_keeps_the_maximum_over_the_window():
    w = LagWindow(window_s=2.0)
    assert w.add(0.1, now=0.0) == 0.1
    assert w.add(9.0, now=0.5) == 9.0
    assert w.add(0.0, now=1.0) == 9.0  # one good sample after a spike is not enough
    assert w.add(0.0, now=2.6) == 0.0  # the spike has left the window


def test_backoff_is_jittered_exponential_and_capped():
    import random

    rng = random.Random(1)
    delays = [backoff_delay(a, 0.1, 1.0, rng) for a in range(8)]
    for a, d in enumerate(delays):
        cap = min(1.0, 0.1 * 2 ** a)
        assert cap / 2 <= d <= cap
    assert len({round(d, 6) for d in delays}) == len(delays)


def test_dsn_from_env_and_file_and_redaction(tmp_path, monkeypatch):
    dsn = "host=db port=5432 dbname=app user=migrator password=s3cr3t-pw"
    monkeypatch.setenv("APP_DSN", dsn)
    assert dsn_from_env("APP_DSN") == dsn
    with pytest.raises(DsnError):
        dsn_from_env("NOT_SET_ANYWHERE")
    f = tmp_path / "dsn"
    f.write_text(dsn + "\n")
    assert dsn_from_file(f) == dsn
    msg = redact(f"failed: {dsn} and postgresql://migrator:s3cr3t-pw@db/app and password='a b' x", dsn)
    assert "s3cr3t-pw" not in msg and "a b" not in msg
    assert "postgresql://migrator:********@db/app" in msg
