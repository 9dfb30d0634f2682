"""Helpers for tests/db_replication (a uniquely named module: conftest.py names clash across test dirs)."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._replication_common import APP_DB, Topology, wait_streaming  # noqa: E402


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
