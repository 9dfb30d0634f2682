"""One local reconciler per concern: each turns "previous desired state -> next desired state"
(both from ``bazbii_plan``) into actions on the rehearsal's real servers.

No reconciler knows step names. A step's actions are whatever its desired state changes, so a
forward step and its rollback (the same two states, swapped) run through the same code. Make
before break: every reconciler first ``prepare``s (start what the new state adds, move what it
changes) in the order servers, database, gateway, app, schema, traffic, dns; then ``finish``es
(stop what the new state no longer has) in the reverse order, so a gateway stops only after its
pool left the load balancer and the DNS record moved away from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg

from bazbii_db.migrations import MigrationRunner, RunnerConfig
from bazbii_db.migrations.backfill import BackfillConfig
from bazbii_db.replication import (GateConfig, SwitchoverConfig, check_consistency, drop_replication_slot,
                                   planned_switchover, require_lag_gate, verify_streaming)
from bazbii_db.migrations.versions import version_from_image
from bazbii_plan.models import StackState

from .faults import Faults
from .procs import wait_until
from .services import ADDRESSES, DB_ALIAS, Services


class StepRefused(RuntimeError):
    """A gate inside a reconciler refused the step before anything changed (nothing to undo)."""


class CheckFailed(RuntimeError):
    """A check after part of the step was applied failed (roll back to the previous state)."""


@dataclass
class Context:
    services: Services
    faults: Faults
    say: Callable[[str], None]
    soak_seconds: float
    gate_timeout: float
    notes: list[str] = field(default_factory=list)    # what the current step did, for the report
    timings: dict = field(default_factory=dict)        # extra figures (switchover window, lag gate)

    def act(self, text: str) -> None:
        self.notes.append(text)
        self.say(text)


def server_of_address(state: StackState, address: str) -> str | None:
    return next((name for name, s in state.servers.items() if s.address == address), None)


# --------------------------------------------------------------------------- servers
class ServersReconciler:
    concern = "servers"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        for name in new.servers.keys() - old.servers.keys():
            ctx.act(f"servers: {name} provisioned as {ADDRESSES[name]} (loopback stands for the VPS; "
                    f"no packages to install locally)")
        for name in new.servers.keys() & old.servers.keys():
            a, b = old.servers[name], new.servers[name]
            if (a.vcpu, a.memory_gb, a.disk_gb) != (b.vcpu, b.memory_gb, b.disk_gb):
                ctx.act(f"servers: {name} spec {a.vcpu} vCPU/{a.memory_gb} GB/{a.disk_gb} GB -> "
                        f"{b.vcpu}/{b.memory_gb}/{b.disk_gb}: no local meaning (a KonohaVPS console resize); "
                        "nothing to do")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        for name in old.servers.keys() - new.servers.keys():
            ctx.act(f"servers: {name} no longer managed")


# --------------------------------------------------------------------------- database
class DatabaseReconciler:
    concern = "database"

    def _gate(self, new: StackState, ctx: Context, primary: str, replica: str, slot: str) -> None:
        svc = ctx.services
        lag = new.database.lag_gate
        config = GateConfig(max_lag_bytes=lag.max_bytes, window_seconds=lag.window_seconds,
                            timeout_seconds=min(lag.timeout_seconds, ctx.gate_timeout))
        started = time.monotonic()
        try:
            report = require_lag_gate(svc.pg[primary].dsn(), slot, replica_dsn=svc.pg[replica].dsn(), config=config)
        except Exception as exc:
            ctx.act(f"database: lag gate FAILED for {replica}: {str(exc).splitlines()[0]}")
            raise StepRefused(f"lag gate failed for replica {replica}") from None
        ctx.timings["lag_gate_s"] = round(time.monotonic() - started, 2)
        ctx.act(f"database: lag gate passed ({report.reason})")

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        db_old, db_new = old.database, new.database
        for name, replica in db_new.replicas.items():
            if name in db_old.replicas:
                continue
            svc.start_replica(name, db_new.primary, replica.slot)
            status = verify_streaming(svc.pg[db_new.primary].dsn(), replica.slot, timeout=30)
            ctx.act(f"database: replica on {name} built with replica_setup_script (pg_basebackup -R -C -S "
                    f"{replica.slot}), streaming after {status.waited_seconds:.2f} s")
            if replica.lag_gate:
                self._gate(new, ctx, db_new.primary, name, replica.slot)
            if replica.consistency_check:
                # Under live writes a table can change during every attempt ("unverified"): retry more.
                report = check_consistency(svc.pg[db_new.primary].dsn(), svc.pg[name].dsn(), attempts=8)
                if not report.passed:
                    bad = [f"{t.table} {t.status}" for t in report.differing + report.unverified]
                    raise CheckFailed(f"consistency check failed after {report.attempts} attempts: {', '.join(bad)}")
                ctx.act(f"database: consistency check passed, {report.tables_compared} tables equal at "
                        f"{report.checked_lsn}")
        if db_new.primary != db_old.primary:
            self._switchover(old, new, ctx)

    def _switchover(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        source, target = old.database.primary, new.database.primary
        replica = old.database.replicas[target]
        ctx.faults.before_switchover(svc, source, target, ctx)
        self._gate(old, ctx, source, target, replica.slot)
        pooler = new.database.pooler
        config = SwitchoverConfig(database_alias=DB_ALIAS, pgbouncer_ini_path=str(svc.bouncer.ini),
                                  new_host=svc.pg[target].host, new_port=svc.pg[target].port, new_dbname="bazbii",
                                  pause_timeout=pooler.pause_timeout_seconds,
                                  max_lag_bytes=new.database.lag_gate.max_bytes)
        report = planned_switchover(svc.pg[source].dsn(), svc.pg[target].dsn(), svc.bouncer.admin_dsn(), config,
                                    stop_old_primary=lambda: svc.pg[source].stop("fast"))
        ctx.timings["switchover_window_ms"] = round(report.window_ms or 0, 1)
        ctx.timings["switchover_window"] = (report.window_started_at, report.window_ended_at)
        ctx.timings["switchover_steps_ms"] = {k: round(v, 1) for k, v in report.steps_ms.items()}
        ctx.act(f"database: switchover {source} -> {target} through PgBouncer completed, window "
                f"{report.window_ms:.1f} ms (" + ", ".join(f"{k} {v:.1f}" for k, v in report.steps_ms.items()) + ")")
        svc.stop_pg_exporter(source)

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        db_old, db_new = old.database, new.database
        for name, replica in db_old.replicas.items():
            if name in db_new.replicas or name == db_new.primary:
                continue
            svc.stop_pg_exporter(name)
            svc.pg[name].stop("fast")
            dropped = drop_replication_slot(svc.pg[db_new.primary].dsn(), replica.slot)
            del svc.pg[name]
            ctx.act(f"database: replica on {name} stopped, slot {replica.slot} "
                    f"{'dropped' if dropped else 'was absent'} on {db_new.primary}")
        for name in set(db_new.retired) - set(db_old.retired):
            svc.pg[name].retire()
            ctx.act(f"database: {name} retired with retire_primary_script (stopped, data directory kept)")
        for name in set(db_old.retired) - set(db_new.retired):
            ctx.act(f"database: {name} no longer marked retired (its data directory was kept; nothing started)")


# --------------------------------------------------------------------------- gateway
def gateway_servers(state: StackState) -> set[str]:
    return {name for name, s in state.servers.items() if "gateway" in s.roles}


class GatewayReconciler:
    concern = "gateway"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        for server in sorted(gateway_servers(new) - gateway_servers(old)):
            ctx.services.start_gateway(server)
            ctx.act(f"gateway: nginx started on {server} ({ADDRESSES[server]})")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        for server in sorted(gateway_servers(old) - gateway_servers(new)):
            address = ADDRESSES[server]
            for name, record in new.dns.records.items():
                if server_of_address(new, record.content) == server:
                    raise RuntimeError(f"gateway on {server} is still the target of DNS record {name}")
            # The resolver must have moved on, then clients may keep its last answer for one TTL.
            ttl = max((svc.scaled_ttl(r.ttl) for r in new.dns.records.values() if not r.proxied), default=0)
            wait_until(lambda: (svc.resolve("direct") or ("",))[0] != address, ttl + 10,
                       f"resolver to stop answering {address}")
            time.sleep(ttl)
            svc.stop_gateway(server)
            ctx.act(f"gateway: nginx on {server} stopped gracefully (SIGQUIT) after clients' DNS caches "
                    f"({ttl} s) ran out")


# --------------------------------------------------------------------------- app
@dataclass(frozen=True)
class Deployment:
    version: str
    faulty: bool


def desired_deployments(state: StackState, faults: Faults) -> dict[Deployment, int]:
    """version -> share of API pods, from the stable Deployment and the canary."""
    app = state.app
    stable = str(version_from_image(app.api.image))
    shares: dict[Deployment, int] = {}
    canary_weight = app.canary.weight if app.canary else 0
    if canary_weight < 100:
        shares[Deployment(stable, False)] = 100 - canary_weight
    if app.canary and canary_weight > 0:
        canary = Deployment(str(version_from_image(app.canary.image)), faults.canary_faulty())
        shares[canary] = shares.get(canary, 0) + canary_weight
    return shares


class AppReconciler:
    concern = "app"

    def __init__(self) -> None:
        self.instances: dict[Deployment, str] = {}
        self.counter = 0

    def _apply_shares(self, shares: dict[Deployment, int], ctx: Context) -> list[str]:
        svc = ctx.services
        for deployment in shares:
            if deployment not in self.instances:
                self.counter += 1
                name = f"api{self.counter}-{deployment.version}" + ("-faulty" if deployment.faulty else "")
                svc.start_api(name, deployment.version, ctx.faults.canary_error_rate if deployment.faulty else 0.0)
                self.instances[deployment] = name
                ctx.act(f"app: API {deployment.version} started as {name}"
                        + (" (with the injected canary fault)" if deployment.faulty else ""))
        self._shares = dict(shares)
        weights = {self.instances[d]: w for d, w in shares.items()}
        svc.write_upstream(weights)
        svc.reload_gateways()
        ctx.act("app: API pods share " + ", ".join(f"{d.version}{'(faulty)' if d.faulty else ''} {w} %"
                                                  for d, w in shares.items()))
        return [name for d, name in self.instances.items() if d not in shares]

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        shares = desired_deployments(new, ctx.faults)
        if set(shares) != set(self.instances) or shares != getattr(self, "_shares", None):
            self._retiring = self._apply_shares(shares, ctx)
        old_w, new_w = str(version_from_image(old.app.worker.image)), str(version_from_image(new.app.worker.image))
        if old_w != new_w and svc.workers:
            for _ in range(min(new.app.worker.replicas, 2)):
                svc.start_worker(new_w)
            stopped = svc.stop_workers(old_w)
            ctx.act(f"app: workers rolled {old_w} -> {new_w} ({stopped} stopped after their current batch)")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        for name in getattr(self, "_retiring", []):
            ctx.services.stop_api(name)
            self.instances = {d: n for d, n in self.instances.items() if n != name}
            ctx.act(f"app: {name} stopped after draining (SIGTERM, in-flight requests finish)")
        self._retiring = []

    def start(self, state: StackState, ctx: Context) -> None:
        """The MVP's app: stable API and the workers."""
        self._apply_shares(desired_deployments(state, ctx.faults), ctx)
        for _ in range(min(state.app.worker.replicas, 2)):
            ctx.services.start_worker(str(version_from_image(state.app.worker.image)))


