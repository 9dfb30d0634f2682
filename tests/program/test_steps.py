"""Every step of every track: what the program registers, and with which inputs.

Each step is evaluated at the first combination of the apply-order walk
(bazbii_plan.walk) where its track reaches it, i.e. the update an operator
would actually run. Addresses: server1 203.0.113.11, server2 .12, server3 .13.
"""

from __future__ import annotations

from bazbii_db.dataplane import lag_gate_command, release_digest, switchover_command
from bazbii_plan.facts import DEFAULT_PAUSE_TIMEOUT_SECONDS
from offline_preview.harness import REPO_ROOT
from tests.program.helpers import (CONFIG_MAP, DNS, JOB, LOCAL, POOL, REMOTE, TUNNEL, dep_names, mentions, names,
                                   pool_weights_by_name, resource_id)

S1, S2, S3 = "203.0.113.11", "203.0.113.12", "203.0.113.13"
# The data plane runs on the servers (bazbii_db.dataplane builds the exact command text).
DATAPLANE = ("db-lag-gate-", "db-switchover", "dataplane-install-")
CHECKS = {}


def check(track: str, step: str):
    def register(fn):
        CHECKS[(track, step)] = fn
        return fn
    return register


def ini_host(ev) -> str:
    """Where the pgbouncer.ini the pooler command writes sends the application."""
    line = next(l for l in ev.named("db-pooler").inputs["create"].splitlines() if l.lstrip("'").startswith("bazbii = "))
    return line.split("host=")[1].split()[0]


def env(deployment) -> dict:
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def replicas(ev, name: str) -> int:
    return int(ev.named(name).inputs["spec"]["replicas"])


def image(ev, name: str) -> str:
    return ev.named(name).inputs["spec"]["template"]["spec"]["containers"][0]["image"]


def declared_spec(ev, server: str) -> str:
    """The spec the server's check compares the machine with (its DECLARED line)."""
    check = ev.named(f"{server}-spec-check").inputs["create"]
    return next(line for line in check.splitlines() if line.startswith("DECLARED=")).split("=", 1)[1].strip("'")


def exporter_hosts(ev) -> dict[str, str]:
    """The servers the program installs the PostgreSQL exporter on, with the address it runs the script at."""
    return {r.name.removeprefix("db-exporter-"): connection_host(r) for r in ev.resources
            if r.type == REMOTE and r.name.startswith("db-exporter-")}


def postgres_targets(ev) -> dict[str, str]:
    """Where the ``metricsTargets`` output says Prometheus scrapes the PostgreSQL exporter (server: address)."""
    return {group["labels"]["server"]: group["targets"][0].rsplit(":", 1)[0]
            for group in ev.outputs["metricsTargets"] if group["labels"]["job"] == "postgres"}


def prop(resource, snake: str):
    """A dynamic resource's input by its constructor keyword (providers may store it camelCased)."""
    camel = snake.split("_")[0] + "".join(w.title() for w in snake.split("_")[1:])
    for key in (snake, camel):
        if key in resource.inputs:
            return resource.inputs[key]
    raise KeyError(f"{resource.name}: no input {snake!r} / {camel!r} in {sorted(resource.inputs)}")


def secret_prop(resource, snake: str) -> bool:
    camel = snake.split("_")[0] + "".join(w.title() for w in snake.split("_")[1:])
    return (snake,) in resource.secret_paths or (camel,) in resource.secret_paths


def connection_host(resource) -> str:
    return resource.inputs["connection"]["host"]


# --------------------------------------------------------------------------- infra track
@check("infra", "mvp")
def _mvp(ev):
    assert names(ev, "bazbii:index:Server") == {"server1", "server2"}
    # (the transition check and the applied record list the plan's step names, which mention server3:
    # they are not on a server)
    on_server3 = [r.name for r in ev.resources
                  if r.name not in ("transition-check", "applied-record") and (mentions(r, "server3") or mentions(r, S3))]
    assert on_server3 == [], f"nothing may exist on server3 at mvp: {on_server3}"
    assert declared_spec(ev, "server1") == "2 vCPU / 4 GB / 100 GB, ubuntu-22.04"
    assert names(ev, TUNNEL) == {"gateway-server1-tunnel"}
    assert names(ev, POOL) == {"traffic-server1"}
    assert pool_weights_by_name(ev) == {"server1": 1.0}
    assert connection_host(ev.named("db-primary")) == S2
    assert ini_host(ev) == S2
    assert not [r.name for r in ev.resources if r.name.startswith(DATAPLANE)]
    assert exporter_hosts(ev) == {"server2": S2} == postgres_targets(ev)
    assert "pg_monitor" in ev.named("db-exporter-server2").inputs["create"]
    assert "prometheus-postgres-exporter" in ev.named("db-exporter-server2").inputs["delete"]


