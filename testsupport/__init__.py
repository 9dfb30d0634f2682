"""Test infrastructure shared by tests/ and bench/: throwaway PostgreSQL/PgBouncer servers on loopback,
replication topologies and bounded write loads. Never imported by the production packages."""
