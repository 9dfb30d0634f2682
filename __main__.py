"""bazbii prod stack: read and validate config, wire components, export outputs."""

import pulumi

from bazbii_plan.crosscheck import servers_with_role
from bazbii_plan.record import next_record, now_iso
from bazbii_plan.scope import step_scopes
from components import preflight
from components.api_deployment import API_NODE_PORT, ApiDeployment, ApiDeploymentArgs, app_versions
from components.applied_record import read_previous_record
from components.dns_records import DnsRecords, DnsRecordsArgs
from components.gateway import Gateway, GatewayArgs
from components.phase_gate import APPLIED_RECORD_OUTPUT, PhaseGate, PhaseGateArgs
from components.postgres_cluster import PostgresCluster, PostgresClusterArgs
from components.schema_release import SchemaRelease, SchemaReleaseArgs
from components.server import Server, ServerArgs
from components.stack_inputs import load_or_stop, secret
from components.weighted_traffic import WeightedTraffic, WeightedTrafficArgs

stack = load_or_stop()
state = stack.state()
if stack.override:
    pulumi.log.warn(f"phase override in effect: {stack.override}")
migration = preflight.check_or_stop(stack)  # nothing is registered before this passes

previous, previous_source = read_previous_record()
evaluated_at = now_iso()
step_names = {name: track.names() for name, track in stack.plan.tracks.items()}
target = previous.apply(lambda prev: next_record(stack.current, state.to_config(), prev, evaluated_at))

# --------------------------------------------------------------------------- components
ssh_key = secret("sshPrivateKey")
servers = {
    name: Server(name, ServerArgs(server=server, ssh_private_key=ssh_key))
    for name, server in sorted(state.servers.items())
}

db = PostgresCluster(
    "db",
    PostgresClusterArgs(
        database=state.database,
        servers=state.servers,
        hosts=servers,
        db_password=secret("dbPassword"),
        replication_password=secret("replicationPassword"),
        pooler_admin_password=secret("poolerAdminPassword"),
    ),
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
        hosts={name: servers[name] for name in servers_with_role(state, "gateway")},
        api_upstreams=[f"http://{state.servers[n].address}:{API_NODE_PORT}" for n in servers_with_role(state, "api")],
        tunnel_secret=secret("tunnelSecret"),
    ),
)

traffic = WeightedTraffic(
    "traffic",
    WeightedTrafficArgs(
        account_id=state.cloudflare.account_id,
        zone_id=state.cloudflare.zone_id,
        traffic=state.traffic,
        origins=gateway.origins,
    ),
    pulumi.ResourceOptions(depends_on=list(gateway.ready.values())),
)

dns = DnsRecords(
    "dns",
    DnsRecordsArgs(zone_id=state.cloudflare.zone_id, zone=state.cloudflare.zone, records=state.dns.records),
    pulumi.ResourceOptions(depends_on=list(gateway.ready.values())),
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
            worker_replicas=0 if state.app.worker.quiet else state.app.worker.replicas,
            dsn=db.migration_dsn,
            replica_dsns=db.replica_dsns,
            app_versions=app_versions(state.app),
            drain_seconds=state.app.rollout.termination_grace_period_seconds + 60,
            depends_on=db.ready,
        ),
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
        extra_depends_on=[schema] if schema is not None else [],
    ),
    pulumi.ResourceOptions(depends_on=[db.pooler]),
)

components = [*servers.values(), db, gateway, traffic, dns, *([schema] if schema else []), app]

# --------------------------------------------------------------------------- the gate (last)
gate = PhaseGate(
    "phase-gate",
    PhaseGateArgs(
        step_names=step_names,
        track_keys={name: track.key for name, track in stack.plan.tracks.items()},
        target=target,
        previous=previous,
        previous_source=previous_source,
        override=stack.override,
        evaluated_at=evaluated_at,
        depends_on=components,
        step_requires={
            name: {step.name: dict(step.requires) for step in track.steps if step.requires}
            for name, track in stack.plan.tracks.items()
        },
        step_scopes=step_scopes(stack.plan),
    ),
)

pulumi.export("steps", stack.current)
pulumi.export(APPLIED_RECORD_OUTPUT, gate.target)
pulumi.export("lbHostname", state.traffic.hostname)
pulumi.export("poolWeights", traffic.weights)
pulumi.export("dbHost", db.app_host)
pulumi.export("dbPrimary", {"server": state.database.primary, "address": db.primary_host})
pulumi.export("gatewayHosts", sorted(gateway.origins))
pulumi.export("appVersions", app.app_versions)
pulumi.export("migration", {"id": migration.migration_id, "stage": migration.stage, "checksum": migration.checksum}
              if migration else None)
pulumi.export("rollback", state.rollback.model_dump(by_alias=True, mode="json"))
