CREATE TABLE IF NOT EXISTS post_metadata (
    post_id bigint PRIMARY KEY REFERENCES posts (id) ON DELETE CASCADE,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Dual write: while code that only knows posts.content still runs, every insert or content
-- update is mirrored into post_metadata. 3.x writes both itself and reads post_metadata first.
CREATE OR REPLACE FUNCTION posts_content_to_metadata() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO post_metadata (post_id, metadata)
    VALUES (NEW.id, jsonb_build_object('content', NEW.content))
    ON CONFLICT (post_id) DO UPDATE
        SET metadata = post_metadata.metadata || jsonb_build_object('content', NEW.content),
            updated_at = now();
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER posts_content_dual_write
    AFTER INSERT OR UPDATE OF content ON posts
    FOR EACH ROW EXECUTE FUNCTION posts_content_to_metadata();