@check("infra", "server3-provisioned")
def _server3(ev):
    assert declared_spec(ev, "server3") == "4 vCPU / 8 GB / 500 GB, ubuntu-22.04"
    assert connection_host(ev.named("server3-provision")) == S3
    assert dep_names(ev.named("server3-provision")) >= {"server3-spec-check"}
    # declared and provisioned, but nothing runs on it yet
    users = [r.name for r in ev.resources if r.type == REMOTE and connection_host(r) == S3]
    assert sorted(users) == ["server3-provision", "server3-spec-check"]
    assert "db-replica-server3" not in names(ev)


@check("infra", "replica-streaming")
def _replica(ev):
    replica = ev.named("db-replica-server3")
    assert connection_host(replica) == S3
    script = replica.inputs["create"]
    assert "pg_basebackup" in script and "-R -C -S \"$SLOT\"" in script and "SLOT=server3" in script
    assert "PRIMARY_HOST=203.0.113.12" in script
    assert "BAZBII_REPLICATION_PASSWORD" in script and ("stdin",) in replica.secret_paths
    assert "pg_drop_replication_slot" in replica.inputs["delete"]
    assert dep_names(replica) >= {"db-primary", "server3-provision"}
    gate = ev.named("db-lag-gate-server3")
    # on the replica's host, after the replica was built and the CLI installed there
    assert gate.type == REMOTE and connection_host(gate) == S3
    assert dep_names(gate) >= {"db-replica-server3", "dataplane-install-server3"}
    assert gate.inputs["create"] == lag_gate_command(slot="server3", max_lag_bytes=1048576, window_seconds=1.0,
                                                     timeout_seconds=300, check_consistency=True)
    assert f"/releases/{release_digest(REPO_ROOT)}" in ev.named("dataplane-install-server3").inputs["create"]
    # the PostgreSQL exporter where metricsTargets lists it, the standby's after its replica and the primary's
    assert exporter_hosts(ev) == {"server2": S2, "server3": S3} == postgres_targets(ev)
    assert dep_names(ev.named("db-exporter-server3")) >= {"db-replica-server3", "db-exporter-server2"}
    assert f"--web.listen-address={S3}:9187" in ev.named("db-exporter-server3").inputs["create"]
    assert "triggers" not in ev.named("dataplane-install-server3").inputs  # a changed trigger would replace it
    # DSNs (with the replication password) only on the secret stdin: primary first, the local replica second
    assert secret_prop(gate, "stdin") and not secret_prop(gate, "create")
    primary_dsn, replica_dsn = gate.inputs["stdin"].splitlines()
    assert f"host={S2}" in primary_dsn and "host=127.0.0.1" in replica_dsn and "password=" in replica_dsn
    assert f"host replication replicator {S3}/32 scram-sha-256" in ev.named("db-primary").inputs["create"]
    assert ini_host(ev) == S2  # the application still writes to server2


@check("infra", "gateway-on-server2")
def _gateway_on_server2(ev):
    assert names(ev, TUNNEL) == {"gateway-server1-tunnel", "gateway-server2-tunnel"}
    tunnel = ev.named("gateway-server2-tunnel")
    assert tunnel.inputs["configSrc"] == "cloudflare" and ("tunnelSecret",) in tunnel.secret_paths
    ingress = ev.named("gateway-server2-config").inputs["config"]["ingresses"]
    assert ingress[-1] == {"service": "http_status:404"}
    assert ingress[0] == {"hostname": "api.bazbii.example", "service": "http://localhost:8080"}
    run = ev.named("gateway-server2-run")
    assert connection_host(run) == S2 and ("stdin",) in run.secret_paths
    assert pool_weights_by_name(ev) == {"server1": 1.0, "server2": 0.0}
    pool = ev.named("traffic-server2")
    assert pool.inputs["origins"][0]["address"] == f"{resource_id(tunnel)}.cfargotunnel.com"
    assert pool.inputs["monitor"] == resource_id(ev.named("traffic-monitor"))
    # a pool (even at weight 0) only after its gateway and tunnel run
    assert dep_names(pool) >= {"gateway-server2-run", "gateway-server1-run"}
    lb = ev.named("traffic-lb")
    assert resource_id(pool) in lb.inputs["defaultPools"]
    assert lb.inputs["fallbackPool"] == resource_id(ev.named("traffic-server1"))


