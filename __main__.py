"""bazbii prod stack: read and validate config, wire components, export outputs."""

import pulumi

from bazbii_plan.crosscheck import servers_with_role
from bazbii_plan.facts import APPLIED_RECORD, SWITCHOVER_REPORT_OUTPUT, TRANSITION_CHECK
from bazbii_plan.judging import judged_by
from bazbii_plan.record import plan_digests, target_record
from components import preflight
from components.api_deployment import API_NODE_PORT, ApiDeployment, ApiDeploymentArgs, app_versions
from components.applied_record import AppliedRecord, AppliedRecordArgs, exported_record, read_previous_record
from components.dataplane_release import DataPlaneRelease, DataPlaneReleaseArgs
from components.dns_records import DnsRecords, DnsRecordsArgs
from components.gateway import Gateway, GatewayArgs
from components.metrics_reader_access import MetricsReaderAccess, MetricsReaderAccessArgs
from components.metrics_targets import MetricsTargets, MetricsTargetsArgs
from components.phase_gate import APPLIED_RECORD_OUTPUT, OLD_GATE_NAME, guard_everything_after
from components.postgres_cluster import PostgresCluster, PostgresClusterArgs
from components.postgres_config import dataplane_servers
from components.schema_release import SchemaRelease, SchemaReleaseArgs
from components.server import Server, ServerArgs
from components.stack_inputs import load_or_stop, secret
from components.transition_check import TransitionCheck, TransitionCheckArgs
from components.weighted_traffic import WeightedTraffic, WeightedTrafficArgs

stack = load_or_stop()
state = stack.state()
if stack.override:
    pulumi.log.warn(f"phase override in effect: {stack.override}")
migration = preflight.check_or_stop(stack)  # nothing is registered before this passes

# --------------------------------------------------------------------------- the check (first)
# Registered before anything it guards; every later resource depends on it (phase_gate.py).
previous, previous_source = read_previous_record()
digests = plan_digests(stack.plan)
# The record carries what judges every step (criteria, scopes, metrics config): the next update is judged by it.
target = target_record(stack.current, state.to_config(), digests, judged_by(stack.plan, stack.metrics, stack.time_scale))
check = TransitionCheck(
    TRANSITION_CHECK,
    TransitionCheckArgs(
        step_names={name: track.names() for name, track in stack.plan.tracks.items()},
        track_keys={name: track.key for name, track in stack.plan.tracks.items()},
        target=target,
        previous=previous,
        previous_source=previous_source,
        override=stack.override,
        step_digests=digests,
        step_requires={
            name: {step.name: dict(step.requires) for step in track.steps if step.requires}
            for name, track in stack.plan.tracks.items()
        },
    ),
    pulumi.ResourceOptions(aliases=[pulumi.Alias(name=OLD_GATE_NAME)]),
)
guard_everything_after(check)

# --------------------------------------------------------------------------- components
ssh_key = secret("sshPrivateKey")
servers = {
    name: Server(name, ServerArgs(server=server, ssh_private_key=ssh_key))
    for name, server in sorted(state.servers.items())
}

connections = {name: server.connection for name, server in servers.items()}
servers_ready = [r for server in servers.values() for r in server.ready]
schema_over_ssh = migration is not None and state.schema_.runner == "ssh"
# The data plane runs on the servers (the runner needs only SSH): install its CLIs where they run.
release = DataPlaneRelease(
    "dataplane",
    DataPlaneReleaseArgs(servers=dataplane_servers(state.database, schema_over_ssh), connections=connections),
    pulumi.ResourceOptions(depends_on=servers_ready),
)

db = PostgresCluster(
    "db",
    PostgresClusterArgs(
        database=state.database,
        servers=state.servers,
        connections=connections,
        db_password=secret("dbPassword"),
        replication_password=secret("replicationPassword"),
        pooler_admin_password=secret("poolerAdminPassword"),
        postgres_exporter=stack.metrics.exporter("postgres"),
    ),
    pulumi.ResourceOptions(depends_on=[*servers_ready, *release.ready]),
)

