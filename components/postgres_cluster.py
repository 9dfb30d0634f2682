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
``<name>-lag-gate-<server>``    remote.Command on the replica's host when ``lagGate`` is on:
                                ``python -m bazbii_db.replication --json gate [--check-consistency]`` (fails the
                                update unless the replica streams under the lag gate and, when asked, every
                                table matches at a fixed LSN). Runs again until it passes, and on any change.
``<name>-switchover``           remote.Command on the pooler host when ``database.switchover`` is set:
                                ``python -m bazbii_db.replication --json switchover`` (PAUSE, fence, catch up,
                                promote, repoint the local pgbouncer.ini, RESUME). Create only: a changed target
                                is a new switchover; re-running the same one rolls forward, never promotes twice.
``<name>-pooler``               remote.Command on the pooler server: ``pgbouncer.ini`` (its ``[databases]``
                                entry points at the current primary), ``userlist.txt`` (stdin, secret) and
                                ``pgbouncer_hba.conf`` (the admin console from 127.0.0.1 only).
                                It refuses to move the database to another host with a plain RELOAD: that
                                only happens inside the switchover, under PAUSE. It depends on the
                                switchover, so after it the ini already names the new host.
``<name>-exporter-<server>``    remote.Command on every server with the ``database`` role (where
                                ``metricsTargets`` lists the PostgreSQL exporter): Debian's
                                prometheus-postgres-exporter on the server's address as a ``pg_monitor``
                                role over the local socket; it fails unless the exporter reaches PostgreSQL.
                                The switchover's gate reads its longest transaction. Delete stops it.
``<name>-retire-<server>``      remote.Command per ``database.retired`` server:
                                ``bazbii_db.replication.retire.retire_primary_script`` after checking that no
                                application session is left on it; the data directory is kept (pg_rewind).

The application reaches PostgreSQL through ``app_host:app_port``: the pooler
server's address when ``appConnection`` is ``pooler``, the primary otherwise.
Connection strings carrying passwords are secret Outputs.

Operational connections (lag gate, consistency check, switchover) use the
replication user and are allowed from the declared servers only: the commands run
on those servers (the code is put there by ``DataPlaneRelease``, which this
component depends on through its options), and their DSNs with passwords reach
them on stdin. The machine running ``pulumi up`` needs only SSH to the servers;
no database port and no PgBouncer admin console is opened beyond them.

Scripts live in :mod:`components.postgres_scripts`, configuration data and
connection strings in :mod:`components.postgres_config`, the data-plane
command lines in :mod:`bazbii_db.dataplane`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from bazbii_db.dataplane import DEFAULT_RUNTIME, Runtime, lag_gate_command, secrets_stdin, switchover_command
from bazbii_db.dsn import build_dsn
from bazbii_plan import models
from bazbii_plan.gates import Exporter, exporter_servers
from bazbii_plan.facts import SWITCHOVER_REPORT_OUTPUT
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on
from components.postgres_config import (PGBOUNCER_ADMIN_USER, PGBOUNCER_INI, migration_dsn, ops_dsn,
                                        pgbouncer_ini, pooler_admin_dsn, userlist,
                                        with_password)
from components.postgres_scripts import (as_root, pooler_script, postgres_exporter_script,
                                         postgres_exporter_stop_script, primary_script, replica_delete_script,
                                         replica_script, retire_script)


@dataclass(frozen=True)
class PostgresClusterArgs:
    database: models.Database
    servers: Mapping[str, models.Server]  # every declared server (addresses, roles)
    connections: Mapping[str, remote.ConnectionArgs]  # SSH connection per server
    db_password: pulumi.Input[str]
    replication_password: pulumi.Input[str]
    pooler_admin_password: pulumi.Input[str]
    postgres_exporter: Exporter  # where metricsTargets says Prometheus scrapes it (bazbii:metrics)
    runtime: Runtime = DEFAULT_RUNTIME  # where DataPlaneRelease installed the CLIs


