"""Offline analysis of migration SQL (pglast rules + squawk), no database needed."""

from __future__ import annotations

import dataclasses

import pytest

from bazbii_db.migrations.lint import analyse_migration_dir
from bazbii_db.sql_safety import (Finding, SqlSafetyError, analyse_sql, split_statements, validated_checks_after)

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
    # IF NOT EXISTS may have left an existing (busy) table in place: no exemption
    maybe_old = "CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, v text);\nCREATE INDEX t_v ON t (v);\n"
    assert rules(analyse_sql(maybe_old, "expand")) == [("require-concurrent-index-creation", 2)]


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
                             known_validated_checks=[("posts", "category")])) == []
    # a check on another column does not count
    other = validated.replace("ALTER COLUMN category", "ALTER COLUMN title")
    assert rules(analyse_sql(other, "contract")) == [("set-not-null-without-validated-check", 3)]


@pytest.mark.parametrize("default,flagged", [
    ("random()", True), ("gen_random_uuid()", True), ("clock_timestamp()", True), ("nextval('s')", True),
    # offline, no function is known to be stable: now() counts as volatile (the catalog test asks PostgreSQL)
    ("now()", True), ("CURRENT_TIMESTAMP", False), ("0", False), ("'general'", False),
])
def test_volatile_default_on_add_column_offline_is_conservative(default, flagged):
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
    # an old version's ON CONFLICT may name the index: dropping it, even concurrently, waits for contract
    assert rules(analyse_sql("DROP INDEX CONCURRENTLY IF EXISTS i;", "expand")) == \
        [("destructive-ddl-outside-contract", 1)]


def test_syntax_error_reports_its_line():
    findings = analyse_sql("SELECT 1;\n\nALTER TABLEX posts ADD COLUMN x int;\n", "expand", "bad.sql")
    assert [(f.rule, f.line, f.file) for f in findings] == [("syntax-error", 3, "bad.sql")]


def test_line_numbers_survive_multibyte_comments():
    sql = "-- カテゴリを追加する\n/* 日本語 */\nCREATE INDEX i ON posts (title);\n"
    assert rules(analyse_sql(sql, "expand", use_squawk=False)) == [("require-concurrent-index-creation", 3)]
    stmts = split_statements(sql)
    assert stmts[0].line == 3 and stmts[0].text == "CREATE INDEX i ON posts (title)"


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
        [("destructive-ddl-outside-contract", 1, f"{tmp_path.name}/0009_x/expand.sql")]


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


# --------------------------------------------------------------------------------------------
# Issue 12, class by class: the unsafe form is denied in expand, allowed in the stage that
# permits it (where one does), and the safe counterpart is allowed.
# --------------------------------------------------------------------------------------------
def verdicts(sql, **kwargs):
    """{stage: sorted error rules} without squawk (its findings are warnings or duplicates)."""
    kwargs.setdefault("use_squawk", False)
    return {stage: sorted({f.rule for f in analyse_sql(sql, stage, **kwargs) if f.severity == "error"})
            for stage in ("expand", "migrate", "contract")}


CONTRACT_ONLY = "destructive-ddl-outside-contract"


def assert_contract_only(sql):
    v = verdicts(sql)
    assert v["expand"] == [CONTRACT_ONLY] and v["migrate"] == [CONTRACT_ONLY], v
    assert v["contract"] == [], v


def assert_denied_everywhere(sql, rule):
    assert verdicts(sql) == {"expand": [rule], "migrate": [rule], "contract": [rule]}


def assert_allowed(sql, **kwargs):
    assert verdicts(sql, **kwargs) == {"expand": [], "migrate": [], "contract": []}


def test_domain_constraint_needs_not_valid():
    assert_denied_everywhere("ALTER DOMAIN positive ADD CONSTRAINT pos CHECK (VALUE > 0);", "domain-constraint-scan")
    assert_allowed("ALTER DOMAIN positive ADD CONSTRAINT pos CHECK (VALUE > 0) NOT VALID;\n"
                   "ALTER DOMAIN positive VALIDATE CONSTRAINT pos;")


def test_enum_value_rename_is_contract_only():
    assert_contract_only("ALTER TYPE post_state RENAME VALUE 'draft' TO 'unpublished';")
    assert_allowed("ALTER TYPE post_state ADD VALUE IF NOT EXISTS 'unpublished';")


@pytest.mark.parametrize("sql", ["ALTER SCHEMA app RENAME TO app_v2;", "ALTER TABLE posts SET SCHEMA archive;"])
def test_schema_rename_and_moving_a_table_are_contract_only(sql):
    assert_contract_only(sql)


