"""The schema reconciler against a real PostgreSQL 15 on server2's address: the plan's schema
steps forward through the migration runner, and rollbacks that never claim what they did not do."""

from __future__ import annotations

import shutil

import psycopg
import pytest

from bazbii_db.migrations import MigrationRunner
from rehearsal.bootstrap import bootstrap_database
from rehearsal.faults import Faults
from rehearsal.postgres import PgServer
from rehearsal.reconcilers import Context
from rehearsal.reconcilers.schema import SchemaReconciler
from rehearsal.runner import Options, prepare
from rehearsal.services import ADDRESSES, free_port
from testsupport.localcluster import make_workdir


class NoWorkers:
    """Only the database is needed: no worker processes to quiet here."""

    def __init__(self, pg: PgServer):
        self.pg = {"server2": pg, "server3": pg}   # the schema runs on whichever is primary
        self.workers = []

    def stop_workers(self, version=None) -> int:
        return 0

    def start_worker(self, version) -> None:
        raise AssertionError("no worker was running")


@pytest.fixture(scope="module")
def primary():
    workdir = make_workdir("bazbii-rehearsal-test-")
    pg = PgServer.init("server2", ADDRESSES["server2"], free_port(ADDRESSES["server2"]), workdir)
    pg.start()
    try:
        bootstrap_database(pg)
        yield pg
    finally:
        pg.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)


def applied(pg: PgServer) -> set[str]:
    """The stages of 0002 the runner's journal says are applied."""
    return {e.step for e in MigrationRunner(pg.dsn()).status()
            if e.migration_id == "0002_add_category" and e.status == "applied"}


def test_schema_steps_forward_and_back(primary):
    states = prepare(Options()).step_states
    notes: list[str] = []
    ctx = Context(NoWorkers(primary), Faults(), notes.append, 1, 5)
    schema = SchemaReconciler()
    for step in ("0002-expand", "0002-migrate"):
        schema.prepare(*states[step], ctx)
    assert applied(primary) == {"expand", "migrate"}
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM posts WHERE category IS NULL").fetchone()[0] == 0
    # migrate -> expand: the plan keeps the backfilled values
    before, after = states["0002-migrate"]
    schema.prepare(after, before, ctx)
    assert "migrate" in applied(primary) and any("what the plan undoes is undone" in n for n in notes)
    # contract, then its rollback: either the runner reverted it, or the rollback fails loudly
    schema.prepare(*states["0002-contract"], ctx)
    assert "contract" in applied(primary)
    before, after = states["0002-contract"]
    try:
        schema.prepare(after, before, ctx)
    except RuntimeError as exc:
        assert "still applied" in str(exc) and "contract" in applied(primary)
    else:
        assert "contract" not in applied(primary)