def secret_stdin(passwords: Sequence[pulumi.Input[str]], lines) -> pulumi.Output[str]:
    """A command's stdin built from secrets (``lines(passwords) -> list[str]``), kept secret."""
    return pulumi.Output.secret(pulumi.Output.all(*passwords).apply(lambda pw: secrets_stdin(lines(pw))))


def secret_dsn(password: pulumi.Input[str], *, form: str = "kv", **params: object) -> pulumi.Output[str]:
    """A connection string carrying a password, as a secret Output (form and quoting: ``build_dsn``)."""
    return pulumi.Output.secret(pulumi.Output.from_input(password).apply(
        lambda pw: build_dsn(form=form, **params, password=pw)))


class PostgresCluster(pulumi.ComponentResource):
    app_host: str
    app_port: int
    primary_host: str
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: PostgresClusterArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:PostgresCluster", name, None, opts)
        inherit_depends_on(self, opts)
        db, servers, connections = args.database, args.servers, args.connections
        primary = servers[db.primary]
        pooler = servers[db.pooler.server]
        self.primary_host = primary.address
        if db.app_connection == "pooler":
            self.app_host, self.app_port = pooler.address, db.pooler.port
        else:
            self.app_host, self.app_port = primary.address, db.port
        self.database_name, self.user = db.name, db.user

        # App-user connection strings: the application (through the pooler) and migrations (direct).
        self.app_database_url = secret_dsn(args.db_password, form="url", user=db.user, host=self.app_host,
                                           port=self.app_port, dbname=db.name)
        def direct_dsn(address: str) -> pulumi.Output[str]:
            """The app user directly on the server at ``address``, with its password (a secret)."""
            return pulumi.Output.secret(pulumi.Output.from_input(args.db_password).apply(
                lambda pw: with_password(migration_dsn(db, address), pw)))

        self.migration_dsn = direct_dsn(primary.address)
        self.replica_dsns = {server: direct_dsn(servers[server].address) for server in sorted(db.replicas)}

        self.switchover = None
        if db.switchover is not None:
            old = servers[db.switchover.from_]
            command = switchover_command(ini_path=PGBOUNCER_INI, alias=db.name, new_host=primary.address,
                                         new_port=db.port, pause_timeout_seconds=db.pooler.pause_timeout_seconds,
                                         max_lag_bytes=db.lag_gate.max_bytes, runtime=args.runtime)
            # On the pooler host: PgBouncer's admin console (127.0.0.1) and its ini are local there.
            self.switchover = remote.Command(
                f"{name}-switchover",
                connection=connections[db.pooler.server],
                create=command,
                stdin=secret_stdin(
                    [args.replication_password, args.pooler_admin_password],
                    lambda pw: [with_password(ops_dsn(db, old.address), pw[0]),
                                with_password(ops_dsn(db, primary.address), pw[0]),
                                with_password(pooler_admin_dsn(db), pw[1])]),
                triggers=[db.switchover.from_, db.primary, primary.address, db.port, db.name],
                opts=child_opts(self, additional_secret_outputs=["stdin"]),
            )
        after_switchover = [self.switchover] if self.switchover is not None else []
        # The switchover's JSON report (its window and each step's ms), None when this step has none.
        self.switchover_report = self.switchover.stdout if self.switchover is not None else None

        passwords = secret_stdin([args.db_password, args.replication_password], lambda pw: [pw[0], pw[1]])
        primary_text = primary_script(db, servers)
        self.primary = remote.Command(
            f"{name}-primary",
            connection=connections[db.primary],
            create=as_root(primary_text),  # the version and the pg_hba lines are in it: a change updates in place
            update=as_root(primary_text),
            stdin=passwords,
            opts=child_opts(self, depends_on=after_switchover, additional_secret_outputs=["stdin"]),
        )

        self.replicas: dict[str, remote.Command] = {}
        self.lag_gates: dict[str, remote.Command] = {}
        replication_pw = secret_stdin([args.replication_password], lambda pw: [pw[0]])
        for server in sorted(db.replicas):
            replica = db.replicas[server]
            text = replica_script(db, servers, server, replica)
            self.replicas[server] = remote.Command(
                f"{name}-replica-{server}",
                connection=connections[server],
                # The primary's address, the slot and the version are in the script: a change updates in place.
                # No triggers: a replacement would run the delete script (stop the standby, drop its slot).
                create=as_root(text),
                update=as_root(text),
                delete=as_root(replica_delete_script(db, servers, server, replica)),
                stdin=replication_pw,
                opts=child_opts(self, depends_on=[self.primary], additional_secret_outputs=["stdin"]),
            )
            if replica.lag_gate:
                gate = lag_gate_command(slot=replica.slot, max_lag_bytes=db.lag_gate.max_bytes,
                                        window_seconds=db.lag_gate.window_seconds,
                                        timeout_seconds=db.lag_gate.timeout_seconds,
                                        check_consistency=replica.consistency_check, runtime=args.runtime)
                # On the replica's host: the replica is local (127.0.0.1), the primary a declared server.
                self.lag_gates[server] = remote.Command(
                    f"{name}-lag-gate-{server}",
                    connection=connections[server],
                    create=gate,  # its thresholds are its arguments, the primary is in the DSN on stdin
                    update=gate,
                    stdin=secret_stdin([args.replication_password],
                                       lambda pw: [with_password(ops_dsn(db, primary.address), pw[0]),
                                                   with_password(ops_dsn(db, "127.0.0.1"), pw[0])]),
                    opts=child_opts(self, depends_on=[self.replicas[server]], additional_secret_outputs=["stdin"]),
                )

        stdin_userlist: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(args.db_password, args.pooler_admin_password).apply(
                lambda pw: userlist({db.user: pw[0], PGBOUNCER_ADMIN_USER: pw[1]})))
        self.pgbouncer_ini = pgbouncer_ini(db, primary.address)
        pooler_text = pooler_script(db, primary.address)
        self.pooler = remote.Command(
            f"{name}-pooler",
            connection=connections[db.pooler.server],
            create=as_root(pooler_text),  # writes the ini and the hba file: a change of either updates in place
            update=as_root(pooler_text),
            stdin=stdin_userlist,
            opts=child_opts(self, depends_on=[self.primary, *after_switchover], additional_secret_outputs=["stdin"]),
        )

        self.retirements: dict[str, remote.Command] = {}
        for server in db.retired:
            text = retire_script(db, server)
            self.retirements[server] = remote.Command(
                f"{name}-retire-{server}",
                connection=connections[server],
                create=as_root(text),
                update=as_root(text),
                opts=child_opts(self, depends_on=[self.pooler, self.primary, *after_switchover]),
            )

        # The primary's exporter first: it creates the exporter's role, which the standbys get by replication.
        self.exporters: dict[str, remote.Command] = {}
        exporter = args.postgres_exporter
        exporter_hosts = exporter_servers(servers, "postgres")
        for server in sorted(exporter_hosts, key=lambda s: s != db.primary):
            text = postgres_exporter_script(db, server, servers[server].address, exporter.port, exporter.path)
            runs_on = [self.primary, *after_switchover, *([self.replicas[server]] if server in self.replicas else [])]
            self.exporters[server] = remote.Command(
                f"{name}-exporter-{server}",
                connection=connections[server],
                create=as_root(text),
                update=as_root(text),
                delete=as_root(postgres_exporter_stop_script(server)),
                opts=child_opts(self, depends_on=[*runs_on, *([self.exporters[db.primary]]
                                                              if db.primary in self.exporters else [])]),
            )

        self.ready = [self.primary, self.pooler, *self.replicas.values(), *self.lag_gates.values(),
                      *after_switchover, *self.retirements.values(), *self.exporters.values()]
        self.register_outputs({
            "primary": db.primary,
            "primaryHost": self.primary_host,
            "appHost": self.app_host,
            "appPort": self.app_port,
            "replicas": sorted(db.replicas),
            "retired": list(db.retired),
            "lagGateReports": {server: gate.stdout for server, gate in self.lag_gates.items()},
            SWITCHOVER_REPORT_OUTPUT: self.switchover_report,
        })
