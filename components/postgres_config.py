"""PostgreSQL and PgBouncer configuration as data: paths, pg_hba lines, pgbouncer.ini, userlist, DSNs.

Pure functions over the typed config (no Pulumi import): the scripts in
:mod:`components.postgres_scripts`, the component and the tests all read them from here.
Connection strings are written by the one DSN helper, :func:`bazbii_db.dsn.build_dsn`.
"""

from __future__ import annotations

from typing import Mapping

from bazbii_db.dsn import build_dsn
from bazbii_plan import models
from bazbii_plan.facts import PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS
from bazbii_plan.gates import host_port
from bazbii_plan.facts import pg_paths as facts_pg_paths

PGBOUNCER_DIR = "/etc/pgbouncer"
PGBOUNCER_INI = f"{PGBOUNCER_DIR}/pgbouncer.ini"
PGBOUNCER_USERLIST = f"{PGBOUNCER_DIR}/userlist.txt"
PGBOUNCER_HBA = f"{PGBOUNCER_DIR}/pgbouncer_hba.conf"
PGBOUNCER_ADMIN_USER = "pgbouncer_admin"
# The admin console (the ``pgbouncer`` database) answers only on the pooler host itself: the
# switchover runs there over SSH, so nothing beyond the server needs it.
PGBOUNCER_ADMIN_FROM = "127.0.0.1/32"
HBA_BEGIN = "# BEGIN bazbii (managed by Pulumi)"
HBA_END = "# END bazbii"
# The PostgreSQL exporter (Debian's prometheus-postgres-exporter): the package's unit runs as the system
# user ``prometheus``, which reaches its own role over the local socket by peer authentication; the role
# is in ``pg_monitor`` (every session's transaction age, the replication views), nothing more.
POSTGRES_EXPORTER_PACKAGE = "prometheus-postgres-exporter"
POSTGRES_EXPORTER_USER = "prometheus"
POSTGRES_EXPORTER_SETTINGS = "/etc/default/prometheus-postgres-exporter"
OPS_APPLICATION_NAME = "bazbii-dataplane"
MIGRATIONS_APPLICATION_NAME = "bazbii-migrations"


def pg_paths(version: int) -> dict[str, str]:
    """The scripts' view of :func:`bazbii_plan.facts.pg_paths` (the one definition of the layout)."""
    paths = facts_pg_paths(version)
    return {"datadir": paths.datadir, "confdir": paths.confdir, "bin": paths.bin, "unit": paths.unit,
            "passfile": paths.passfile}


def hba_lines(db: models.Database, servers: Mapping[str, models.Server]) -> list[str]:
    """Who may connect: the app user from the pooler (and API hosts), replication between database hosts."""
    app_clients = {db.pooler.server} | {n for n, s in servers.items() if "api" in s.roles}
    db_hosts = {db.primary, *db.replicas}
    if db.switchover is not None and db.switchover.from_ not in db.retired:
        db_hosts.add(db.switchover.from_)  # stopped, kept re-attachable (pg_rewind) until retired
    lines = ["local all postgres peer", f"local postgres {POSTGRES_EXPORTER_USER} peer"]
    for name in sorted(app_clients):
        lines.append(f"host {db.name} {db.user} {servers[name].address}/32 scram-sha-256")
    for name in sorted(db_hosts):
        lines.append(f"host replication {db.replication_user} {servers[name].address}/32 scram-sha-256")
    for name in sorted(servers):  # operational connections (gate, consistency, switchover)
        lines.append(f"host all {db.replication_user} {servers[name].address}/32 scram-sha-256")
    lines.append(f"host all {db.replication_user} 127.0.0.1/32 scram-sha-256")
    return lines


def postgres_exporter_settings(db: models.Database, address: str, port: int, path: str) -> str:
    """The package's ``/etc/default`` file: its connection (the local socket, as ``prometheus``) and where
    it listens (the server's address and the port ``metricsTargets`` names; settings metrics left out)."""
    dsn = build_dsn(host="/var/run/postgresql", port=db.port, dbname="postgres", user=POSTGRES_EXPORTER_USER,
                    sslmode="disable")
    listen = host_port(address, port)
    return (
        "# managed by Pulumi (bazbii): the exporter metricsTargets lists on this server\n"
        f"DATA_SOURCE_NAME=\"{dsn}\"\n"
        f"ARGS=\"--web.listen-address={listen} --web.telemetry-path={path} --disable-settings-metrics\"\n"
    )


