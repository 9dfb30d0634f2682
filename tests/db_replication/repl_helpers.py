"""Helpers for tests/db_replication (a uniquely named module: conftest.py names clash across test dirs)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

import psycopg


from testsupport.replication_topology import APP_DB, Topology, wait_streaming


def su(topo: Topology, which: str = "primary", dbname: str = APP_DB) -> str:
    cluster = topo.primary if which == "primary" else topo.replica
    return cluster.dsn(dbname=dbname)


def execute(dsn: str, query: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def ensure_replica_streaming(topo: Topology) -> None:
    """Restart the shared replica if a test stopped it, and resume replay if a test paused it."""
    if not topo.replica.is_running():
        topo.replica.start()
    execute(su(topo, "replica"), "SELECT pg_wal_replay_resume()")
    wait_streaming(topo, timeout=30)
