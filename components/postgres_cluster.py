"""PostgresCluster: the primary, streaming replicas, the PgBouncer pooler, switchover and retirement.

Everything here follows ``bazbii:database`` for the current step; moving the
primary or retiring a server is a phase change, never an in-place surprise.

``<name>-primary``              remote.Command on the primary: PostgreSQL installed (PGDG), the managed
                                ``conf.d/bazbii.conf`` and ``pg_hba.conf`` block, roles (application user,
                                replication user with the grants the gate/switchover need), reload only
                                (settings that need a restart are reported, never applied by a restart).
                                After a switchover it follows the new primary (it depends on the switchover,
                                so it only runs once the new primary is writable).
``<name>-replica-<server>``     remote.Command on each replica: ``bazbii_db.replication.replica_setup_script``
                                (``pg_basebackup -R -C -S <slot>``, password via a 0600 passfile), then the
                                cluster is registered and started as a hot standby. Delete stops the standby
                                and drops its slot on the primary, unless the server has been promoted.
``<name>-lag-gate-<server>``    ReplicaLagGate (components/providers/replication.py) when ``lagGate`` is on.
``<name>-switchover``           PlannedSwitchover when ``database.switchover`` is set (PAUSE, fence, catch up,
                                promote, repoint PgBouncer, RESUME).
``<name>-pooler``               remote.Command on the pooler server: ``pgbouncer.ini`` (its ``[databases]``
                                entry points at the current primary) and ``userlist.txt`` (stdin, secret).
                                It refuses to move the database to another host with a plain RELOAD: that
                                only happens inside the switchover, under PAUSE. It depends on the
                                switchover, so after it the ini already names the new host.
``<name>-retire-<server>``      remote.Command per ``database.retired`` server:
                                ``bazbii_db.replication.retire.retire_primary_script`` after checking that no
                                application session is left on it; the data directory is kept (pg_rewind).

The application reaches PostgreSQL through ``app_host:app_port``: the pooler
server's address when ``appConnection`` is ``pooler``, the primary otherwise.
Connection strings carrying passwords are secret Outputs.

Operational connections (lag gate, consistency check, switchover) use the
replication user and are allowed from the declared servers only, so run the
update from one of them or through an SSH tunnel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import quote

import pulumi
from pulumi_command import remote

from bazbii_db.replication.grants import explain_grants
from bazbii_db.replication.replica import replica_setup_script
from bazbii_db.replication.retire import retire_primary_script
from bazbii_plan import models
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on, q, script
from components.server import Server

PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"
PGBOUNCER_USERLIST = "/etc/pgbouncer/userlist.txt"
PGBOUNCER_ADMIN_USER = "pgbouncer_admin"
HBA_BEGIN = "# BEGIN bazbii (managed by Pulumi)"
HBA_END = "# END bazbii"


@dataclass(frozen=True)
class PostgresClusterArgs:
    database: models.Database
    servers: Mapping[str, models.Server]  # every declared server (addresses, roles)
    hosts: Mapping[str, Server]  # Server components, by name
    db_password: pulumi.Input[str]
    replication_password: pulumi.Input[str]
    pooler_admin_password: pulumi.Input[str]


# --------------------------------------------------------------------------- connection strings
def _kv_value(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "._-/:" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def kv_dsn(**params: object) -> str:
    """libpq ``key=value`` connection string, values quoted when needed."""
    return " ".join(f"{k}={_kv_value(v)}" for k, v in params.items() if v is not None)


def secret_dsn(password: pulumi.Input[str], **params: object) -> pulumi.Output[str]:
    return pulumi.Output.secret(pulumi.Output.from_input(password).apply(lambda pw: kv_dsn(**params, password=pw)))


def secret_url(password: pulumi.Input[str], *, user: str, host: str, port: int, dbname: str) -> pulumi.Output[str]:
    return pulumi.Output.secret(
        pulumi.Output.from_input(password).apply(
            lambda pw: f"postgresql://{quote(user, safe='')}:{quote(pw, safe='')}@{host}:{port}/{quote(dbname, safe='')}"
        )
    )


def userlist(entries: Mapping[str, str]) -> str:
    """PgBouncer auth_file: ``"user" "password"`` lines (``"`` doubled)."""
    return "".join(f'"{u}" "{p.replace(chr(34), chr(34) * 2)}"\n' for u, p in entries.items())


# --------------------------------------------------------------------------- paths and script fragments
def pg_paths(version: int) -> dict[str, str]:
    return {
        "datadir": f"/var/lib/postgresql/{version}/main",
        "confdir": f"/etc/postgresql/{version}/main",
        "bin": f"/usr/lib/postgresql/{version}/bin",
        "unit": f"postgresql@{version}-main",
        "passfile": f"/var/lib/postgresql/{version}/replication.pgpass",
    }


def as_root(text: str) -> str:
    """Run a generated script as root (the SSH user has passwordless sudo); stdin passes through."""
    return f"sudo -n bash -c {q(text)}"


def install_fragment(version: int, create_main_cluster: bool) -> str:
    create = "true" if create_main_cluster else "false"
    return f"""
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/lib/postgresql/{version}/bin/postgres ]; then
  apt-get update -q
  apt-get install -y -q postgresql-common
  /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y
  install -d /etc/postgresql-common
  sed -i '/^create_main_cluster/d' /etc/postgresql-common/createcluster.conf 2>/dev/null || true
  echo "create_main_cluster = {create}" >> /etc/postgresql-common/createcluster.conf
  apt-get install -y -q postgresql-{version}
fi
"""


def hba_lines(db: models.Database, servers: Mapping[str, models.Server]) -> list[str]:
    """Who may connect: the app user from the pooler (and API hosts), replication between database hosts."""
    app_clients = {db.pooler.server} | {n for n, s in servers.items() if "api" in s.roles}
    db_hosts = {db.primary, *db.replicas}
    if db.switchover is not None and db.switchover.from_ not in db.retired:
        db_hosts.add(db.switchover.from_)  # stopped, kept re-attachable (pg_rewind) until retired
    lines = ["local all postgres peer"]
    for name in sorted(app_clients):
        lines.append(f"host {db.name} {db.user} {servers[name].address}/32 scram-sha-256")
    for name in sorted(db_hosts):
        lines.append(f"host replication {db.replication_user} {servers[name].address}/32 scram-sha-256")
    for name in sorted(servers):  # operational connections (gate, consistency, switchover)
        lines.append(f"host all {db.replication_user} {servers[name].address}/32 scram-sha-256")
    lines.append(f"host all {db.replication_user} 127.0.0.1/32 scram-sha-256")
    return lines


def access_fragment(db: models.Database, servers: Mapping[str, models.Server]) -> str:
    """conf.d settings and the managed pg_hba block; a reload applies what can be applied without restart."""
    paths = pg_paths(db.version)
    conf = (
        "# managed by Pulumi (bazbii)\n"
        "listen_addresses = '*'\n"
        f"port = {db.port}\n"
        "wal_level = replica\n"
        "max_wal_senders = 10\n"
        "max_replication_slots = 10\n"
        "hot_standby = on\n"
        "wal_log_hints = on\n"
        "password_encryption = 'scram-sha-256'\n"
    )
    block = "\n".join([HBA_BEGIN, *hba_lines(db, servers), HBA_END]) + "\n"
    return f"""
CONFDIR={q(paths["confdir"])}
install -d -o postgres -g postgres "$CONFDIR/conf.d"
printf '%s' {q(conf)} > "$CONFDIR/conf.d/bazbii.conf"
hba="$CONFDIR/pg_hba.conf"
touch "$hba"
sed -i '/^{HBA_BEGIN}$/,/^{HBA_END}$/d' "$hba"
{{ printf '%s' {q(block)}; cat "$hba"; }} > "$hba.new"
chown postgres:postgres "$hba.new"; chmod 640 "$hba.new"; mv -f "$hba.new" "$hba"
"""


def reload_fragment() -> str:
    return """
if runuser -u postgres -- psql -XtAc 'SELECT 1' >/dev/null 2>&1; then
  runuser -u postgres -- psql -XtAc 'SELECT pg_reload_conf()' >/dev/null
  sleep 1
  pending=$(runuser -u postgres -- psql -XtAc "SELECT string_agg(name, ', ') FROM pg_settings WHERE pending_restart")
  if [ -n "$pending" ]; then
    echo "note: $pending take effect at the next PostgreSQL restart (not restarted here: that would be downtime)"
  fi
fi
"""


def ops_grants_psql() -> str:
    """``bazbii_db.replication.grants`` as psql ``\\gexec`` lines for the role in ``:repl_user``."""
    return "\n".join(
        f"SELECT format('{template.replace('<role>', '%I')}', :'repl_user') \\gexec"
        for template, _why in explain_grants()
    )


def primary_script(db: models.Database, servers: Mapping[str, models.Server]) -> str:
    """Runs as root on the primary; stdin: the application password, then the replication password."""
    paths = pg_paths(db.version)
    ops_grants = ops_grants_psql()
    return script(
        """
IFS= read -r APP_PASSWORD
IFS= read -r REPLICATION_PASSWORD
""",
        install_fragment(db.version, create_main_cluster=True),
        f"""
if [ "$(runuser -u postgres -- psql -XtAc 'SELECT pg_is_in_recovery()')" != "f" ]; then
  echo "{db.primary} is not a writable primary (still in recovery?); the switchover must come first" >&2
  exit 1
fi
""",
        access_fragment(db, servers),
        reload_fragment(),
        f"""
psql_admin() {{ runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -q "$@"; }}
# Passwords reach psql through its environment (\\getenv), never its command line.
export APP_PASSWORD REPLICATION_PASSWORD
psql_admin -v app_user={q(db.user)} -v repl_user={q(db.replication_user)} -v dbname={q(db.name)} <<'SQL'
\\getenv app_pw APP_PASSWORD
\\getenv repl_pw REPLICATION_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_user') \\gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_pw') \\gexec
SELECT format('CREATE ROLE %I LOGIN REPLICATION', :'repl_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'repl_user') \\gexec
SELECT format('ALTER ROLE %I LOGIN REPLICATION PASSWORD %L', :'repl_user', :'repl_pw') \\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'dbname', :'app_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') \\gexec
SQL
# What the lag gate, the consistency check and the switchover need, without superuser
# (bazbii_db.replication.grants); function grants live per database, so in the app database.
psql_admin -d {q(db.name)} -v repl_user={q(db.replication_user)} <<'SQL'
{ops_grants}
SQL
unset APP_PASSWORD REPLICATION_PASSWORD
systemctl enable {paths["unit"]} >/dev/null 2>&1 || true
echo "primary {db.primary} configured"
""",
    )


def replica_script(db: models.Database, servers: Mapping[str, models.Server], server: str, replica: models.Replica) -> str:
    """Runs as root on the replica host; stdin: the replication password."""
    paths = pg_paths(db.version)
    primary = servers[db.primary]
    setup = replica_setup_script(
        primary_host=primary.address,
        primary_port=db.port,
        replication_user=db.replication_user,
        slot=replica.slot,
        datadir=paths["datadir"],
        passfile=paths["passfile"],
        pg_bin=paths["bin"],
        application_name=replica.slot,
    )
    return script(
        """
IFS= read -r BAZBII_REPLICATION_PASSWORD
export BAZBII_REPLICATION_PASSWORD
""",
        install_fragment(db.version, create_main_cluster=False),
        f"""
DATADIR={q(paths["datadir"])}
if [ -f "$DATADIR/standby.signal" ]; then
  echo "{server} is already a standby; refreshing its settings only"
  unset BAZBII_REPLICATION_PASSWORD
else
  install -d -o postgres -g postgres -m 0700 {q(paths["passfile"].rsplit("/", 1)[0])}
  bash -c {q(setup)}
  unset BAZBII_REPLICATION_PASSWORD
  if [ ! -d {q(paths["confdir"])} ]; then
    pg_createcluster {db.version} main --datadir="$DATADIR" --port={db.port}
  fi
fi
""",
        access_fragment(db, servers),
        f"""
systemctl enable --now {paths["unit"]}
systemctl reload {paths["unit"]} || true
for attempt in $(seq 1 60); do
  state=$(runuser -u postgres -- psql -XtAc 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
  [ "$state" = "t" ] && break
  [ "$attempt" -eq 60 ] && {{ echo "{server}: standby did not come up in recovery" >&2; exit 1; }}
  sleep 2
done
echo "{server} is a hot standby of {db.primary} (slot {replica.slot})"
""",
    )


def replica_delete_script(db: models.Database, servers: Mapping[str, models.Server], server: str,
                          replica: models.Replica) -> str:
    """Stop the standby and drop its slot on the primary; a promoted server is left alone."""
    paths = pg_paths(db.version)
    primary = servers[db.primary]
    dsn = kv_dsn(host=primary.address, port=db.port, dbname="postgres", user=db.replication_user)
    return script(
        f"""
DATADIR={q(paths["datadir"])}
if [ ! -f "$DATADIR/standby.signal" ]; then
  echo "{server} is not a standby (promoted, or never built): left running"
  exit 0
fi
systemctl disable --now {paths["unit"]}
PGPASSFILE={q(paths["passfile"])} runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 {q(dsn)} -c \\
  "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{replica.slot}' AND NOT active"
mv "$DATADIR" "$DATADIR.removed-$(date +%Y%m%d%H%M%S)"
echo "standby on {server} stopped, slot {replica.slot} dropped on {db.primary}"
"""
    )


def pgbouncer_ini(db: models.Database, primary_address: str) -> str:
    pooler = db.pooler
    return (
        "; managed by Pulumi (bazbii). The [databases] host moves only inside the planned switchover.\n"
        "[databases]\n"
        f"{db.name} = host={primary_address} port={db.port} dbname={db.name}\n"
        "\n"
        "[pgbouncer]\n"
        "listen_addr = *\n"
        f"listen_port = {pooler.port}\n"
        "unix_socket_dir = /var/run/postgresql\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {PGBOUNCER_USERLIST}\n"
        f"admin_users = {PGBOUNCER_ADMIN_USER}\n"
        f"pool_mode = {pooler.pool_mode}\n"
        "max_client_conn = 1000\n"
        "default_pool_size = 20\n"
        "server_reset_query = DISCARD ALL\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "logfile = /var/log/postgresql/pgbouncer.log\n"
        "pidfile = /var/run/postgresql/pgbouncer.pid\n"
    )


def pooler_script(db: models.Database, primary_address: str) -> str:
    """Runs as root on the pooler host; stdin: the userlist (secret)."""
    ini = pgbouncer_ini(db, primary_address)
    return script(
        """
USERLIST=$(cat)
export DEBIAN_FRONTEND=noninteractive
if ! command -v pgbouncer >/dev/null 2>&1; then
  apt-get update -q
  apt-get install -y -q pgbouncer
fi
""",
        f"""
INI={PGBOUNCER_INI}
new_host={q(primary_address)}
if [ -f "$INI" ] && systemctl is-active --quiet pgbouncer; then
  old_host=$(sed -n 's/^{db.name} *= *.*host=\\([^ ]*\\).*/\\1/p' "$INI" | head -n 1)
  if [ -n "$old_host" ] && [ "$old_host" != "$new_host" ]; then
    echo "refusing to move [databases] {db.name} from $old_host to $new_host with a plain RELOAD:" >&2
    echo "a primary change goes through the planned switchover (PAUSE, promote, repoint, RESUME)" >&2
    exit 1
  fi
fi
install -d -m 0750 -o postgres -g postgres /etc/pgbouncer
umask 077
printf '%s' "$USERLIST" > {PGBOUNCER_USERLIST}.new
unset USERLIST
chown postgres:postgres {PGBOUNCER_USERLIST}.new; mv -f {PGBOUNCER_USERLIST}.new {PGBOUNCER_USERLIST}
printf '%s' {q(ini)} > "$INI.new"
chown postgres:postgres "$INI.new"; chmod 640 "$INI.new"; mv -f "$INI.new" "$INI"
systemctl enable pgbouncer >/dev/null 2>&1 || true
if systemctl is-active --quiet pgbouncer; then systemctl reload pgbouncer; else systemctl start pgbouncer; fi
echo "pgbouncer on :{db.pooler.port} -> {db.name} at $new_host:{db.port}"
""",
    )


def retire_script(db: models.Database, server: str) -> str:
    paths = pg_paths(db.version)
    retire = retire_primary_script(
        systemd_unit=paths["unit"],
        debian_start_conf=f"{paths['confdir']}/start.conf",
        pg_bin=paths["bin"],
    )
    return script(
        f"""
if systemctl is-active --quiet {paths["unit"]}; then
  sessions=$(runuser -u postgres -- psql -XtAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '{db.user}'")
  if [ "$sessions" != "0" ]; then
    echo "{server} still has $sessions application session(s); is PgBouncer pointing elsewhere?" >&2
    exit 1
  fi
  # Slots on a retired server would keep WAL forever if it were ever started again.
  runuser -u postgres -- psql -X -c 'SET default_transaction_read_only = off' \\
    -c 'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active' >/dev/null \\
    || echo "warning: could not drop inactive slots on {server}"
fi
bash -c {q(retire)}
"""
    )


# --------------------------------------------------------------------------- the component
def _providers():
    """The data-plane resources (components/providers/replication.py, written with the database issues)."""
    from components.providers.replication import PlannedSwitchover, ReplicaLagGate

    return ReplicaLagGate, PlannedSwitchover


class PostgresCluster(pulumi.ComponentResource):
    app_host: str
    app_port: int
    primary_host: str
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: PostgresClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:PostgresCluster", name, None, opts)
        inherit_depends_on(self, opts)
        db, servers, hosts = args.database, args.servers, args.hosts
        primary = servers[db.primary]
        pooler = servers[db.pooler.server]
        self.primary_host = primary.address
        if db.app_connection == "pooler":
            self.app_host, self.app_port = pooler.address, db.pooler.port
        else:
            self.app_host, self.app_port = primary.address, db.port
        self.database_name, self.user = db.name, db.user

        def ops_dsn(server: str) -> pulumi.Output[str]:
            return secret_dsn(args.replication_password, host=servers[server].address, port=db.port,
                              dbname=db.name, user=db.replication_user, application_name="bazbii-pulumi")

        # App-user connection strings: the application (through the pooler) and migrations (direct).
        self.app_database_url = secret_url(args.db_password, user=db.user, host=self.app_host,
                                           port=self.app_port, dbname=db.name)
        self.migration_dsn = secret_dsn(args.db_password, host=primary.address, port=db.port, dbname=db.name,
                                        user=db.user, application_name="bazbii-migrations")
        self.replica_dsns = {
            server: secret_dsn(args.db_password, host=servers[server].address, port=db.port, dbname=db.name,
                               user=db.user, application_name="bazbii-migrations")
            for server in sorted(db.replicas)
        }

        self.switchover = None
        if db.switchover is not None:
            _, PlannedSwitchover = _providers()
            old = db.switchover.from_
            # The switchover rewrites pgbouncer.ini in place, so its update runs on the pooler host
            # (components/providers/replication.py): the admin console is local there.
            admin_dsn = secret_dsn(args.pooler_admin_password, host="127.0.0.1", port=db.pooler.port,
                                   dbname="pgbouncer", user=PGBOUNCER_ADMIN_USER)
            self.switchover = PlannedSwitchover(
                f"{name}-switchover",
                old_primary_dsn=ops_dsn(old),
                new_primary_dsn=ops_dsn(db.primary),
                pgbouncer_admin_dsn=admin_dsn,
                pgbouncer_ini_path=PGBOUNCER_INI,
                database_alias=db.name,
                new_host=primary.address,
                new_port=db.port,
                pause_timeout_seconds=db.pooler.pause_timeout_seconds,
                max_lag_bytes=db.lag_gate.max_bytes,
                opts=child_opts(self, depends_on=[hosts[s].ready for s in sorted({old, db.primary, db.pooler.server})]),
            )
        after_switchover = [self.switchover] if self.switchover is not None else []

        passwords = pulumi.Output.secret(
            pulumi.Output.all(args.db_password, args.replication_password).apply(lambda p: f"{p[0]}\n{p[1]}\n")
        )
        primary_text = primary_script(db, servers)
        self.primary = remote.Command(
            f"{name}-primary",
            connection=hosts[db.primary].connection,
            create=as_root(primary_text),
            update=as_root(primary_text),
            stdin=passwords,
            triggers=[db.primary, db.version, hba_lines(db, servers)],
            opts=child_opts(self, depends_on=[hosts[db.primary].ready, *after_switchover],
                            additional_secret_outputs=["stdin"]),
        )

        self.replicas: dict[str, remote.Command] = {}
        self.lag_gates: dict[str, pulumi.Resource] = {}
        replication_pw = pulumi.Output.secret(pulumi.Output.from_input(args.replication_password).apply(lambda p: p + "\n"))
        for server in sorted(db.replicas):
            replica = db.replicas[server]
            text = replica_script(db, servers, server, replica)
            self.replicas[server] = remote.Command(
                f"{name}-replica-{server}",
                connection=hosts[server].connection,
                create=as_root(text),
                update=as_root(text),
                delete=as_root(replica_delete_script(db, servers, server, replica)),
                stdin=replication_pw,
                triggers=[db.primary, replica.slot, db.version],
                opts=child_opts(self, depends_on=[hosts[server].ready, self.primary],
                                additional_secret_outputs=["stdin"]),
            )
            if replica.lag_gate:
                ReplicaLagGate, _ = _providers()
                self.lag_gates[server] = ReplicaLagGate(
                    f"{name}-lag-gate-{server}",
                    primary_dsn=ops_dsn(db.primary),
                    replica_dsn=ops_dsn(server),
                    slot=replica.slot,
                    max_lag_bytes=db.lag_gate.max_bytes,
                    window_seconds=db.lag_gate.window_seconds,
                    timeout_seconds=db.lag_gate.timeout_seconds,
                    check_consistency=replica.consistency_check,
                    opts=child_opts(self, depends_on=[self.replicas[server]]),
                )

        stdin_userlist = pulumi.Output.secret(
            pulumi.Output.all(args.db_password, args.pooler_admin_password).apply(
                lambda p: userlist({db.user: p[0], PGBOUNCER_ADMIN_USER: p[1]})
            )
        )
        self.pgbouncer_ini = pgbouncer_ini(db, primary.address)
        pooler_text = pooler_script(db, primary.address)
        self.pooler = remote.Command(
            f"{name}-pooler",
            connection=hosts[db.pooler.server].connection,
            create=as_root(pooler_text),
            update=as_root(pooler_text),
            stdin=stdin_userlist,
            triggers=[self.pgbouncer_ini],
            opts=child_opts(self, depends_on=[hosts[db.pooler.server].ready, self.primary, *after_switchover],
                            additional_secret_outputs=["stdin"]),
        )

        self.retirements: dict[str, remote.Command] = {}
        for server in db.retired:
            text = retire_script(db, server)
            self.retirements[server] = remote.Command(
                f"{name}-retire-{server}",
                connection=hosts[server].connection,
                create=as_root(text),
                update=as_root(text),
                triggers=[server, db.version],
                opts=child_opts(self, depends_on=[hosts[server].ready, self.pooler, self.primary, *after_switchover]),
            )

        self.ready = [self.primary, self.pooler, *self.replicas.values(), *self.lag_gates.values(),
                      *after_switchover, *self.retirements.values()]
        self.register_outputs({
            "primary": db.primary,
            "primaryHost": self.primary_host,
            "appHost": self.app_host,
            "appPort": self.app_port,
            "replicas": sorted(db.replicas),
            "retired": list(db.retired),
        })
