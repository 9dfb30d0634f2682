"""Fixtures for the schema-migration tests: one throwaway PostgreSQL 15 cluster per session.

The cluster (testsupport.localcluster) runs on 127.0.0.1 as the non-root ``postgres`` user and is
removed at the end. Every test gets its own database (``db`` fixture) so tests cannot see each
other's schema. A streaming replica is built on demand (``replica``) for the lag-throttle tests.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import psycopg
import pytest
from psycopg import sql


from testsupport.localcluster import LocalCluster, make_workdir, remove_workdir
from bazbii_db.migrations import MigrationRunner, RunnerConfig
from bazbii_db.migrations.backfill import BackfillConfig
from bazbii_db.migrations.executor import DdlConfig

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "migrations"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_workdir():
    path = make_workdir("bazbii-schema-tests-")
    yield path
    remove_workdir(path)


@pytest.fixture(scope="session")
def pg_cluster(pg_workdir) -> LocalCluster:
    cluster = LocalCluster.init(pg_workdir, "primary", max_connections="150")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")


@pytest.fixture(scope="session")
def replica(pg_cluster, pg_workdir) -> LocalCluster:
    rep = pg_cluster.basebackup_replica(pg_workdir, "replica", slot="schema_tests_replica")
    rep.start()
    try:
        yield rep
    finally:
        rep.stop(mode="immediate")


def admin(cluster: LocalCluster) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(), autocommit=True)


@pytest.fixture
def db(pg_cluster) -> str:
    """DSN of a fresh, empty database."""
    name = f"schema_t{os.getpid()}_{next(_counter)}"
    with admin(pg_cluster) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_cluster.dsn(dbname=name)
    with admin(pg_cluster) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def mig_dir(tmp_path) -> Path:
    """A private copy of the repository's migrations/ (tests may add or edit migrations in it)."""
    dest = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, dest)
    return dest


def fast_config(**overrides) -> RunnerConfig:
    backfill = overrides.pop("backfill", None) or BackfillConfig(probe_interval_s=0.05, progress_interval_s=3600)
    ddl = {key: overrides.pop(key) for key in list(overrides) if key in DdlConfig.__dataclass_fields__}
    ddl = DdlConfig(**{"lock_timeout_ms": 500, "backoff_base_s": 0.05, "backoff_max_s": 0.5, **ddl})
    base = dict(ddl=ddl, runner_lock_wait_s=10, backfill=backfill)
    base.update(overrides)
    return RunnerConfig(**base)


def runner(dsn: str, mig_dir: Path, **overrides) -> MigrationRunner:
    return MigrationRunner(dsn, mig_dir, fast_config(**overrides))


def apply_all(dsn: str, mig_dir: Path, migration_id: str, stages=("expand", "migrate", "contract"),
              app_versions=("registry.example.com/bazbii/api:99.0.0",), **overrides):
    r = runner(dsn, mig_dir, **overrides)
    return [r.apply(migration_id, stage, list(app_versions)) for stage in stages]


def write_migration(root: Path, mig_id: str, toml: str = "", **files: str) -> Path:
    path = root / mig_id
    path.mkdir(parents=True, exist_ok=True)
    (path / "migration.toml").write_text(toml)
    for name, text in files.items():
        (path / f"{name}.sql").write_text(text)
    return path


def fetch(dsn: str, query, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def execute(dsn: str, query, params=None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, params)


@pytest.fixture
def small_dir(tmp_path) -> Path:
    """Only 0001_init and 0002_add_category: room for a test's own 0007_* migration."""
    dest = tmp_path / "migrations_small"
    dest.mkdir()
    for mig in ("0001_init", "0002_add_category"):
        shutil.copytree(MIGRATIONS / mig, dest / mig)
    return dest
