"""Offline analysis of migration SQL (pglast rules + squawk), no database needed."""

from __future__ import annotations

import dataclasses

import pytest

from bazbii_db.sql_safety import (Finding, SqlSafetyError, analyse_migration_dir, analyse_sql, split_statements,
                                  squawk_binary)

pytestmark = pytest.mark.timeout(60)


def rules(findings, severity="error"):
    return [(f.rule, f.line) for f in findings if f.severity == severity]


def test_finding_is_frozen_dataclass_with_required_fields():
    f = Finding("r", "m", "f.sql", 3, "error", "x")
    assert [fl.name for fl in dataclasses.fields(Finding)] == ["rule", "message", "file", "line", "severity", "fix"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.line = 4  # type: ignore[misc]


def test_create_index_without_concurrently_is_flagged_with_file_and_line():
    sql = "-- header\n\nCREATE INDEX posts_title_idx ON posts (title);\n"
    findings = analyse_sql(sql, "expand", "m/expand.sql")
    err = [f for f in findings if f.severity == "error"]
    assert [(f.rule, f.line, f.file) for f in err] == [("require-concurrent-index-creation", 3, "m/expand.sql")]
    assert "CONCURRENTLY" in err[0].fix


def test_concurrent_index_is_fine_but_needs_a_name():
    assert rules(analyse_sql("CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON posts (title);", "expand")) == []
    assert rules(analyse_sql("CREATE INDEX CONCURRENTLY ON posts (title);", "expand")) == \
        [("concurrent-index-needs-name", 1)]


def test_index_on_table_created_in_same_file_is_allowed():
    sql = "CREATE TABLE t (id bigint PRIMARY KEY, v text);\nCREATE INDEX t_v ON t (v);\n"
    assert rules(analyse_sql(sql, "expand")) == []


@pytest.mark.parametrize("constraint", [
    "FOREIGN KEY (user_id) REFERENCES users (id)",
    "CHECK (length(title) > 0)",
])
def test_constraint_without_not_valid(constraint):
    bad = f"ALTER TABLE posts ADD CONSTRAINT c {constraint};"
    assert rules(analyse_sql(bad, "expand")) == [("constraint-missing-not-valid", 1)]
    good = f"ALTER TABLE posts ADD CONSTRAINT c {constraint} NOT VALID;\nALTER TABLE posts VALIDATE CONSTRAINT c;"
    assert rules(analyse_sql(good, "migrate")) == []


def test_unique_constraint_must_use_an_index_built_concurrently():
    assert rules(analyse_sql("ALTER TABLE posts ADD CONSTRAINT u UNIQUE (title);", "expand")) == \
        [("disallowed-unique-constraint", 1)]
    assert rules(analyse_sql("ALTER TABLE posts ADD CONSTRAINT u UNIQUE USING INDEX posts_title_key;", "expand")) == []


def test_rewriting_type_change_is_flagged():
    findings = analyse_sql("SELECT 1;\nALTER TABLE users ALTER COLUMN age TYPE integer USING age::integer;", "migrate")
    assert rules(findings) == [("changing-column-type", 2)]
    assert "new column" in findings[0].fix


def test_set_not_null_needs_a_validated_check_first():
    assert rules(analyse_sql("ALTER TABLE posts ALTER COLUMN category SET NOT NULL;", "contract")) == \
        [("set-not-null-without-validated-check", 1)]
    # NOT VALID alone is not enough: the check must be validated before SET NOT NULL.
    not_validated = ("ALTER TABLE posts ADD CONSTRAINT c CHECK (category IS NOT NULL) NOT VALID;\n"
                     "ALTER TABLE posts ALTER COLUMN category SET NOT NULL;\n")
    assert rules(analyse_sql(not_validated, "contract")) == [("set-not-null-without-validated-check", 2)]
    validated = ("ALTER TABLE posts ADD CONSTRAINT c CHECK (category IS NOT NULL) NOT VALID;\n"
                 "ALTER TABLE posts VALIDATE CONSTRAINT c;\n"
                 "ALTER TABLE posts ALTER COLUMN category SET NOT NULL;\n")
    assert rules(analyse_sql(validated, "contract")) == []
    # ... or known from an earlier stage
    assert rules(analyse_sql("ALTER TABLE posts ALTER COLUMN category SET NOT NULL;", "contract",
                             known_validated_checks=[("public.posts", "category")])) == []
    # a check on another column does not count
    other = validated.replace("ALTER COLUMN category", "ALTER COLUMN title")
    assert rules(analyse_sql(other, "contract")) == [("set-not-null-without-validated-check", 3)]


@pytest.mark.parametrize("default,flagged", [
    ("random()", True), ("gen_random_uuid()", True), ("clock_timestamp()", True), ("nextval('s')", True),
    ("now()", False), ("CURRENT_TIMESTAMP", False), ("0", False), ("'general'", False),
])
def test_volatile_default_on_add_column(default, flagged):
    findings = analyse_sql(f"ALTER TABLE posts ADD COLUMN x text DEFAULT {default};", "expand")
    assert (("adding-field-with-volatile-default", 1) in rules(findings)) is flagged


def test_add_column_rewrites_and_required_fields():
    assert rules(analyse_sql("ALTER TABLE posts ADD COLUMN n bigserial;", "expand")) == [("adding-column-rewrite", 1)]
    assert rules(analyse_sql("ALTER TABLE posts ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;", "expand")) == \
        [("adding-column-rewrite", 1)]
    assert rules(analyse_sql("ALTER TABLE posts ADD COLUMN n text NOT NULL;", "expand")) == [("adding-required-field", 1)]
    assert rules(analyse_sql("ALTER TABLE posts ADD COLUMN n text NOT NULL DEFAULT 'x';", "expand")) == []


@pytest.mark.parametrize("stmt", [
    "ALTER TABLE posts DROP COLUMN content",
    "ALTER TABLE posts RENAME COLUMN content TO body",
    "DROP TABLE posts",
    "ALTER TABLE posts RENAME TO articles",
    "TRUNCATE posts",
])
def test_destructive_ddl_only_in_contract(stmt):
    for stage in ("expand", "migrate"):
        assert rules(analyse_sql(stmt + ";", stage)) == [("destructive-ddl-outside-contract", 1)], stage
    assert rules(analyse_sql(stmt + ";", "contract")) == []


def test_lock_timeout_rules_depend_on_who_runs_the_file():
    sql = "ALTER TABLE posts ADD COLUMN IF NOT EXISTS category text;"
    assert rules(analyse_sql(sql, "expand")) == []  # the runner sets lock_timeout itself
    raw = analyse_sql(sql, "expand", runner_sets_timeouts=False)
    assert rules(raw) == [("require-lock-timeout", 1)]
    assert ("require-statement-timeout", 1) in rules(raw, "warning")
    with_timeouts = "SET lock_timeout = '500ms';\nSET statement_timeout = '10min';\n" + sql
    assert rules(analyse_sql(with_timeouts, "expand", runner_sets_timeouts=False)) == []
    # disabling a timeout is an error either way
    assert rules(analyse_sql("SET lock_timeout = 0;\n" + sql, "expand")) == [("timeout-disabled", 1)]


def test_transaction_control_and_unbatched_dml_are_rejected():
    sql = "BEGIN;\nUPDATE posts SET category = 'x';\nCOMMIT;\n"
    assert rules(analyse_sql(sql, "migrate")) == [("transaction-control-in-migration", 1), ("unbatched-data-change", 2),
                                                  ("transaction-control-in-migration", 3)]


def test_drop_index_needs_concurrently():
    assert rules(analyse_sql("DROP INDEX i;", "contract")) == [("require-concurrent-index-deletion", 1)]
    assert rules(analyse_sql("DROP INDEX CONCURRENTLY IF EXISTS i;", "contract")) == []


def test_syntax_error_reports_its_line():
    findings = analyse_sql("SELECT 1;\n\nALTER TABLEX posts ADD COLUMN x int;\n", "expand", "bad.sql")
    assert [(f.rule, f.line, f.file) for f in findings] == [("syntax-error", 3, "bad.sql")]


def test_line_numbers_survive_multibyte_comments():
    sql = "-- カテゴリを追加する\n/* 日本語 */\nCREATE INDEX i ON posts (title);\n"
    assert rules(analyse_sql(sql, "expand", use_squawk=False)) == [("require-concurrent-index-creation", 3)]
    stmts = split_statements(sql)
    assert stmts[0].line == 3 and stmts[0].text == "CREATE INDEX i ON posts (title)"


@pytest.mark.skipif(squawk_binary() is None, reason="squawk-cli not installed")
def test_squawk_findings_are_merged_with_1_based_lines():
    sql = "SELECT 1;\n\nALTER TABLE posts ADD COLUMN flag char(3);\n"
    findings = analyse_sql(sql, "expand", "x.sql")
    squawk = [f for f in findings if f.message.endswith("(squawk)")]
    assert ("ban-char-field", 3) in [(f.rule, f.line) for f in squawk]
    assert all(f.severity == "warning" for f in squawk)
    # rules we implement ourselves are not reported twice by squawk
    dup = analyse_sql("CREATE INDEX i ON posts (title);", "expand")
    assert [f.rule for f in dup] == ["require-concurrent-index-creation"]
    assert not [f for f in analyse_sql(sql, "expand", use_squawk=False) if f.message.endswith("(squawk)")]


def test_stage_must_be_known():
    with pytest.raises(ValueError):
        analyse_sql("SELECT 1", "deploy")


def test_analyse_migration_dir_carries_validated_checks_across_stages(tmp_path):
    m = tmp_path / "0009_x"
    m.mkdir()
    (m / "migration.toml").write_text('contract_min_app_version = "2.0.0"\n')
    (m / "expand.sql").write_text("ALTER TABLE posts ADD COLUMN IF NOT EXISTS c text;\n")
    (m / "migrate_after.sql").write_text(
        "ALTER TABLE posts ADD CONSTRAINT c_nn CHECK (c IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE posts VALIDATE CONSTRAINT c_nn;\n")
    (m / "contract.sql").write_text("ALTER TABLE posts ALTER COLUMN c SET NOT NULL;\nALTER TABLE posts DROP COLUMN old;\n")
    result = analyse_migration_dir(m, use_squawk=False)
    assert set(result) == {"expand", "migrate", "contract"}
    assert all(not rules(v) for v in result.values())
    (m / "expand.sql").write_text("ALTER TABLE posts DROP COLUMN old;\n")
    result = analyse_migration_dir(m, use_squawk=False)
    assert [(f.rule, f.line, f.file) for f in result["expand"]] == \
        [("destructive-ddl-outside-contract", 1, str(m / "expand.sql"))]


def test_contract_without_min_version_is_an_error(tmp_path):
    m = tmp_path / "0009_x"
    m.mkdir()
    (m / "migration.toml").write_text("")
    (m / "contract.sql").write_text("ALTER TABLE posts DROP COLUMN old;\n")
    assert rules(analyse_migration_dir(m, use_squawk=False)["contract"]) == [("contract-needs-min-app-version", 1)]


def test_bad_metadata_is_reported_as_a_finding(tmp_path):
    m = tmp_path / "0009_x"
    m.mkdir()
    (m / "migration.toml").write_text('[[backfill]]\nname = "b"\ntable = "t"\nset = { c = "1); DROP TABLE t; --" }\n')
    result = analyse_migration_dir(m, use_squawk=False)
    assert [f.rule for f in result["expand"]] == ["invalid-migration-metadata"]
    assert "set.c" in result["expand"][0].message


def test_repository_migrations_pass_analysis():
    from bazbii_db.migrations import default_migrations_dir, list_migrations

    ids = list_migrations(default_migrations_dir())
    assert ids[:6] == ["0001_init", "0002_add_category", "0003_post_metadata", "0004_rename_user_name",
                       "0005_posts_user_fk", "0006_user_age_integer"]
    for mig in ids:
        for stage, findings in analyse_migration_dir(default_migrations_dir() / mig).items():
            assert not rules(findings), (mig, stage, findings)


def test_sql_safety_error_lists_file_line_and_rule():
    findings = analyse_sql("CREATE INDEX i ON posts (title);", "expand", "m/expand.sql")
    text = str(SqlSafetyError(findings))
    assert "m/expand.sql:1" in text and "require-concurrent-index-creation" in text and "nothing was run" in text


def test_alter_table_variants_are_checked():
    for sql in ("ALTER TABLE ONLY posts ADD CONSTRAINT c CHECK (id > 0);",
                "ALTER TABLE IF EXISTS public.posts ADD CONSTRAINT c CHECK (id > 0);"):
        assert rules(analyse_sql(sql, "expand")) == [("constraint-missing-not-valid", 1)], sql