def test_schema_counterpart_creating_a_schema_is_allowed():
    assert_allowed("CREATE SCHEMA IF NOT EXISTS archive;")


def test_drop_constraint_is_contract_only():
    assert_contract_only("ALTER TABLE posts DROP CONSTRAINT posts_user_id_fkey;")
    assert_allowed("CREATE TABLE tags (id bigint PRIMARY KEY, name text CONSTRAINT tags_name_len CHECK (length(name) > 0));\n"
                   "ALTER TABLE tags DROP CONSTRAINT tags_name_len;")


def test_refresh_materialized_view_needs_concurrently():
    assert_denied_everywhere("REFRESH MATERIALIZED VIEW post_counts;", "require-concurrent-refresh")
    assert_allowed("REFRESH MATERIALIZED VIEW CONCURRENTLY post_counts;")


def test_statements_inside_do_blocks_are_judged():
    static = "DO $$\nBEGIN\n  CREATE INDEX posts_title_idx ON posts (title);\nEND\n$$;"
    v = verdicts(static)
    assert v == {stage: ["require-concurrent-index-creation"] for stage in v}
    literal = "DO $body$ BEGIN EXECUTE 'ALTER TABLE posts DROP COLUMN content'; END $body$;"
    assert_contract_only(literal)
    dynamic = "DO $$ DECLARE c text := 'content'; BEGIN EXECUTE format('ALTER TABLE posts DROP COLUMN %I', c); END $$;"
    assert verdicts(dynamic)["expand"] == ["cannot-judge"] and verdicts(dynamic)["contract"] == ["cannot-judge"]
    # the block is one transaction: a lock taken before other statements is held through them
    assert_denied_everywhere("DO $$ BEGIN ALTER TABLE posts ADD COLUMN IF NOT EXISTS note text; PERFORM 1; END $$;",
                             "lock-held-in-do-block")
    assert_allowed("DO $$ BEGIN PERFORM 1; ALTER TABLE posts ADD COLUMN IF NOT EXISTS note text; END $$;")


def test_do_block_line_numbers_point_into_the_body():
    sql = "SELECT 1;\nDO $$\nBEGIN\n  PERFORM 1;\n  UPDATE posts SET title = 'x';\nEND\n$$;"
    assert rules(analyse_sql(sql, "migrate", use_squawk=False)) == [("unbatched-data-change", 5)]


@pytest.mark.parametrize("sql,rule", [
    ("RESET lock_timeout;", "timeout-reset"),
    ("SET lock_timeout TO DEFAULT;", "timeout-reset"),
    ("RESET ALL;", "timeout-reset"),
    ("SET lock_timeout = '10s';", "lock-timeout-raised"),
    ("SET lock_timeout = 60000;", "lock-timeout-raised"),
    ("SELECT set_config('lock_timeout', '0', false);", "timeout-disabled"),
    ("SET statement_timeout = 0;", "timeout-disabled"),
    ("RESET statement_timeout;", "timeout-reset"),
])
def test_a_file_may_not_reset_raise_or_disable_its_timeouts(sql, rule):
    assert_denied_everywhere(sql, rule)


def test_a_file_may_lower_lock_timeout_and_raise_statement_timeout():
    assert_allowed("SET lock_timeout = '200ms';\nSET statement_timeout = '2h';\n"
                   "SELECT set_config('lock_timeout', '100ms', false);")


def test_new_table_exemption_respects_schema_qualification():
    other_schema = ("CREATE TABLE staging.posts (id bigint PRIMARY KEY, title text);\n"
                    "CREATE INDEX posts_title_idx ON posts (title);")
    assert verdicts(other_schema)["expand"] == ["require-concurrent-index-creation"]
    assert_allowed("CREATE TABLE staging.posts (id bigint PRIMARY KEY, title text);\n"
                   "CREATE INDEX posts_title_idx ON staging.posts (title);")


def test_not_null_check_counts_only_on_its_own_table():
    other_table = ("ALTER TABLE users ADD CONSTRAINT cat_nn CHECK (category IS NOT NULL) NOT VALID;\n"
                   "ALTER TABLE users VALIDATE CONSTRAINT cat_nn;\n"
                   "ALTER TABLE posts ADD CONSTRAINT cat_nn CHECK (category IS NOT NULL) NOT VALID;\n"
                   "ALTER TABLE posts ALTER COLUMN category SET NOT NULL;")
    assert "set-not-null-without-validated-check" in verdicts(other_table)["contract"]
    assert_allowed("ALTER TABLE posts ADD CONSTRAINT cat_nn CHECK (category IS NOT NULL) NOT VALID;\n"
                   "ALTER TABLE posts VALIDATE CONSTRAINT cat_nn;\n"
                   "ALTER TABLE posts ALTER COLUMN category SET NOT NULL;")


