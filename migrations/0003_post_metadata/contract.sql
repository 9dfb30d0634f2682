DROP TRIGGER IF EXISTS posts_content_dual_write ON posts;
DROP FUNCTION IF EXISTS posts_content_to_metadata();
ALTER TABLE posts DROP COLUMN IF EXISTS content;