@check("infra", "traffic-10")
def _traffic_10(ev):
    assert pool_weights_by_name(ev) == {"server1": 0.9, "server2": 0.1}
    lb = ev.named("traffic-lb")
    assert lb.inputs["steeringPolicy"] == "random" and lb.inputs["proxied"] is True
    assert lb.inputs["fallbackPool"] == resource_id(ev.named("traffic-server1"))


@check("infra", "traffic-50")
def _traffic_50(ev):
    assert pool_weights_by_name(ev) == {"server1": 0.5, "server2": 0.5}


@check("infra", "traffic-100")
def _traffic_100(ev):
    assert pool_weights_by_name(ev) == {"server1": 0.0, "server2": 1.0}
    lb = ev.named("traffic-lb")
    assert lb.inputs["fallbackPool"] == resource_id(ev.named("traffic-server2"))
    assert "gateway-server1-run" in names(ev)  # still health-checked, at weight 0


@check("infra", "gateway-off-server1")
def _gateway_off(ev):
    assert names(ev, POOL) == {"traffic-server2"}
    assert not [r.name for r in ev.resources if r.name.startswith("gateway-server1")]
    assert pool_weights_by_name(ev) == {"server2": 1.0}
    run = ev.named("gateway-server2-run")
    assert f"API_UPSTREAMS=http://{S1}:30080" in run.inputs["create"]
    assert "triggers" not in run.inputs  # a changed trigger would replace it: the stop script after the new start


@check("infra", "server1-resized")
def _resized(ev):
    assert declared_spec(ev, "server1") == "4 vCPU / 8 GB / 200 GB, ubuntu-22.04"
    assert "declared 4" in ev.named("server1-spec-check").inputs["create"]


@check("infra", "db-switchover")
def _switchover(ev):
    switchover = ev.named("db-switchover")
    # on the pooler host (server1): PgBouncer's admin console and ini are local there
    assert switchover.type == REMOTE and connection_host(switchover) == S1
    assert "dataplane-install-server1" in dep_names(switchover)
    assert switchover.inputs["create"] == switchover_command(
        ini_path="/etc/pgbouncer/pgbouncer.ini", alias="bazbii", new_host=S3, new_port=5432,
        pause_timeout_seconds=DEFAULT_PAUSE_TIMEOUT_SECONDS, max_lag_bytes=1048576)  # the stack file keeps the default
    assert "update" not in switchover.inputs  # an event: a changed target replaces it (a new switchover)
    assert secret_prop(switchover, "stdin")
    old_dsn, new_dsn, admin_dsn = switchover.inputs["stdin"].splitlines()
    assert f"host={S2}" in old_dsn and f"host={S3}" in new_dsn and "host=127.0.0.1" in admin_dsn
    # the app's database host is the pooler (server1), which now points at server3
    assert ini_host(ev) == S3
    api_env = env(ev.named("app-api"))
    assert api_env["DB_HOST"] == S1 and api_env["DB_PORT"] == "6432"
    assert ev.outputs["dbHost"] == S1
    assert ev.outputs["dbPrimary"] == {"server": "server3", "address": S3}
    # repointing and the primary's settings come after the promotion, never before
    assert "db-switchover" in dep_names(ev.named("db-pooler"))
    assert "db-switchover" in dep_names(ev.named("db-primary"))
    assert connection_host(ev.named("db-primary")) == S3
    assert "db-replica-server3" not in names(ev) and "db-lag-gate-server3" not in names(ev)
    assert "db-retire-server2" not in names(ev)
    # the new primary's exporter is the standby's, unchanged; it comes after the promotion
    assert exporter_hosts(ev) == {"server2": S2, "server3": S3} == postgres_targets(ev)
    assert "db-switchover" in dep_names(ev.named("db-exporter-server3"))


@check("infra", "old-db-retired")
def _retired(ev):
    retire = ev.named("db-retire-server2")
    assert connection_host(retire) == S2
    assert "systemctl stop postgresql@15-main" in retire.inputs["create"]
    assert "application session" in retire.inputs["create"]
    assert dep_names(retire) >= {"db-switchover", "db-pooler"}
    assert ini_host(ev) == S3
    assert f"host replication replicator {S2}/32" not in ev.named("db-primary").inputs["create"]
    # the retired server's exporter goes with its database role (its delete stops it)
    assert exporter_hosts(ev) == {"server3": S3} == postgres_targets(ev)