def pgbouncer_hba(db: models.Database) -> str:
    """PgBouncer's ``auth_hba_file``: the admin console from this host only; the application from anywhere
    it can reach the pooler (its own network rules decide that), always with SCRAM."""
    return (
        "# managed by Pulumi (bazbii)\n"
        f"host pgbouncer {PGBOUNCER_ADMIN_USER} {PGBOUNCER_ADMIN_FROM} scram-sha-256\n"
        f"host {db.name} {db.user} 0.0.0.0/0 scram-sha-256\n"
    )


def pgbouncer_ini(db: models.Database, primary_address: str, *, directory: str = PGBOUNCER_DIR,
                  run_dir: str = "/var/run/postgresql", log_dir: str = "/var/log/postgresql",
                  listen_addr: str = "*") -> str:
    """The pooler's ini (the paths are parameters so that the tests can run this exact text)."""
    pooler = db.pooler
    return (
        "; managed by Pulumi (bazbii). The [databases] host moves only inside the planned switchover.\n"
        "[databases]\n"
        f"{db.name} = host={primary_address} port={db.port} dbname={db.name}\n"
        "\n"
        "[pgbouncer]\n"
        f"listen_addr = {listen_addr}\n"
        f"listen_port = {pooler.port}\n"
        f"unix_socket_dir = {run_dir}\n"
        "auth_type = hba\n"
        f"auth_hba_file = {directory}/pgbouncer_hba.conf\n"
        f"auth_file = {directory}/userlist.txt\n"
        f"admin_users = {PGBOUNCER_ADMIN_USER}\n"
        f"pool_mode = {pooler.pool_mode}\n"
        "max_client_conn = 1000\n"
        "default_pool_size = 20\n"
        f"server_login_retry = {PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS:g}\n"
        "server_reset_query = DISCARD ALL\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {log_dir}/pgbouncer.log\n"
        f"pidfile = {run_dir}/pgbouncer.pid\n"
    )


def userlist(entries: Mapping[str, str]) -> str:
    """PgBouncer auth_file: ``"user" "password"`` lines (``"`` doubled)."""
    return "".join(f'"{u}" "{p.replace(chr(34), chr(34) * 2)}"\n' for u, p in entries.items())


# --------------------------------------------------------------------------- connection strings (no password)
def ops_dsn(db: models.Database, address: str) -> str:
    """The replication user on one database server (lag gate, consistency check, switchover)."""
    return build_dsn(host=address, port=db.port, dbname=db.name, user=db.replication_user,
                     application_name=OPS_APPLICATION_NAME)


def migration_dsn(db: models.Database, address: str) -> str:
    """The application user directly on one database server (the migration runner, its lag throttle)."""
    return build_dsn(host=address, port=db.port, dbname=db.name, user=db.user,
                     application_name=MIGRATIONS_APPLICATION_NAME)


def pooler_admin_dsn(db: models.Database) -> str:
    """PgBouncer's admin console, local to the pooler host (never opened beyond it)."""
    return build_dsn(host="127.0.0.1", port=db.pooler.port, dbname="pgbouncer", user=PGBOUNCER_ADMIN_USER)


def with_password(dsn: str, password: str) -> str:
    """``dsn`` plus its password, for the secret stdin of a data-plane command."""
    return f"{dsn} {build_dsn(password=password)}"


def dataplane_servers(db: models.Database, schema_over_ssh: bool) -> list[str]:
    """The servers a data-plane command runs on in this state, so the project's code is installed there:
    each gated replica's host (lag gate, consistency check), the pooler host (switchover, schema runner)."""
    hosts = {server for server, replica in db.replicas.items() if replica.lag_gate}
    if db.switchover is not None or schema_over_ssh:
        hosts.add(db.pooler.server)
    return sorted(hosts)
