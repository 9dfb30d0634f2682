"""Everything that talks to PostgreSQL. Plain Python over psycopg 3: no Pulumi import here."""