# --------------------------------------------------------------------------- dns track
def record(ev, key: str) -> dict:
    r = ev.named(f"dns-{key}")
    assert r.type == DNS
    return {k: r.inputs[k] for k in ("name", "type", "content", "ttl", "proxied")}


@check("dns", "baseline")
def _dns_baseline(ev):
    assert record(ev, "direct") == {"name": "direct.bazbii.example", "type": "A", "content": S1, "ttl": 3600, "proxied": False}
    assert record(ev, "www") == {"name": "www.bazbii.example", "type": "CNAME", "content": "api.bazbii.example", "ttl": 1, "proxied": True}


@check("dns", "ttl-lowered")
def _dns_lowered(ev):
    assert record(ev, "direct")["ttl"] == 300 and record(ev, "direct")["content"] == S1


@check("dns", "switched")
def _dns_switched(ev):
    assert record(ev, "direct")["ttl"] == 300 and record(ev, "direct")["content"] == S2
    assert "gateway-server2-run" in dep_names(ev.named("dns-direct"))


@check("dns", "ttl-restored")
def _dns_restored(ev):
    assert record(ev, "direct")["ttl"] == 3600 and record(ev, "direct")["content"] == S2
    assert names(ev, DNS) == {"dns-direct", "dns-www"}


# --------------------------------------------------------------------------- release track
def labels(ev, name):
    return ev.named(name).inputs["metadata"]["labels"]


@check("release", "api-1.9")
def _api_19(ev):
    assert "app-api-canary" not in names(ev)
    assert replicas(ev, "app-api") == 10 and image(ev, "app-api").endswith(":1.9.0")
    assert image(ev, "app-worker").endswith(":1.9.0")
    assert "app-worker" in dep_names(ev.named("app-api"))
    # the application starts only once PgBouncer is configured
    for name in ("app-api", "app-worker", "app-db"):
        assert "db-pooler" in dep_names(ev.named(name)), name


@check("release", "worker-2.0")
def _worker_20(ev):
    assert image(ev, "app-worker").endswith("worker:2.0.0")
    assert image(ev, "app-api").endswith("api:1.9.0")
    # job handlers (workers) roll before the enqueuers (API)
    assert "app-worker" in dep_names(ev.named("app-api"))


def _canary(ev, stable: int, canary: int):
    assert (replicas(ev, "app-api"), replicas(ev, "app-api-canary")) == (stable, canary)
    assert image(ev, "app-api-canary").endswith("api:2.0.0") and image(ev, "app-api").endswith("api:1.9.0")
    assert labels(ev, "app-api-canary")["bazbii.io/track"] == "canary"
    assert labels(ev, "app-api-canary")["bazbii.io/serving"] == "true"
    assert labels(ev, "app-api")["bazbii.io/track"] == "stable"
    assert dep_names(ev.named("app-api-canary")) >= {"app-worker"}
    assert dep_names(ev.named("app-api")) >= {"app-worker", "app-api-canary"}
    assert ev.named("app-service").inputs["spec"]["selector"] == {"app.kubernetes.io/name": "api"}


@check("release", "canary-10")
def _canary_10(ev):
    _canary(ev, 9, 1)


@check("release", "canary-50")
def _canary_50(ev):
    _canary(ev, 5, 5)


@check("release", "canary-100")
def _canary_100(ev):
    _canary(ev, 0, 10)


@check("release", "api-2.0")
def _api_20(ev):
    assert "app-api-canary" not in names(ev)
    assert replicas(ev, "app-api") == 10 and image(ev, "app-api").endswith("api:2.0.0")
    assert ev.outputs["appVersions"] == ["2.0.0"]


