"""Shell scripts the PostgresCluster runs on its servers over SSH (``remote.Command`` text).

Install and configure PostgreSQL (primary, replicas), PgBouncer, and retire an old primary.
Configuration *data* (paths, hba lines, the ini) comes from :mod:`components.postgres_config`;
the data-plane steps (lag gate, switchover, schema runner) are the project's CLIs, built by
:mod:`bazbii_db.dataplane`. Secrets reach every script on stdin, never on its command line.
"""

from __future__ import annotations

from typing import Mapping

from bazbii_db.replication.grants import explain_grants
from bazbii_db.replication.replica import replica_setup_script
from bazbii_db.replication.retire import retire_primary_script
from bazbii_db.dsn import build_dsn
from bazbii_plan import models
from bazbii_plan.gates import host_port
from components._util import q, script
from components.postgres_config import (HBA_BEGIN, HBA_END, PGBOUNCER_HBA, PGBOUNCER_INI, PGBOUNCER_USERLIST,
                                        POSTGRES_EXPORTER_PACKAGE, POSTGRES_EXPORTER_SETTINGS,
                                        POSTGRES_EXPORTER_USER, hba_lines, pg_paths, pgbouncer_hba, pgbouncer_ini,
                                        postgres_exporter_settings)


def as_root(text: str) -> str:
    """Run a generated script as root (the SSH user has passwordless sudo); stdin passes through."""
    return f"sudo -n bash -c {q(text)}"


def install_fragment(version: int, create_main_cluster: bool, port: int = 5432) -> str:
    create = "true" if create_main_cluster else "false"
    paths = pg_paths(version)
    # A server where PostgreSQL was installed without its main cluster (e.g. once a replica, built with
    # create_main_cluster = false) gets the cluster a primary needs, started, instead of a psql error later.
    ensure_cluster = f"""
if [ ! -d {paths["confdir"]} ]; then
  pg_createcluster {version} main --port={port}
  FRESH_CLUSTER=1
fi
systemctl enable --now {paths["unit"]}
""" if create_main_cluster else ""
    return f"""
export DEBIAN_FRONTEND=noninteractive
if [ ! -x {paths["bin"]}/postgres ]; then
  apt-get update -q
  apt-get install -y -q postgresql-common
  /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y
  install -d /etc/postgresql-common
  sed -i '/^create_main_cluster/d' /etc/postgresql-common/createcluster.conf 2>/dev/null || true
  echo "create_main_cluster = {create}" >> /etc/postgresql-common/createcluster.conf
  apt-get install -y -q postgresql-{version}
fi
{ensure_cluster}"""


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


def reload_fragment(unit: str) -> str:
    return f"""
if [ "${{FRESH_CLUSTER:-0}}" = 1 ]; then
  # Created by this run: nothing connects to it yet, so a restart applies every setting (listen_addresses too).
  systemctl restart {unit}
elif runuser -u postgres -- psql -XtAc 'SELECT 1' >/dev/null 2>&1; then
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
        install_fragment(db.version, create_main_cluster=True, port=db.port),
        f"""
if [ "$(runuser -u postgres -- psql -XtAc 'SELECT pg_is_in_recovery()')" != "f" ]; then
  echo "{db.primary} is not a writable primary (still in recovery?); the switchover must come first" >&2
  exit 1
