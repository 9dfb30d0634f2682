"""The program's PostgreSQL scripts on fresh twin servers, over SSH as ``deploy`` with sudo, in plan order.

The same text ``PostgresCluster`` gives its ``remote.Command``s: the primary on a server that has
PostgreSQL's packages but no cluster yet, PgBouncer in front of it, the data-plane release, then a
streaming replica built with pg_basebackup on Debian's layout (configuration in /etc, which a base
backup does not carry).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bazbii_db.dataplane import install_command, release_digest, release_stdin, release_tarball
from bazbii_plan.stackconfig import SECRET_KEYS, load_stack_config
from bazbii_plan.stackfile import fill_secret_placeholders
from components.postgres_config import PGBOUNCER_ADMIN_USER, userlist
from bazbii_plan.gates import scrape_targets
from components.postgres_scripts import (as_root, pooler_script, postgres_exporter_script,
                                         postgres_exporter_stop_script, primary_script, replica_script)
from twin.environment import Twin
from twin.stack import load_prod, twin_stack_document

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
APP_PASSWORD, REPLICATION_PASSWORD = "app-pw-twin", "repl-pw-twin"


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    with Twin.start_new(tmp_path_factory.mktemp("twin")) as started:
        yield started


def stack_at(step: str, twin: Twin):
    document = twin_stack_document(load_prod(), {n: s.address for n, s in twin.servers.items()}, steps={"phase": step})
    values = {k.split(":", 1)[1]: v for k, v in document["config"].items() if k.startswith("bazbii:")}
    secrets: set[str] = set()
    fill_secret_placeholders(values, secrets, SECRET_KEYS)
    return load_stack_config(values, secrets)


def state_at(step: str, twin: Twin):
    return stack_at(step, twin).state()


def root(twin: Twin, server: str, text: str, stdin: str = ""):
    result = twin.servers[server].ssh(as_root(text), stdin=stdin, timeout=300)
    assert result.returncode == 0, f"{server}: {result.stdout[-1500:]}\n{result.stderr[-2500:]}"
    return result


def test_primary_pooler_and_a_streaming_replica_from_fresh_servers(twin):
    state = state_at("replica-streaming", twin)
    db, servers = state.database, state.servers
    root(twin, "server2", primary_script(db, servers), f"{APP_PASSWORD}\n{REPLICATION_PASSWORD}\n")
    root(twin, "server1", pooler_script(db, servers[db.primary].address),
         userlist({db.user: APP_PASSWORD, PGBOUNCER_ADMIN_USER: "admin-pw-twin"}))
    through = twin.servers["server1"].ssh(
        f"PGPASSWORD={APP_PASSWORD} psql -X -h 127.0.1.1 -p {db.pooler.port} -U {db.user} -d {db.name} "
        "-tAc 'SELECT inet_server_addr(), pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()'")
    assert through.returncode == 0, through.stderr
    assert through.stdout.strip() == "127.0.1.2|UTF8"  # the primary, behind PgBouncer; UTF8 as on Ubuntu
    installed = twin.servers["server3"].ssh(install_command(digest=release_digest(REPO)),
                                            stdin=release_stdin(release_tarball(REPO)), timeout=600)
    assert installed.returncode == 0, installed.stderr
    (name, replica), = db.replicas.items()
    built = root(twin, name, replica_script(db, servers, name, replica), f"{REPLICATION_PASSWORD}\n")
    assert f"{name} is a hot standby of server2" in built.stdout
    streaming = twin.servers["server2"].ssh(
        "sudo -n runuser -u postgres -- psql -XtAc \"SELECT application_name, state FROM pg_stat_replication\"")
    assert streaming.stdout.split() == [f"{replica.slot}|streaming"], streaming.stderr
    again = root(twin, name, replica_script(db, servers, name, replica), f"{REPLICATION_PASSWORD}\n")
    assert "already a standby; refreshing its settings only" in again.stdout


def scrape(twin: Twin, url: str) -> dict[str, float]:
    """One scrape from server1 (where the twin's Prometheus runs): unlabelled series and their maxima."""
    got = twin.servers["server1"].ssh(f"curl -fsS {url}", timeout=30)
    assert got.returncode == 0, f"{url}: {got.stderr}"
    values: dict[str, float] = {}
    for line in got.stdout.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{", 1)[0].split()[0], float(line.rsplit(" ", 1)[1])
            values[name] = max(values.get(name, value), value)
    return values


def test_the_postgres_exporter_runs_where_metrics_targets_lists_it_and_sees_a_long_transaction(twin):
    """After the first test: server2 is the primary, server3 its standby. The exporter's port and path are
    the ones the stack's ``metricsTargets`` names for the switchover gate's scope (``server``)."""
    stack = stack_at("replica-streaming", twin)
    state = stack.state()
    db, servers = state.database, state.servers
    exporter = stack.metrics.exporter("postgres")
    targets = {group["labels"]["server"]: group["targets"][0] for group in scrape_targets(state, stack.metrics)
               if group["labels"]["job"] == "postgres"}
    assert sorted(targets) == ["server2", "server3"]
    for name in ("server2", "server3"):  # the primary first: it creates the role the standby replicates
        done = root(twin, name, postgres_exporter_script(db, name, servers[name].address, exporter.port, exporter.path))
        assert f"postgres exporter on {name} at http://{targets[name]}{exporter.path}" in done.stdout
    holder = twin.servers["server2"].popen_inside(
        ["runuser", "-u", "postgres", "--", "psql", "-Xc", "BEGIN; SELECT txid_current(); SELECT pg_sleep(6); COMMIT;"])
    try:
        deadline = time.monotonic() + 30
        while (seen := scrape(twin, f"http://{targets['server2']}{exporter.path}")).get(
                "pg_stat_activity_max_tx_duration", 0) < 3:
            assert time.monotonic() < deadline, "the exporter never saw the open transaction"
            time.sleep(1)
        assert seen["pg_up"] == 1
    finally:
        holder.wait(timeout=30)
    assert scrape(twin, f"http://{targets['server3']}{exporter.path}")["pg_up"] == 1  # the role, replicated
    again = root(twin, "server3", postgres_exporter_script(db, "server3", servers["server3"].address,
                                                            exporter.port, exporter.path))
    assert "postgres exporter on server3" in again.stdout
    root(twin, "server3", postgres_exporter_stop_script("server3"))
    gone = twin.servers["server1"].ssh(f"curl -fsS http://{targets['server3']}{exporter.path}", timeout=30)
    assert gone.returncode != 0