# --------------------------------------------------------------------------- schema track
def _schema_common(ev, stage: str, sql_file: str):
    job = ev.named(f"schema-0002_add_category-{stage}")
    assert job.type == JOB
    meta = job.inputs["metadata"]
    assert meta["name"].startswith(f"migrate-0002-add-category-{stage}-")
    assert meta["labels"]["bazbii.io/migration-id"] == "0002_add_category"
    assert meta["labels"]["bazbii.io/migration-stage"] == stage
    spec = job.inputs["spec"]
    assert (spec["backoffLimit"], spec["parallelism"], spec["completions"]) == (0, 1, 1)
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "bazbii_db.migrations"]
    assert command[command.index("--migration") + 1] == "0002_add_category"
    assert command[command.index("--stage") + 1] == stage
    assert command[command.index("--dsn-env") + 1] == "DATABASE_URL"
    dsn = ev.named("schema-dsn")
    assert ("stringData", "DATABASE_URL") in dsn.secret_paths or ("stringData",) in dsn.secret_paths
    cm = ev.named("schema-sql")
    assert cm.type == CONFIG_MAP and cm.inputs["metadata"]["labels"] == meta["labels"]
    from offline_preview.harness import REPO_ROOT
    assert cm.inputs["data"][f"{stage}.sql"] == (REPO_ROOT / "migrations/0002_add_category" / sql_file).read_text()
    assert "0001_init--migration.toml" in cm.inputs["data"]
    # quiet workers -> run once -> resume -> then roll workers and the API
    quiet, resume = ev.named("schema-quiet-workers"), ev.named("schema-resume-workers")
    assert quiet.type == LOCAL and "scale deployment/worker --replicas=0" in quiet.inputs["create"]
    for runs_here in (quiet, resume):  # bash scripts: the provider's default /bin/sh is dash on Debian/Ubuntu runners
        assert runs_here.inputs["interpreter"] == ["/bin/bash", "-c"], runs_here.name
    assert "schema-quiet-workers" in dep_names(job)
    assert job.name in dep_names(resume)
    assert "--replicas=2" in resume.inputs["create"] and meta["name"] in resume.inputs["create"]
    for deployment in ("app-worker", "app-api"):
        assert "schema-resume-workers" in dep_names(ev.named(deployment)), deployment
    return command


@check("schema", "none")
def _schema_none(ev):
    assert not [r.name for r in ev.resources if r.name.startswith("schema")]
    assert not ev.by_type(JOB)


@check("schema", "0002-expand")
def _expand(ev):
    command = _schema_common(ev, "expand", "expand.sql")
    assert command.count("--app-version") >= 1


@check("schema", "0002-migrate")
def _migrate(ev):
    _schema_common(ev, "migrate", "migrate.sql")


@check("schema", "0002-contract")
def _contract(ev):
    command = _schema_common(ev, "contract", "contract.sql")
    versions = [command[i + 1] for i, part in enumerate(command) if part == "--app-version"]
    assert versions == ["2.0.0"]  # contract only once no 1.x pod is left


from tests.program import flag_steps  # noqa: E402,F401  (registers the flags track's checks)


# --------------------------------------------------------------------------- the tests
def all_steps(program_config):
    return [(t, s) for t, track in program_config.plan.tracks.items() for s in track.names()]


def pytest_generate_tests(metafunc):
    if "track_step" in metafunc.fixturenames:
        from bazbii_plan.stackfile import read_stack_file
        from offline_preview.harness import REPO_ROOT
        values, _, _ = read_stack_file(REPO_ROOT / "Pulumi.prod.yaml")
        steps = [(t, s["name"]) for t, track in values["plan"].items() for s in track["steps"]]
        metafunc.parametrize("track_step", steps, ids=[f"{t}:{s}" for t, s in steps])


def test_every_step_has_assertions(program):
    missing = [ts for ts in all_steps(program.config) if ts not in CHECKS]
    assert not missing, f"steps without program assertions: {missing}"


def test_step(program, track_step):
    track, step = track_step
    ev = program.evaluate(program.at(track, step))
    CHECKS[(track, step)](ev)


def test_prod_stack_as_shipped(program):
    """The stack file's own combination: traffic-10, canary-10, 0002-migrate, ttl-lowered."""
    ev = program.evaluate()
    assert pool_weights_by_name(ev) == {"server1": 0.9, "server2": 0.1}
    _canary(ev, 9, 1)
    command = _schema_common(ev, "migrate", "migrate.sql")
    # the backfill is throttled by the replica's lag while server3 replicates
    assert command[command.index("--replica-dsn-env") + 1] == "REPLICA_SERVER3_DSN"
    assert record(ev, "direct")["ttl"] == 300
    assert ev.outputs["poolWeights"] == {"server1": 0.9, "server2": 0.1}
    assert ev.outputs["rollback"] == {"maxErrorRate": 0.01, "p95TargetMs": 300, "p95Factor": 2.0}
