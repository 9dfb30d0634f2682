"""The seed document's migration examples, end to end against a real PostgreSQL 15.

Each test plays the application versions by hand between the stages: "old" code writes only
the old shape, "new" code the new one, exactly as both would while a rolling deploy runs.
"""

from __future__ import annotations

import pytest

from .conftest import apply_all, execute, fetch, runner

pytestmark = pytest.mark.timeout(90)
V = lambda v: [f"registry.example.com/bazbii/api:{v}"]  # noqa: E731


def relfilenode(dsn, table):
    return fetch(dsn, "SELECT relfilenode FROM pg_class WHERE oid = %s::regclass", (table,))[0][0]


def column(dsn, table, col):
    rows = fetch(dsn, "SELECT is_nullable, column_default, data_type FROM information_schema.columns "
                      "WHERE table_name = %s AND column_name = %s", (table, col))
    return rows[0] if rows else None


def base(dsn, mig_dir, users=200, posts=6000):
    apply_all(dsn, mig_dir, "0001_init")
    execute(dsn, "INSERT INTO users (name, age) SELECT 'user ' || g, (g %% 90)::text FROM generate_series(1, %s) g",
            (users,))
    execute(dsn, "INSERT INTO posts (user_id, title, content) "
                 "SELECT g %% %s + 1, 'title ' || g, 'content ' || g FROM generate_series(1, %s) g", (users, posts))


def test_add_category_nullable_backfill_then_not_null_with_default(db, mig_dir):
    base(db, mig_dir)
    r = runner(db, mig_dir)
    node = relfilenode(db, "posts")
    r.apply("0002_add_category", "expand")
    assert column(db, "posts", "category") == ("YES", None, "character varying")
    execute(db, "INSERT INTO posts (title) VALUES ('written by 1.x during expand')")  # 1.x keeps working
    assert fetch(db, "SELECT count(*) FROM posts WHERE category IS NULL")[0][0] == 6001

    res = r.apply("0002_add_category", "migrate")
    assert res.backfills[0].rows_changed == 6001 and res.backfills[0].batches == 4  # 2000 rows per batch
    execute(db, "INSERT INTO posts (title) VALUES ('written by 1.x after migrate')")
    assert fetch(db, "SELECT count(*) FROM posts WHERE category IS NULL")[0][0] == 0
    assert fetch(db, "SELECT DISTINCT category FROM posts") == [("general",)]

    r.apply("0002_add_category", "contract", V("2.0.0"))
    assert column(db, "posts", "category") == ("NO", "'general'::character varying", "character varying")
    assert fetch(db, "SELECT count(*) FROM pg_constraint WHERE conname = 'posts_category_not_null'")[0][0] == 0
    with pytest.raises(Exception, match="not-null"):
        execute(db, "INSERT INTO posts (title, category) VALUES ('x', NULL)")
    assert relfilenode(db, "posts") == node  # no step rewrote the table
    steps = fetch(db, "SELECT step, status FROM bazbii_migrations.journal WHERE migration_id = '0002_add_category' "
                      "ORDER BY id")
    assert steps == [("expand", "applied"), ("migrate", "applied"), ("contract", "applied")]


