-- From now on rows inserted by 1.x code (which omits the column) get the default; the
-- backfill then fills the rows that existed before.
ALTER TABLE posts ALTER COLUMN category SET DEFAULT 'general';