def test_checks_carry_over_from_expand_through_migrate_to_contract(tmp_path):
    m = tmp_path / "migrations" / "0009_nn"
    m.mkdir(parents=True)
    (m / "migration.toml").write_text('contract_min_app_version = "2.0.0"\n')
    (m / "expand.sql").write_text("ALTER TABLE posts ADD CONSTRAINT posts_cat_nn CHECK (category IS NOT NULL) NOT VALID;\n")
    (m / "migrate_after.sql").write_text("ALTER TABLE posts VALIDATE CONSTRAINT posts_cat_nn;\n")
    (m / "contract.sql").write_text("ALTER TABLE posts ALTER COLUMN category SET NOT NULL;\n")
    assert {stage: rules(f) for stage, f in analyse_migration_dir(m, use_squawk=False).items()} == \
        {"expand": [], "migrate": [], "contract": []}
    # without the VALIDATE in migrate the contract's SET NOT NULL would scan: denied
    (m / "migrate_after.sql").write_text("SELECT 1;\n")
    assert rules(analyse_migration_dir(m, use_squawk=False)["contract"]) == \
        [("set-not-null-without-validated-check", 1)]
    # the same chain through validated_checks_after, as the policy pack passes facts from stage to stage
    facts = validated_checks_after((m / "expand.sql").read_text())
    facts = validated_checks_after("ALTER TABLE posts VALIDATE CONSTRAINT posts_cat_nn;", facts)
    assert rules(analyse_sql((m / "contract.sql").read_text(), "contract", known_validated_checks=facts,
                             use_squawk=False)) == []


@pytest.mark.parametrize("old,new", [
    ("varchar(50)", "varchar(100)"), ("varchar(50)", "varchar"), ("varchar(50)", "text"),
    ("numeric(10,2)", "numeric(12,2)"), ("numeric(10,2)", "numeric"), ("cidr", "inet"),
])
def test_rewrite_free_type_changes_are_allowed_when_the_old_type_is_known(old, new):
    create = f"CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, c {old});"
    facts = validated_checks_after(create)
    alter = f"ALTER TABLE t ALTER COLUMN c TYPE {new};"
    assert_allowed(alter, known_validated_checks=facts)
    # the old type unknown (no earlier statement, no catalog): denied, fail closed
    assert verdicts(alter)["expand"] == ["changing-column-type"]


@pytest.mark.parametrize("old,new", [
    ("varchar(50)", "varchar(20)"), ("integer", "bigint"), ("numeric(10,2)", "numeric(12,4)"), ("inet", "cidr"),
    ("text", "varchar(10)"),
])
def test_rewriting_type_changes_are_denied_in_every_stage(old, new):
    facts = validated_checks_after(f"CREATE TABLE t (id bigint PRIMARY KEY, c {old});")
    v = verdicts(f"ALTER TABLE t ALTER COLUMN c TYPE {new};", known_validated_checks=facts)
    assert v == {stage: ["changing-column-type"] for stage in v}


def test_type_change_with_using_is_denied_even_when_rewrite_free_otherwise():
    facts = validated_checks_after("CREATE TABLE t (id bigint PRIMARY KEY, c varchar(5));")
    assert verdicts("ALTER TABLE t ALTER COLUMN c TYPE text USING c || '';",
                    known_validated_checks=facts)["expand"] == ["changing-column-type"]


def test_column_types_carry_over_from_earlier_migrations(tmp_path):
    root = tmp_path / "migrations"
    (root / "0001_a").mkdir(parents=True)
    (root / "0001_a" / "migration.toml").write_text("")
    (root / "0001_a" / "expand.sql").write_text("CREATE TABLE t (id bigint PRIMARY KEY, c varchar(50));\n")
    (root / "0002_b").mkdir()
    (root / "0002_b" / "migration.toml").write_text("")
    (root / "0002_b" / "expand.sql").write_text("ALTER TABLE t ALTER COLUMN c TYPE varchar(200);\n")
    assert not rules(analyse_migration_dir(root / "0002_b", use_squawk=False)["expand"])
    (root / "0002_b" / "expand.sql").write_text("ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n")
    assert rules(analyse_migration_dir(root / "0002_b", use_squawk=False)["expand"]) == [("changing-column-type", 1)]


