"""The SQL analysis checked against a real PostgreSQL 15: rewrite-free type changes, function volatility."""

from __future__ import annotations

import psycopg
import pytest

from bazbii_db.sql_safety import analyse_sql
from bazbii_db.sql_safety.catalog import PgCatalog
from bazbii_db.sql_safety.types import NO_REWRITE

pytestmark = pytest.mark.timeout(120)

ROWS = 2000


def _errors(findings):
    return [f.rule for f in findings if f.severity == "error"]


def _relfilenode_around(conn: psycopg.Connection, old: str, new: str, sample: str) -> tuple[int, int, str]:
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute(f"CREATE TABLE t (id bigint PRIMARY KEY, c {old})")
    conn.execute(f"INSERT INTO t SELECT g, %s::{old} FROM generate_series(1, {ROWS}) g", (sample,))
    before = conn.execute("SELECT pg_relation_filenode('t')").fetchone()[0]
    conn.execute(f"ALTER TABLE t ALTER COLUMN c TYPE {new}")
    after = conn.execute("SELECT pg_relation_filenode('t')").fetchone()[0]
    kept = conn.execute(f"SELECT count(*) FROM t WHERE c::text::{old} = %s::{old}", (sample,)).fetchone()[0]
    assert kept == ROWS
    return before, after, conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                       "WHERE attrelid = 't'::regclass AND attname = 'c'").fetchone()[0]


# One example per allow-list entry of bazbii_db.sql_safety.types.NO_REWRITE (and each modifier case).
REWRITE_FREE = [
    ("varchar(50)", "varchar(100)", "abc"),
    ("varchar(50)", "varchar", "abc"),
    ("varchar(50)", "text", "abc"),
    ("numeric(10,2)", "numeric(14,2)", "12.34"),
    ("numeric(10,2)", "numeric", "12.34"),
    ("cidr", "inet", "10.0.0.0/8"),
    ("timestamp(2)", "timestamp(4)", "2026-01-01 10:00:00.12"),
    ("timestamptz(3)", "timestamptz", "2026-01-01 10:00:00.123+00"),
]
# Beyond the allow-list: an array losing its element's length limit, a domain changed to its base type.
REWRITE_FREE_SHAPES = [
    ("varchar(20)[]", "varchar[]", "{abc}"),
    ("positive_int", "integer", "7"),
]
REWRITING = [
    ("varchar(50)", "varchar(20)", "abc"),
    ("integer", "bigint", "7"),
    ("numeric(10,2)", "numeric(12,4)", "12.34"),
    ("inet", "cidr", "10.0.0.0/8"),
    ("timestamptz(3)", "timestamptz(0)", "2026-01-01 10:00:00+00"),
    ("varchar(20)[]", "varchar(50)[]", "{abc}"),
    ("varchar(20)[]", "text[]", "{abc}"),
    ("positive_int", "bigint", "7"),
]


def test_every_allow_list_entry_has_a_proof_case():
    from bazbii_db.sql_safety import TypeSpec

    covered = {(TypeSpec.parse(old).name, TypeSpec.parse(new).name) for old, new, _ in REWRITE_FREE}
    assert covered == set(NO_REWRITE)


def _judged_then_run(db, old: str, new: str, sample: str) -> tuple[list[str], bool, str]:
    """The analysis's errors (asking this database for the column's current type), then whether
    PostgreSQL rewrote the table when it ran the change."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE DOMAIN positive_int AS integer")
        conn.execute(f"CREATE TABLE t (id bigint PRIMARY KEY, c {old})")
        errors = _errors(analyse_sql(f"ALTER TABLE t ALTER COLUMN c TYPE {new};", "expand", use_squawk=False,
                                     catalog=PgCatalog(conn)))
        before, after, final = _relfilenode_around(conn, old, new, sample)
    return errors, before != after, final


@pytest.mark.parametrize("old,new,sample", REWRITE_FREE + REWRITE_FREE_SHAPES)
def test_allowed_type_changes_keep_the_relfilenode(db, old, new, sample):
    errors, rewrote, final = _judged_then_run(db, old, new, sample)
    assert errors == []
    assert not rewrote, f"{old} -> {new} rewrote the table ({final})"


@pytest.mark.parametrize("old,new,sample", REWRITING)
def test_denied_type_changes_do_rewrite(db, old, new, sample):
    errors, rewrote, _ = _judged_then_run(db, old, new, sample)
    assert errors == ["changing-column-type"] and rewrote


@pytest.mark.parametrize("default,volatile", [
    ("now()", False), ("statement_timestamp()", False), ("lower('X')", False), ("pg_catalog.md5('x')", False),
    ("random()", True), ("gen_random_uuid()", True), ("clock_timestamp()", True),
    ("app_stable_label()", False), ("app_volatile_token()", True), ("no_such_function()", True),
])
def test_volatility_comes_from_pg_proc(db, default, volatile):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION app_stable_label() RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'x' $$")
        conn.execute("CREATE FUNCTION app_volatile_token() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT 'x' $$")
        findings = analyse_sql(f"ALTER TABLE posts ADD COLUMN x text DEFAULT {default};", "expand", use_squawk=False,
                               catalog=PgCatalog(conn))
    assert ("adding-field-with-volatile-default" in _errors(findings)) is volatile


def test_volatile_default_really_rewrites_and_a_stable_one_does_not(db):
    """The rule's premise, on this server: a volatile DEFAULT rewrites, now() does not."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE t AS SELECT g AS id FROM generate_series(1, {ROWS}) g")
        node = conn.execute("SELECT pg_relation_filenode('t')").fetchone()[0]
        conn.execute("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT now()")
        assert conn.execute("SELECT pg_relation_filenode('t')").fetchone()[0] == node
        conn.execute("ALTER TABLE t ADD COLUMN b float8 DEFAULT random()")
        assert conn.execute("SELECT pg_relation_filenode('t')").fetchone()[0] != node


def test_builtin_types_are_the_servers_own(db):
    """types.BUILTIN_TYPES is PostgreSQL 15's list of built-in scalar types (a column of one never runs a domain
    check when it is added)."""
    from bazbii_db.sql_safety.types import BUILTIN_TYPES

    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute("""SELECT typname FROM pg_type WHERE typnamespace = 'pg_catalog'::regnamespace
                                  AND typtype IN ('b', 'r', 'm') AND typcategory <> 'A'
                                  AND typname NOT LIKE 'pg\\_%' AND typname NOT LIKE 'reg%'""").fetchall()
    assert BUILTIN_TYPES == {r[0] for r in rows}


def test_the_catalog_tells_domains_from_other_user_types(db):
    from bazbii_db.sql_safety.facts import Domain, TypeSpec

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE DOMAIN checked AS integer CHECK (VALUE > 0); CREATE DOMAIN plain AS varchar(20); "
                     "CREATE TYPE mood AS ENUM ('ok')")
        catalog = PgCatalog(conn)
        assert catalog.user_type("checked") == Domain(TypeSpec("int4"), True)
        assert catalog.user_type("plain") == Domain(TypeSpec("varchar", (20,)), False)
        assert catalog.user_type("mood") is True
        assert catalog.user_type("no_such_type") is None
        findings = analyse_sql("ALTER TABLE posts ADD COLUMN a checked;\nALTER TABLE posts ADD COLUMN b mood;",
                               "expand", use_squawk=False, catalog=catalog)
    assert [(f.rule, f.line) for f in findings if f.severity == "error"] == [("adding-column-of-checked-domain", 1)]
