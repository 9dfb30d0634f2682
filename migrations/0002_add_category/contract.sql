-- NOT NULL without a long ACCESS EXCLUSIVE scan: a NOT VALID check (instant), VALIDATE (SHARE
-- UPDATE EXCLUSIVE, readers and writers keep going), then SET NOT NULL uses the validated check
-- instead of scanning, and the check is dropped as redundant.
ALTER TABLE posts ADD CONSTRAINT posts_category_not_null CHECK (category IS NOT NULL) NOT VALID;
ALTER TABLE posts VALIDATE CONSTRAINT posts_category_not_null;
ALTER TABLE posts ALTER COLUMN category SET NOT NULL;
ALTER TABLE posts DROP CONSTRAINT IF EXISTS posts_category_not_null;
