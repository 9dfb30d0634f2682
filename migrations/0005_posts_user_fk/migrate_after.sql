-- After the orphans are cleared: the scan takes SHARE UPDATE EXCLUSIVE, writes keep flowing.
ALTER TABLE posts VALIDATE CONSTRAINT posts_user_id_fkey;
