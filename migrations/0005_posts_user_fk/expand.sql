-- The referencing column needs an index (deletes on users would scan posts otherwise).
CREATE INDEX CONCURRENTLY IF NOT EXISTS posts_user_id_idx ON posts (user_id);
-- NOT VALID: enforced for new and updated rows at once, existing rows are not scanned.
ALTER TABLE posts ADD CONSTRAINT posts_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
