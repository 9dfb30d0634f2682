-- Nullable, no default: a metadata-only change; running 1.x code does not know the column.
ALTER TABLE posts ADD COLUMN IF NOT EXISTS category varchar(50);