def test_set_not_null_message_names_the_column():
    [finding] = analyse_sql("ALTER TABLE posts ALTER COLUMN category SET NOT NULL;", "contract", use_squawk=False)
    assert "{col}" not in finding.message and "CHECK (category IS NOT NULL)" in finding.message


def test_exclusion_constraint_gets_no_using_index_advice():
    [finding] = analyse_sql("ALTER TABLE bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist (room WITH =, during WITH &&);",
                            "expand", use_squawk=False)
    assert finding.rule == "exclusion-constraint"
    assert "USING INDEX" not in finding.fix and "cannot attach an existing index" in finding.message


def test_unnamed_primary_key_is_described_and_not_called_serial():
    findings = analyse_sql("ALTER TABLE posts ADD PRIMARY KEY (id);", "expand")
    errors = [f for f in findings if f.severity == "error"]
    assert [f.rule for f in errors] == ["disallowed-unique-constraint"]
    assert errors[0].message.startswith("ADD PRIMARY KEY (id) on posts")
    assert not [f for f in findings if "serial" in f.message.lower()]


def test_reindex_is_reported_once():
    findings = analyse_sql("REINDEX TABLE posts;", "expand")
    assert [f.rule for f in findings if "reindex" in f.rule] == ["require-concurrent-reindex"]
    assert_allowed("REINDEX TABLE CONCURRENTLY posts;")


def test_findings_cite_the_migration_file_path(tmp_path):
    root = tmp_path / "migrations"
    (root / "0002_add_category").mkdir(parents=True)
    (root / "0002_add_category" / "migration.toml").write_text("")
    (root / "0002_add_category" / "expand.sql").write_text("CREATE INDEX i ON posts (title);\n")
    [finding] = analyse_migration_dir(root / "0002_add_category", use_squawk=False)["expand"]
    assert finding.file == "migrations/0002_add_category/expand.sql"


@pytest.mark.parametrize("sql, rule", [
    # only PostgreSQL can tell whether these scan: refused offline, judged by a shadow run
    ("ALTER TABLE posts ATTACH PARTITION posts_2026 FOR VALUES FROM (1) TO (100);", "needs-shadow-run"),
    ("CREATE TABLE posts_2027 PARTITION OF posts FOR VALUES FROM (100) TO (200);", "needs-shadow-run"),
    ("CALL reorganise_posts();", "data-change-in-function"),
    ("ALTER SYSTEM SET lock_timeout = 0;", "cannot-judge"),
    ("ALTER TABLE posts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;", "cannot-judge"),
])
def test_what_the_analysis_cannot_judge_is_an_error_in_expand_and_contract(sql, rule):
    v = verdicts(sql)
    assert rule in v["expand"] and rule in v["contract"], v


def test_unparseable_sql_is_an_error_in_expand_and_contract():
    for stage in ("expand", "contract"):
        assert rules(analyse_sql("ALTER TABLE posts ADD COLUMN x int,,;", stage)) == [("syntax-error", 1)]


@pytest.mark.parametrize("toml", ['contract_min_app_version = "2.0.0"\n', ""])
def test_unparseable_contract_file_is_a_finding_not_a_traceback(tmp_path, toml):
    m = tmp_path / "migrations" / "0009_x"
    m.mkdir(parents=True)
    (m / "migration.toml").write_text(toml)
    (m / "contract.sql").write_text("ALTER TABLEX posts;\n")
    found = rules(analyse_migration_dir(m, use_squawk=False)["contract"])
    assert ("syntax-error", 1) in found
    assert (("contract-needs-min-app-version", 1) in found) is (toml == "")


def test_the_analysis_package_and_the_migration_modules_import_nothing_inside_functions():
    """Issue 13.3: no import cycle hidden by imports inside functions; the analysis knows no migrations."""
    import ast as pyast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "bazbii_db"
    modules = sorted((root / "sql_safety").glob("*.py")) + [
        root / "migrations" / f"{name}.py" for name in ("spec", "dualwrite", "stageplan", "lint", "runner", "executor",
                                                        "journal", "versions")]
    for path in modules:
        tree = pyast.parse(path.read_text())
        for func in (n for n in pyast.walk(tree) if isinstance(n, (pyast.FunctionDef, pyast.AsyncFunctionDef))):
            inner = [n for n in pyast.walk(func) if isinstance(n, (pyast.Import, pyast.ImportFrom))]
            assert not inner, f"{path.name}:{inner[0].lineno} imports inside {func.name}()"
        if path.parent.name == "sql_safety":
            imported = [n.module or "" for n in pyast.walk(tree) if isinstance(n, pyast.ImportFrom)]
            assert not [m for m in imported if m.startswith("bazbii_db.migrations")], path.name
