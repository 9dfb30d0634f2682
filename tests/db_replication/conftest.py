"""Fixtures: real PostgreSQL 15 primary + pg_basebackup replica + PgBouncer on 127.0.0.1.

Servers run as the non-root ``postgres`` user (testsupport.localcluster). ``shared_topo`` is
one topology for the tests that leave it as they found it; ``fresh_topo`` builds a new one
per test (switchover tests promote the replica, so they cannot share).
"""

from __future__ import annotations


import pytest


from testsupport.replication_topology import (Topology, build_topology,
                                       wait_streaming)


def _require_binaries() -> None:
    from testsupport.localcluster import pg_bin_dir, pgbouncer_binary
    try:
        pg_bin_dir()
        pgbouncer_binary()
    except RuntimeError as exc:  # pragma: no cover - environment problem, reported loudly
        pytest.fail(f"PostgreSQL/PgBouncer binaries missing: {exc}")


def _streaming_topology():
    _require_binaries()
    topo = build_topology()
    try:
        wait_streaming(topo)
        yield topo
    finally:
        topo.teardown()


@pytest.fixture(scope="session")
def shared_topo() -> Topology:
    yield from _streaming_topology()


@pytest.fixture
def fresh_topo() -> Topology:
    """A topology of its own, for tests that promote, stop or fence servers."""
    yield from _streaming_topology()