# --------------------------------------------------------------------------- schema
STAGE_ORDER = (None, "expand", "migrate", "contract")


class SchemaReconciler:
    concern = "schema"

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        a, b = old.schema_.migration, new.schema_.migration
        if a == b:
            return
        svc = ctx.services
        if b is not None and (a is None or STAGE_ORDER.index(b.stage) > STAGE_ORDER.index(a.stage)):
            app = new.app
            versions = [app.api.image, app.worker.image] + ([app.canary.image] if app.canary else [])
            worker_versions = [v for _, v in svc.workers]
            stopped = svc.stop_workers()
            ctx.act(f"schema: workers quiet ({stopped} stopped) while {b.id}/{b.stage} runs")
            try:
                runner = MigrationRunner(svc.pg[new.database.primary].dsn(), config=RunnerConfig(
                    runner_lock_wait_s=10, backfill=BackfillConfig(progress_interval_s=3600)))
                result = runner.apply(b.id, b.stage, versions)
                ctx.act(f"schema: {b.id}/{b.stage} {result.status} by the migration runner "
                        f"({result.units_run} units, {result.duration_s:.2f} s"
                        + "".join(f", backfill {r.rows_changed} rows" for r in result.backfills) + ")")
            finally:
                for version in worker_versions:
                    svc.start_worker(version)
                ctx.act(f"schema: {len(worker_versions)} workers back")
        else:
            stage = a.stage if a else None
            if stage == "contract":
                raise RuntimeError("rolling back a contract needs its down step, which the runner does not have yet")
            ctx.act(f"schema: back from {a.id}/{a.stage}: nothing to undo (the plan keeps the column and values)")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass


