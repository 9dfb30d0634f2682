"""Fixtures for the SSH data-plane tests: a local sshd, the release installed through it, real servers.

``sshd``       Debian's sshd on 127.0.0.1 (tests/ssh/sshd.py), stopped at the end even on failure.
``runtime``    the project's release installed through that sshd by the program's own install command
               (``bazbii_db.dataplane.install_command``) into a throwaway ``/opt/bazbii`` stand-in; every
               data-plane command then runs the *installed* CLIs, as on a server.
``shared_topo`` / ``fresh_topo``  PostgreSQL primary + streaming replica + PgBouncer (testsupport),
               with the non-superuser operations role the component uses (grants from
               ``bazbii_db.replication.grants``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from bazbii_db.dataplane import Runtime, install_command, release_digest, release_stdin, release_tarball, server_requirements
from bazbii_db.replication import apply_ops_grants
from testsupport.replication_topology import APP_DB, Topology, build_topology, wait_streaming

from .sshd import LocalSshd, start_sshd

REPO = Path(__file__).resolve().parents[2]
OPS_USER, OPS_PASSWORD = "bazbii_ops", "ops-test-password"


@pytest.fixture(scope="session")
def sshd():
    workdir = Path(tempfile.mkdtemp(prefix="bazbii-sshd-"))
    server = None
    try:
        server = start_sshd(workdir)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def install_release(sshd: LocalSshd, root: Path) -> tuple[Runtime, dict]:
    """Install the working tree's release under ``root`` over SSH, exactly as DataPlaneRelease does.

    The virtualenv is the test's own (already holding the pinned packages), so the install's
    ``pip install`` is skipped: ``requirements.installed`` says those pins are in place.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "venv").symlink_to(Path(REPO / "venv").resolve())
    (root / "requirements.installed").write_text(server_requirements((REPO / "requirements.txt").read_text()))
    tarball = release_tarball(REPO)
    digest = release_digest(REPO)
    runtime = Runtime(root=str(root))
    result = sshd.run(install_command(digest=digest, runtime=runtime), stdin=release_stdin(tarball))
    return runtime, {"digest": digest, "result": result, "tarball": tarball}


@pytest.fixture(scope="session")
def installed(sshd):
    base = Path(tempfile.mkdtemp(prefix="bazbii-opt-"))
    base.chmod(0o755)
    try:
        runtime, info = install_release(sshd, base / "opt-bazbii")
        assert info["result"].returncode == 0, info["result"].stderr
        yield runtime, info
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime(installed) -> Runtime:
    return installed[0]


def execute(dsn: str, query: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def ops_dsn(cluster) -> str:
    return cluster.dsn(dbname=APP_DB, user=OPS_USER, password=OPS_PASSWORD)


def make_ops_role(topo: Topology) -> None:
    """The replication user as the PostgresCluster's primary script creates it: no superuser."""
    execute(topo.primary.dsn(), f"CREATE ROLE {OPS_USER} LOGIN REPLICATION PASSWORD '{OPS_PASSWORD}'")
    apply_ops_grants(topo.primary.dsn(dbname=APP_DB), OPS_USER)  # function grants are per database
    lsn = execute(topo.primary.dsn(), "SELECT pg_current_wal_lsn()::text")[0][0]
    deadline = time.monotonic() + 15
    while not execute(topo.replica.dsn(), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0]:
        if time.monotonic() > deadline:
            raise TimeoutError("the replica did not replay the operations role in 15 s")
        time.sleep(0.01)


def _topology():
    topo = build_topology()
    try:
        wait_streaming(topo)
        make_ops_role(topo)
        yield topo
    finally:
        topo.teardown()


@pytest.fixture(scope="session")
def shared_topo():
    yield from _topology()


@pytest.fixture
def fresh_topo():
    """A topology of its own, for the switchover (it promotes the replica)."""
    yield from _topology()


def password_free(*texts: str) -> bool:
    secrets = (OPS_PASSWORD, "app-test-password")
    return not any(secret in text for text in texts for secret in secrets)