fi
""",
        access_fragment(db, servers),
        reload_fragment(paths["unit"]),
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
  if [ ! -d {q(paths["confdir"])} ]; then
    # The cluster's configuration (Debian keeps it in /etc, which a base backup does not carry), then its
    # freshly initialised, never started data directory emptied for the base backup.
    pg_createcluster {db.version} main --datadir="$DATADIR" --port={db.port}
    rm -rf "$DATADIR"
  fi
  install -d -o postgres -g postgres -m 0700 {q(paths["passfile"].rsplit("/", 1)[0])}
  bash -c {q(setup)}
  unset BAZBII_REPLICATION_PASSWORD
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
    dsn = build_dsn(host=primary.address, port=db.port, dbname="postgres", user=db.replication_user)
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


def pooler_script(db: models.Database, primary_address: str) -> str:
    """Runs as root on the pooler host; stdin: the userlist (secret)."""
    ini = pgbouncer_ini(db, primary_address)
    hba = pgbouncer_hba(db)
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
printf '%s' {q(hba)} > {PGBOUNCER_HBA}.new
chown postgres:postgres {PGBOUNCER_HBA}.new; chmod 640 {PGBOUNCER_HBA}.new; mv -f {PGBOUNCER_HBA}.new {PGBOUNCER_HBA}
printf '%s' {q(ini)} > "$INI.new"
chown postgres:postgres "$INI.new"; chmod 640 "$INI.new"; mv -f "$INI.new" "$INI"
systemctl enable pgbouncer >/dev/null 2>&1 || true
if systemctl is-active --quiet pgbouncer; then systemctl reload pgbouncer; else systemctl start pgbouncer; fi
echo "pgbouncer on :{db.pooler.port} -> {db.name} at $new_host:{db.port}"
""",
    )


def postgres_exporter_script(db: models.Database, server: str, address: str, port: int, path: str) -> str:
    """Runs as root on a database server: Debian's PostgreSQL exporter, listening where ``metricsTargets``
    says, as a role in ``pg_monitor`` (created on a primary; a standby has it by replication). It fails
    unless the exporter reaches PostgreSQL: a gate reading its series would otherwise only be INCONCLUSIVE
    at the step that needs it (the switchover's longest transaction)."""
    url = f"http://{host_port(address, port)}{path}"
    settings = postgres_exporter_settings(db, address, port, path).rstrip("\n")  # as $(cat) reads it back
    return script(
        f"""
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/bin/{POSTGRES_EXPORTER_PACKAGE} ]; then
  apt-get update -q
  apt-get install -y -q {POSTGRES_EXPORTER_PACKAGE}
fi
recovery=$(runuser -u postgres -- psql -XtAc 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
if [ "$recovery" = "f" ]; then
  runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -q -v role={q(POSTGRES_EXPORTER_USER)} <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \\gexec
SELECT format('GRANT pg_monitor TO %I', :'role') \\gexec
SQL
fi
settings={q(settings)}
if [ "$(cat {POSTGRES_EXPORTER_SETTINGS} 2>/dev/null)" != "$settings" ] || ! systemctl is-active --quiet {POSTGRES_EXPORTER_PACKAGE}; then
  printf '%s\\n' "$settings" > {POSTGRES_EXPORTER_SETTINGS}.new
  mv -f {POSTGRES_EXPORTER_SETTINGS}.new {POSTGRES_EXPORTER_SETTINGS}
  systemctl enable {POSTGRES_EXPORTER_PACKAGE} >/dev/null 2>&1 || true
  systemctl restart {POSTGRES_EXPORTER_PACKAGE}
fi
if [ -z "$recovery" ]; then
  echo "note: PostgreSQL is not running on {server} (a fenced old primary?): its exporter reports pg_up 0 until it runs"
  exit 0
fi
for attempt in $(seq 1 30); do
  if curl -fsS {q(url)} 2>/dev/null | grep -q '^pg_up 1'; then break; fi
  [ "$attempt" -eq 30 ] && {{ echo "{server}: the PostgreSQL exporter at {url} does not reach PostgreSQL (pg_up is not 1)" >&2; exit 1; }}
  sleep 2
done
echo "postgres exporter on {server} at {url}"
"""
    )


def postgres_exporter_stop_script(server: str) -> str:
    """Runs as root on a server that no longer runs PostgreSQL (retired): its exporter stops with it."""
    return script(
        f"""
systemctl disable --now {POSTGRES_EXPORTER_PACKAGE} >/dev/null 2>&1 || true
echo "postgres exporter on {server} stopped"
"""
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