# --------------------------------------------------------------------------- traffic
class TrafficReconciler:
    concern = "traffic"

    @staticmethod
    def pools(state: StackState) -> dict[str, dict]:
        return {name: {"server": p.server, "weight": p.weight} for name, p in state.traffic.pools.items()}

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        a, b = self.pools(old), self.pools(new)
        if a == b:
            return
        if a.keys() != b.keys():
            svc.reload_haproxy(b)
            ctx.act(f"traffic: load balancer pools {sorted(a)} -> {sorted(b)} (config reload, weights kept)")
            for name in b.keys() - a.keys():
                waited = svc.wait_pool(name, "UP", timeout=max(20.0, ctx.gate_timeout))
                ctx.act(f"traffic: pool {name} healthy in the monitor after {waited:.1f} s")
        svc.set_weights(b)
        ctx.act("traffic: weights through the runtime API: " + ", ".join(f"{n} {p['weight']}" for n, p in b.items()))

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass


# --------------------------------------------------------------------------- dns
class DnsReconciler:
    concern = "dns"

    def __init__(self) -> None:
        self.serial = 1
        self.ttl_since: dict[str, tuple[int, float, int | None]] = {}   # name -> (ttl, since, previous ttl)

    def local_records(self, state: StackState) -> dict[str, dict]:
        out = {}
        for name, record in state.dns.records.items():
            data = record.model_dump()
            if record.type == "A":
                server = server_of_address(state, record.content)
                data["content"] = ADDRESSES[server] if server else record.content
            out[name] = data
        return out

    def start(self, state: StackState, ctx: Context) -> None:
        ctx.services.start_dns(self.local_records(state))
        now = time.monotonic()
        self.ttl_since = {n: (r.ttl, now, None) for n, r in state.dns.records.items()}

    def prepare(self, old: StackState, new: StackState, ctx: Context) -> None:
        svc = ctx.services
        a, b = self.local_records(old), self.local_records(new)
        if a == b:
            return
        for name, record in b.items():
            before = a.get(name)
            if before and before["content"] != record["content"]:
                ttl, since, previous = self.ttl_since[name]
                # The switch waits until resolvers can no longer hold an answer with the old, longer TTL.
                wait = svc.scaled_ttl(previous or ttl) - (time.monotonic() - since)
                if wait > 0:
                    ctx.act(f"dns: waiting {wait:.1f} s for the old TTL ({previous or ttl} s, time-scaled "
                            f"1/{svc.ttl_scale:g}) to run out before switching {name}")
                    time.sleep(wait)
        self.serial += 1
        svc.reload_zone(b, self.serial)
        now = time.monotonic()
        for name, record in new.dns.records.items():
            if name not in self.ttl_since or self.ttl_since[name][0] != record.ttl:
                previous = self.ttl_since.get(name, (None,))[0]
                self.ttl_since[name] = (record.ttl, now, previous)
        for name, record in b.items():
            if a.get(name) != record and not record.get("proxied"):
                ctx.act(f"dns: {name} -> {record['content']} TTL {record['ttl']} s "
                        f"(served as {svc.scaled_ttl(record['ttl'])} s, time-scaled 1/{svc.ttl_scale:g})")
        if "direct" in b:  # nsd loads the zone asynchronously (a few ms after the reload command)
            expected = (b["direct"]["content"], svc.scaled_ttl(b["direct"]["ttl"]))
            wait_until(lambda: svc.resolve("direct", authoritative=True) == expected, 10,
                       f"nsd serving direct {expected}")

    def finish(self, old: StackState, new: StackState, ctx: Context) -> None:
        pass


RECONCILERS = ("servers", "database", "gateway", "app", "schema", "traffic", "dns")


def build_reconcilers() -> dict:
    return {"servers": ServersReconciler(), "database": DatabaseReconciler(), "gateway": GatewayReconciler(),
            "app": AppReconciler(), "schema": SchemaReconciler(), "traffic": TrafficReconciler(),
            "dns": DnsReconciler()}


def reconcile(reconcilers: dict, old: StackState, new: StackState, ctx: Context) -> None:
    for name in RECONCILERS:
        reconcilers[name].prepare(old, new, ctx)
    for name in reversed(RECONCILERS):
        reconcilers[name].finish(old, new, ctx)
