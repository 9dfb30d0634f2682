-- Down step of the contract: back to the migrate-stage schema (category nullable, DEFAULT
-- 'general' kept), which the 1.9 and 2.0 applications both work with. DROP NOT NULL is
-- metadata-only (a brief ACCESS EXCLUSIVE lock, no scan) and idempotent. The CHECK the contract
-- used was dropped by the contract itself.
ALTER TABLE posts ALTER COLUMN category DROP NOT NULL;