def test_split_posts_content_into_post_metadata_with_dual_write(db, mig_dir):
    base(db, mig_dir)
    apply_all(db, mig_dir, "0002_add_category")
    r = runner(db, mig_dir)
    r.apply("0003_post_metadata", "expand")
    # 2.x (knows only posts.content) keeps writing; the trigger mirrors into post_metadata
    execute(db, "UPDATE posts SET content = 'edited by 2.x' WHERE id = 5")
    new_id = fetch(db, "INSERT INTO posts (title, content) VALUES ('new', 'inserted by 2.x') RETURNING id")[0][0]
    assert fetch(db, "SELECT post_id, metadata->>'content' FROM post_metadata ORDER BY post_id") == \
        [(5, "edited by 2.x"), (new_id, "inserted by 2.x")]

    res = r.apply("0003_post_metadata", "migrate")
    assert res.backfills[0].rows_changed == 6000 - 1  # post 5 was already mirrored (ON CONFLICT DO NOTHING)
    execute(db, "UPDATE posts SET content = 'edited again by 2.x' WHERE id = 7")
    expected = fetch(db, "SELECT id, content FROM posts ORDER BY id")
    r.apply("0003_post_metadata", "contract", V("3.0.0"))
    assert column(db, "posts", "content") is None
    assert fetch(db, "SELECT post_id, metadata->>'content' FROM post_metadata ORDER BY post_id") == expected
    assert fetch(db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'posts_content_dual_write'")[0][0] == 0


def test_rename_column_in_five_steps(db, mig_dir):
    base(db, mig_dir)
    for m in ("0002_add_category", "0003_post_metadata"):
        apply_all(db, mig_dir, m)
    r = runner(db, mig_dir)
    # step 1: add the new column, dual-write trigger
    r.apply("0004_rename_user_name", "expand")
    # step 2: old and new code run side by side
    old_id = fetch(db, "INSERT INTO users (name) VALUES ('from old code') RETURNING id")[0][0]
    new_id = fetch(db, "INSERT INTO users (display_name) VALUES ('from new code') RETURNING id")[0][0]
    execute(db, "UPDATE users SET name = 'renamed by old code' WHERE id = 1")
    execute(db, "UPDATE users SET display_name = 'renamed by new code' WHERE id = 2")
    assert fetch(db, "SELECT id, name, display_name FROM users WHERE id = ANY(%s) ORDER BY id",
                 ([1, 2, old_id, new_id],)) == [
        (1, "renamed by old code", "renamed by old code"), (2, "renamed by new code", "renamed by new code"),
        (old_id, "from old code", "from old code"), (new_id, "from new code", "from new code")]
    # step 3: backfill the rest
    res = r.apply("0004_rename_user_name", "migrate")
    assert res.backfills[0].rows_changed == 200 - 2  # rows 1 and 2 were already written through the trigger
    assert fetch(db, "SELECT count(*) FROM users WHERE display_name IS DISTINCT FROM name")[0][0] == 0
    # step 4 is the 4.0.0 deploy; step 5: contract
    expected = fetch(db, "SELECT id, name FROM users ORDER BY id")
    r.apply("0004_rename_user_name", "contract", V("4.0.0"))
    assert column(db, "users", "name") is None
    assert column(db, "users", "display_name")[0] == "NO"
    assert fetch(db, "SELECT id, display_name FROM users ORDER BY id") == expected
    assert fetch(db, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'bazbii_dw_%'")[0][0] == 0


def test_add_foreign_key_not_valid_then_validate(db, mig_dir):
    base(db, mig_dir, users=100, posts=3000)
    execute(db, "UPDATE posts SET user_id = 1000 + id WHERE id % 10 = 0")  # 300 orphans
    for m in ("0002_add_category", "0003_post_metadata", "0004_rename_user_name"):
        apply_all(db, mig_dir, m)
    r = runner(db, mig_dir)
    r.apply("0005_posts_user_fk", "expand")
    assert fetch(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'posts_user_id_fkey'") == [(False,)]
    assert fetch(db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'posts_user_id_idx'::regclass") == [(True,)]
    with pytest.raises(Exception, match="foreign key"):  # enforced for new rows already
        execute(db, "INSERT INTO posts (user_id, title) VALUES (99999, 'orphan')")
    res = r.apply("0005_posts_user_fk", "migrate")
    assert res.backfills[0].rows_changed == 300
    assert fetch(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'posts_user_id_fkey'") == [(True,)]
    assert fetch(db, "SELECT count(*) FROM posts WHERE user_id IS NULL")[0][0] == 300
    assert r.apply("0005_posts_user_fk", "contract").units_run == 0  # nothing to contract, no version needed


def test_change_type_through_new_column_backfill_and_dual_write(db, mig_dir):
    base(db, mig_dir, users=50, posts=10)
    execute(db, "UPDATE users SET age = CASE id WHEN 1 THEN '42' WHEN 2 THEN ' 7 ' WHEN 3 THEN 'abc' "
                "WHEN 4 THEN NULL ELSE age END")
    for m in ("0002_add_category", "0003_post_metadata", "0004_rename_user_name", "0005_posts_user_fk"):
        apply_all(db, mig_dir, m)
    node = relfilenode(db, "users")
    r = runner(db, mig_dir)
    r.apply("0006_user_age_integer", "expand")
    old = fetch(db, "INSERT INTO users (display_name, age) VALUES ('old code', '30') RETURNING id")[0][0]
    new = fetch(db, "INSERT INTO users (display_name, age_years) VALUES ('new code', 55) RETURNING id")[0][0]
    res = r.apply("0006_user_age_integer", "migrate")
    assert res.backfills[0].rows_changed == 49  # 50 users minus the NULL age
    rows = dict((i, (a, y)) for i, a, y in fetch(db, "SELECT id, age, age_years FROM users"))
    assert rows[1] == ("42", 42) and rows[2] == (" 7 ", 7) and rows[3] == ("abc", None) and rows[4] == (None, None)
    assert rows[old] == ("30", 30) and rows[new] == ("55", 55)
    assert all(y == int(a) for a, y in (rows[i] for i in range(5, 51)))
    r.apply("0006_user_age_integer", "contract", V("5.0.0"))
    assert column(db, "users", "age") is None
    assert column(db, "users", "age_years")[2] == "integer"
    assert relfilenode(db, "users") == node  # never rewritten: no ALTER COLUMN TYPE anywhere