gateway = Gateway(
    "gateway",
    GatewayArgs(
        account_id=state.cloudflare.account_id,
        tunnel_name=state.gateway.tunnel.name,
        image=state.gateway.image,
        port=state.gateway.port,
        health_path=state.gateway.health_path,
        hostnames=[state.traffic.hostname],
        connections={name: connections[name] for name in servers_with_role(state.servers, "gateway")},
        api_upstreams=[f"http://{state.servers[n].address}:{API_NODE_PORT}" for n in servers_with_role(state.servers, "api")],
        tunnel_secret=secret("tunnelSecret"),
        metrics_port=stack.metrics.exporter("gateway").port,
    ),
    pulumi.ResourceOptions(depends_on=[r for name in servers_with_role(state.servers, "gateway") for r in servers[name].ready]),
)

traffic = WeightedTraffic(
    "traffic",
    WeightedTrafficArgs(
        account_id=state.cloudflare.account_id,
        zone_id=state.cloudflare.zone_id,
        traffic=state.traffic,
        origins=gateway.origins,
    ),
    pulumi.ResourceOptions(depends_on=gateway.ready),
)

dns = DnsRecords(
    "dns",
    DnsRecordsArgs(zone_id=state.cloudflare.zone_id, zone=state.cloudflare.zone, records=state.dns.records),
    pulumi.ResourceOptions(depends_on=gateway.ready),
)

schema = None
if migration is not None:
    schema = SchemaRelease(
        "schema",
        SchemaReleaseArgs(
            namespace=state.app.namespace,
            runner=state.schema_.runner,
            bundle=migration,
            image=state.app.api.image,
            worker_replicas=state.app.worker.replicas,
            dsn=db.migration_dsn,
            replica_dsns=db.replica_dsns,
            app_versions=app_versions(state.app),
            drain_seconds=state.app.rollout.termination_grace_period_seconds + 60,
            runner_connection=connections[state.database.pooler.server] if schema_over_ssh else None,
        ),
        pulumi.ResourceOptions(depends_on=[*db.ready, *release.ready]),
    )

app = ApiDeployment(
    "app",
    ApiDeploymentArgs(
        app=state.app,
        db_host=db.app_host,
        db_port=db.app_port,
        db_name=db.database_name,
        db_user=db.user,
        database_url=db.app_database_url,
        db_password=secret("dbPassword"),
        flags=state.flags,
        extra_depends_on=[schema] if schema is not None else [],
    ),
    pulumi.ResourceOptions(depends_on=[db.pooler]),
)

metrics = MetricsTargets("metrics", MetricsTargetsArgs(state=state, metrics=stack.metrics))

# The pull-request previews' key, allowed to read the metrics only, on the server they are read through.
reader_route = stack.metrics.ssh
metrics_reader = None
# (bazbii:metrics validates that a reader key comes with an endpoint its forced command can name)
if reader_route is not None and reader_route.reader_public_key and reader_route.server in servers \
        and stack.metrics.endpoint:
    metrics_reader = MetricsReaderAccess(
        "metrics-reader",
        MetricsReaderAccessArgs(server=reader_route.server, connection=connections[reader_route.server],
                                public_key=reader_route.reader_public_key, endpoint=stack.metrics.endpoint),
        pulumi.ResourceOptions(depends_on=servers[reader_route.server].ready),
    )

components = [*servers.values(), release, db, gateway, traffic, dns, *([schema] if schema else []), app, metrics,
              *([metrics_reader] if metrics_reader else [])]

# --------------------------------------------------------------------------- the record (last)
record = AppliedRecord(
    APPLIED_RECORD,
    AppliedRecordArgs(target=target, previous=previous, depends_on=[check, *components]),
)

pulumi.export("steps", stack.current)
pulumi.export(APPLIED_RECORD_OUTPUT, exported_record(record))
pulumi.export("lbHostname", state.traffic.hostname)
pulumi.export("poolWeights", traffic.weights)
pulumi.export("dbHost", db.app_host)
pulumi.export("dbPrimary", {"server": state.database.primary, "address": db.primary_host})
# The last switchover's JSON report (its window and each step's ms): what PgBouncer held the clients for.
pulumi.export(SWITCHOVER_REPORT_OUTPUT, db.switchover_report)
pulumi.export("gatewayHosts", sorted(gateway.origins))
pulumi.export("appVersions", app.app_versions)
pulumi.export("migration", {"id": migration.migration_id, "stage": migration.stage, "checksum": migration.checksum}
              if migration else None)
pulumi.export("rollback", state.rollback.model_dump(by_alias=True, mode="json"))
pulumi.export("metricsTargets", metrics.targets)
pulumi.export("metricsScrapeConfigs", metrics.scrape_configs)
