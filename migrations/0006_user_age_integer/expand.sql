ALTER TABLE users ADD COLUMN IF NOT EXISTS age_years integer;
