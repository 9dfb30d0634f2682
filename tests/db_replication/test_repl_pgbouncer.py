"""PgBouncer admin helpers against a real PgBouncer: PAUSE/RESUME and the no-RELOAD-without-PAUSE rule."""

from __future__ import annotations

import psycopg
import pytest

from .repl_helpers import execute
from bazbii_db.replication import NotPaused, PauseTimeout, PgBouncerAdmin, read_database_entry, repoint_database
from bazbii_db.replication.pgbouncer import pause_or_resume

pytestmark = pytest.mark.timeout(60)


def test_repoint_refuses_without_pause_and_leaves_ini_untouched(shared_topo):
    ini = shared_topo.bouncer.ini_path
    before = ini.read_text()
    with PgBouncerAdmin(shared_topo.bouncer.admin_dsn()) as admin:
        with pytest.raises(NotPaused, match="server_login_retry"):
            repoint_database(admin, ini, shared_topo.alias, host="127.0.0.1", port=shared_topo.replica.port)
        assert not admin.is_paused(shared_topo.alias)
    assert ini.read_text() == before
    assert not list(shared_topo.workdir.glob(".pgbouncer.ini.*.tmp"))


def test_pause_timeout_resumes_from_second_connection(shared_topo):
    alias = shared_topo.alias
    held = psycopg.connect(shared_topo.app_dsn(), autocommit=False, prepare_threshold=None)
    try:
        held.execute("SELECT 1")  # an open transaction holds a server connection: PAUSE cannot finish
        admin, backup = PgBouncerAdmin(shared_topo.bouncer.admin_dsn()), PgBouncerAdmin(shared_topo.bouncer.admin_dsn())
        with pytest.raises(PauseTimeout, match="did not complete within 0.3 s"):
            pause_or_resume(admin, backup, alias, 0.3)
        assert not backup.is_paused(alias)  # resumed from the second connection
        with pytest.raises(Exception, match="discarded"):
            admin.conn  # the first one, with its PAUSE still pending, was dropped
        held.commit()
        # Traffic flows, and a PAUSE on an idle pool completes at once.
        assert execute(shared_topo.app_dsn(), "SELECT 1") == [(1,)]
        fresh = PgBouncerAdmin(shared_topo.bouncer.admin_dsn())
        assert fresh.pause(alias, 2.0) < 2.0 and fresh.is_paused(alias)
        fresh.resume(alias)
        assert fresh.resume_if_paused(alias) is False
        fresh.discard()
        backup.discard()
    finally:
        held.close()
    assert read_database_entry(shared_topo.bouncer.ini_path, alias)["port"] == str(shared_topo.primary.port)
