"""The pooler's generated configuration, run by a real PgBouncer: the admin console answers on the pooler
host only (127.0.0.1), the application from elsewhere (here: connections whose source address is
127.0.0.2, through a small relay, since libpq cannot choose its source address).

This is what lets the switchover run on the pooler host over SSH while nothing beyond the server
can reach the admin console (issue 8: "no admin console is opened beyond the servers").
"""

from __future__ import annotations

import shutil
import socket
import threading
from contextlib import contextmanager

import psycopg
import pytest

from bazbii_plan import models
from components.postgres_config import PGBOUNCER_ADMIN_USER, pgbouncer_hba, pgbouncer_ini, userlist
from testsupport.localcluster import LocalPgBouncer, free_port, make_workdir, remove_workdir
from testsupport.replication_topology import APP_DB, APP_PASSWORD, APP_USER

pytestmark = pytest.mark.timeout(60)
ADMIN_PASSWORD = "pooler-admin-test-password"


@pytest.fixture
def generated_pooler(shared_topo):
    db = models.Database(name=APP_DB, user=APP_USER, port=shared_topo.primary.port, primary="server2",
                         pooler={"server": "server1", "port": free_port()})
    workdir = make_workdir("bazbii-pooler-")
    bouncer = LocalPgBouncer(workdir=workdir, port=db.pooler.port)
    try:
        (workdir / "pgbouncer.ini").write_text(pgbouncer_ini(
            db, "127.0.0.1", directory=str(workdir), run_dir=str(workdir), log_dir=str(workdir),
            listen_addr="127.0.0.1"))  # loopback only in tests; production listens on *
        (workdir / "userlist.txt").write_text(userlist({APP_USER: APP_PASSWORD, PGBOUNCER_ADMIN_USER: ADMIN_PASSWORD}))
        (workdir / "pgbouncer_hba.conf").write_text(pgbouncer_hba(db))
        for path in [workdir, *workdir.iterdir()]:
            shutil.chown(path, "postgres", "postgres")
        bouncer.start()
        yield db, bouncer
    finally:
        bouncer.stop()
        remove_workdir(workdir)


@contextmanager
def relay_from(source: str, target_port: int):
    """A TCP relay on 127.0.0.1 whose upstream connections come from ``source`` (another loopback address)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            upstream = socket.socket()
            upstream.bind((source, 0))
            upstream.connect(("127.0.0.1", target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _connect(host: str, port: int, dbname: str, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(host=host, port=port, dbname=dbname, user=user, password=password, connect_timeout=5,
                           autocommit=True, prepare_threshold=None)


def test_admin_console_only_from_the_pooler_host(generated_pooler):
    db, bouncer = generated_pooler
    with _connect("127.0.0.1", bouncer.port, "pgbouncer", PGBOUNCER_ADMIN_USER, ADMIN_PASSWORD) as admin:
        names = [row[0] for row in admin.execute("SHOW DATABASES").fetchall()]
        assert APP_DB in names
    with relay_from("127.0.0.2", bouncer.port) as elsewhere:
        with pytest.raises(psycopg.OperationalError):
            _connect("127.0.0.1", elsewhere, "pgbouncer", PGBOUNCER_ADMIN_USER, ADMIN_PASSWORD).close()
        # the application still reaches its database through the pooler from another address, with SCRAM
        with _connect("127.0.0.1", elsewhere, APP_DB, APP_USER, APP_PASSWORD) as app:
            assert app.execute("SELECT current_user").fetchone() == (APP_USER,)
        with pytest.raises(psycopg.OperationalError):
            _connect("127.0.0.1", elsewhere, APP_DB, APP_USER, "wrong-password").close()
