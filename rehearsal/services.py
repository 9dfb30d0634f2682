"""The rehearsal's real servers: config files, start, reload and stop.

Addresses: the plan's servers are loopback addresses (server1 = 127.0.1.1, server2 = 127.0.1.2,
server3 = 127.0.1.3; never any other). What stands outside the servers in production (the
Cloudflare load balancer and DNS, the client's resolver, Prometheus) runs on server1's address
on ports of its own. Ports are free ports chosen at start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from bazbii_plan.facts import PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS
from bazbii_plan.flags import ENV_VAR as FLAGS_ENV_VAR
from testsupport.localcluster import _chown_to_service_user, _as_service_user, pgbouncer_binary

from . import configs
from .postgres import PgServer
from .procs import Managed, ProcessRegistry, child_pids, wait_until
from twin.lab import free_port

ADDRESSES = {"server1": "127.0.1.1", "server2": "127.0.1.2", "server3": "127.0.1.3"}
EDGE = ADDRESSES["server1"]  # load balancer, DNS, resolver, Prometheus
DB_ALIAS = "bazbii"
APP_USER = "bazbii"
ADMIN_USER = "pgbouncer_admin"
PY = sys.executable


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class PgBouncer:
    dir: Path
    port: int
    managed: Managed | None = None

    @property
    def ini(self) -> Path:
        return self.dir / "pgbouncer.ini"

    def admin_dsn(self) -> str:
        return f"host={EDGE} port={self.port} dbname=pgbouncer user={ADMIN_USER} connect_timeout=5"

    def app_dsn(self) -> str:
        return f"host={EDGE} port={self.port} dbname={DB_ALIAS} user={APP_USER} connect_timeout=5"

    def write(self, primary: PgServer) -> None:
        self.dir.mkdir(exist_ok=True)
        (self.dir / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in (APP_USER, ADMIN_USER, "postgres")))
        settings = {
            "listen_addr": EDGE, "listen_port": self.port, "auth_type": "trust",
            "auth_file": self.dir / "userlist.txt", "admin_users": ADMIN_USER, "stats_users": ADMIN_USER,
            "pool_mode": "transaction", "max_client_conn": 500, "default_pool_size": 20,
            "server_login_retry": f"{PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS:g}",  # as production's pooler
            "unix_socket_dir": "", "logfile": self.dir / "pgbouncer.log", "pidfile": self.dir / "pgbouncer.pid",
            "ignore_startup_parameters": "extra_float_digits,options", "query_wait_timeout": 30,
        }
        text = (f"[databases]\n{DB_ALIAS} = host={primary.host} port={primary.port} dbname=bazbii\n\n[pgbouncer]\n"
                + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.ini.write_text(text)
        _chown_to_service_user(self.dir)


@dataclass
class Services:
    """What is running, where, and how to reach it."""

    run_dir: Path
    registry: ProcessRegistry
    ttl_scale: float
    ports: dict[str, int] = field(default_factory=dict)
    pg: dict[str, PgServer] = field(default_factory=dict)            # server name -> cluster
    pg_exporters: dict[str, Managed] = field(default_factory=dict)
    bouncer: PgBouncer | None = None
    nginx: dict[str, Managed] = field(default_factory=dict)           # server name -> gateway
    nginx_faults: dict[str, float] = field(default_factory=dict)      # server -> injected 5xx fraction
    apis: dict[str, tuple[Managed, str, int]] = field(default_factory=dict)  # instance -> (proc, version, port)
    workers: list[tuple[Managed, str]] = field(default_factory=list)
    worker_flags: str = "{}"   # the flags document the worker Deployment reads (its ConfigMap), BAZBII_FLAGS
    haproxy: Managed | None = None
    nsd: Managed | None = None

    def __post_init__(self) -> None:
        for name in ("lb", "lb_metrics", "nginx", "prometheus", "pgb_exporter", "nsd", "unbound"):
            self.ports.setdefault(name, free_port(EDGE))
        self.ports.setdefault("pg", free_port(ADDRESSES["server2"]))
        self.ports.setdefault("pgbouncer", free_port(EDGE))
        for d in ("hap", "dns", "prom", "logs"):
            (self.run_dir / d).mkdir(exist_ok=True)

    # --------------------------------------------------------------- PostgreSQL
    def start_primary(self, server: str) -> PgServer:
        pg = PgServer.init(server, ADDRESSES[server], self.ports["pg"], self.run_dir)
        # Registered before the start: an interrupt while pg_ctl waits must still stop the server.
        self.registry.add_cleanup(f"postgres@{server}", lambda: pg.stop("immediate"))
        pg.start()
        self.pg[server] = pg
        self.start_pg_exporter(server)
        return pg

    def start_replica(self, server: str, primary: str, slot: str) -> PgServer:
        pg = PgServer.basebackup(server, ADDRESSES[server], self.ports["pg"], self.run_dir, self.pg[primary], slot)
        self.registry.add_cleanup(f"postgres@{server}", lambda: pg.stop("immediate"))
        pg.start()
        self.pg[server] = pg
        self.start_pg_exporter(server)
        return pg

    def start_pg_exporter(self, server: str) -> None:
        pg = self.pg[server]
        port = free_port(pg.host)
        env = dict(os.environ, DATA_SOURCE_NAME=f"postgresql://postgres@{pg.host}:{pg.port}/bazbii?sslmode=disable")
        self.pg_exporters[server] = self.registry.start(
            f"postgres_exporter-{server}", ["prometheus-postgres-exporter", f"--web.listen-address={pg.host}:{port}",
                                            "--disable-settings-metrics"], env=env)
        self.ports[f"pg_exporter_{server}"] = port
        self.write_prom_targets()

    def stop_pg_exporter(self, server: str) -> None:
        managed = self.pg_exporters.pop(server, None)
        if managed:
            self.registry.stop(managed)
        self.write_prom_targets()

    # --------------------------------------------------------------- PgBouncer
    def start_pgbouncer(self, primary: str) -> PgBouncer:
        self.bouncer = PgBouncer(self.run_dir / "pgbouncer", self.ports["pgbouncer"])
        self.bouncer.write(self.pg[primary])
        self.bouncer.managed = self.registry.start("pgbouncer", _as_service_user([str(pgbouncer_binary()),
                                                                                  str(self.bouncer.ini)]))
        wait_until(lambda: psycopg.connect(self.bouncer.admin_dsn(), autocommit=True).close() is None, 15,
                   "pgbouncer")
        env = dict(os.environ, BAZBII_PGBOUNCER_ADMIN_DSN=self.bouncer.admin_dsn())
        self.registry.start("pgbouncer_exporter", [PY, "-m", "rehearsal.pgbouncer_exporter", EDGE,
                                                   str(self.ports["pgb_exporter"])], env=env)
        return self.bouncer

    # --------------------------------------------------------------- API and workers
    def start_api(self, instance: str, version: str, fault_rate: float = 0.0, flags: str = "{}") -> int:
        port = free_port(ADDRESSES["server1"])
        env = dict(os.environ, BAZBII_DSN=self.bouncer.app_dsn(), BAZBII_API_VERSION=version,
                   BAZBII_API_INSTANCE=instance, BAZBII_FAULT_ERROR_RATE=str(fault_rate), **{FLAGS_ENV_VAR: flags})
        managed = self.registry.start(
            f"api-{instance}", [PY, "-m", "uvicorn", "rehearsal.api_app:app", "--host", ADDRESSES["server1"],
                                "--port", str(port), "--no-access-log", "--loop", "uvloop",
                                "--timeout-graceful-shutdown", "10"], env=env)
        wait_until(lambda: http_ok(f"http://{ADDRESSES['server1']}:{port}/healthz"), 30, f"API {instance}")
        self.apis[instance] = (managed, version, port)
        self.write_prom_targets()
        return port

    def stop_api(self, instance: str) -> None:
        managed, _, _ = self.apis.pop(instance)
        self.registry.stop(managed)
        self.write_prom_targets()

    def start_worker(self, version: str) -> None:
        env = dict(os.environ, BAZBII_DSN=self.bouncer.app_dsn(), BAZBII_WORKER_VERSION=version,
                   **{FLAGS_ENV_VAR: self.worker_flags})
        self.workers.append((self.registry.start(f"worker-{version}-{len(self.workers)}",
                                                 [PY, "-m", "rehearsal.worker"], env=env), version))

    def stop_worker(self, managed: Managed) -> None:
        self.registry.stop(managed)
        self.workers = [(m, v) for m, v in self.workers if m is not managed]

    def stop_workers(self, version: str | None = None) -> int:
        stopping = [(m, v) for m, v in self.workers if version is None or v == version]
        for managed, v in stopping:
            self.registry.stop(managed)
            self.workers.remove((managed, v))
        return len(stopping)

    # --------------------------------------------------------------- gateways (nginx)
    def write_upstream(self, weights: dict[str, int]) -> None:
        """The API 'Service': instance -> weight (pods of each Deployment)."""
        lines = [f"server {ADDRESSES['server1']}:{self.apis[i][2]} weight={w} max_fails=1 fail_timeout=2s;\n"
                 for i, w in weights.items() if w > 0]
        (self.run_dir / "api_upstream.conf").write_text("".join(lines))

    def _nginx_conf(self, server: str) -> Path:
        d = self.run_dir / f"nginx-{server}"
        d.mkdir(exist_ok=True)
        path = d / "nginx.conf"
        path.write_text(configs.nginx_conf(d, self.run_dir / "api_upstream.conf", server, ADDRESSES[server],
                                           self.ports["nginx"], self.nginx_faults.get(server, 0.0)))
        return path

    def _nginx_cmd(self, server: str, *extra: str) -> list[str]:
        d = self.run_dir / f"nginx-{server}"
        return ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "stderr", *extra]

    def start_gateway(self, server: str) -> None:
        self._nginx_conf(server)
        self.nginx[server] = self.registry.start(f"nginx-{server}", self._nginx_cmd(server, "-g", "daemon off;"),
                                                 stop_signal=signal.SIGQUIT)
        wait_until(lambda: http_ok(f"http://{ADDRESSES[server]}:{self.ports['nginx']}/healthz"), 15,
                   f"gateway on {server}")

    def reload_gateway(self, server: str) -> None:
        """Rewrite the gateway's config and return once only workers with it serve: ``nginx -s reload``
        returns at once, and the old workers answer with the old config meanwhile (a fault cleared
        this way still failed a request of the next step)."""
        self._nginx_conf(server)
        master = self.nginx[server].popen.pid
        old = child_pids(master)
        subprocess.run(self._nginx_cmd(server, "-s", "reload"), check=True, capture_output=True, timeout=15)
        wait_until(lambda: (workers := child_pids(master)) and not workers & old, 15,
                   f"gateway on {server} reloaded (its old workers gone)")

    def reload_gateways(self) -> None:
        for server in list(self.nginx):
            self.reload_gateway(server)

    def stop_gateway(self, server: str) -> None:
        managed = self.nginx.pop(server)
        self.registry.stop(managed)  # SIGQUIT: graceful, in-flight requests finish

    # --------------------------------------------------------------- HAProxy (the Cloudflare load balancer)
    def haproxy_conf(self, pools: dict[str, dict]) -> None:
        hap = self.run_dir / "hap"
        (hap / "haproxy.cfg").write_text(configs.haproxy_cfg(
            hap, {n: ADDRESSES[p["server"]] for n, p in pools.items()}, f"{EDGE}:{self.ports['lb']}",
            f"{EDGE}:{self.ports['lb_metrics']}", self.ports["nginx"]))
        self.write_split_map(pools)

    def write_split_map(self, pools: dict[str, dict]) -> None:
        cum = configs.cumulative(pools)
        (self.run_dir / "hap" / "split.map").write_text("".join(f"{k} {v}\n" for k, v in cum.items()))

    def start_haproxy(self, pools: dict[str, dict]) -> None:
        self.haproxy_conf(pools)
        hap = self.run_dir / "hap"
        self.haproxy = self.registry.start("haproxy", ["haproxy", "-W", "-S", f"{hap}/master.sock", "-f",
                                                       f"{hap}/haproxy.cfg"])
        wait_until(lambda: (hap / "admin.sock").exists(), 15, "haproxy")

    def haproxy_cmd(self, command: str, sock: str = "admin.sock") -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.run_dir / "hap" / sock))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode()

    def set_weights(self, pools: dict[str, dict]) -> None:
        """Weights through the runtime API (applies from the next request); the file keeps them for reloads."""
        self.write_split_map(pools)
        for name, value in configs.cumulative(pools).items():
            self.haproxy_cmd(f"set map {self.run_dir}/hap/split.map {name} {value}")

    def reload_haproxy(self, pools: dict[str, dict]) -> None:
        """Pools added or removed: new config, state saved first (a reload reverts runtime changes)."""
        hap = self.run_dir / "hap"
        (hap / "server.state").write_text(self.haproxy_cmd("show servers state"))
        self.haproxy_conf(pools)
        self.haproxy_cmd("reload", sock="master.sock")

    def pool_status(self) -> dict[str, str]:
        out = {}
        for line in self.haproxy_cmd("show stat").splitlines():
            parts = line.split(",")
            if len(parts) > 17 and parts[0].startswith("pool_") and parts[1] == "gw":
                out[parts[0][5:]] = parts[17]
        return out

    def wait_pool(self, name: str, status: str, timeout: float = 20) -> float:
        return wait_until(lambda: self.pool_status().get(name, "").startswith(status), timeout,
                          f"pool {name} {status}", interval=0.1)

    # --------------------------------------------------------------- DNS (nsd + unbound)
    def scaled_ttl(self, ttl: int) -> int:
        return max(1, round(ttl / self.ttl_scale))

    def write_zone(self, records: dict[str, dict], serial: int) -> None:
        (self.run_dir / "dns" / "bazbii.example.zone").write_text(
            configs.zone_text(records, serial, EDGE, self.scaled_ttl))

    def start_dns(self, records: dict[str, dict]) -> None:
        dns = self.run_dir / "dns"
        self.write_zone(records, 1)
        (dns / "nsd.conf").write_text(configs.nsd_conf(dns, f"{EDGE}@{self.ports['nsd']}"))
        (dns / "unbound.conf").write_text(configs.unbound_conf(dns, f"{EDGE}@{self.ports['unbound']}",
                                                               f"{EDGE}@{self.ports['nsd']}"))
        self.nsd = self.registry.start("nsd", ["nsd", "-d", "-c", str(dns / "nsd.conf")])
        self.registry.start("unbound", ["unbound", "-d", "-c", str(dns / "unbound.conf")])
        wait_until(lambda: self.resolve("direct") is not None, 15, "DNS resolver")

    def reload_zone(self, records: dict[str, dict], serial: int) -> None:
        self.write_zone(records, serial)
        subprocess.run(["nsd-control", "-c", str(self.run_dir / "dns" / "nsd.conf"), "reload", "bazbii.example"],
                       check=True, capture_output=True, timeout=15)

    def resolve(self, name: str, authoritative: bool = False) -> tuple[str, int] | None:
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [EDGE]
        r.port = self.ports["nsd" if authoritative else "unbound"]
        r.lifetime = 2
        try:
            answer = r.resolve(f"{name}.bazbii.example", "A")
        except Exception:
            return None
        return answer[0].address, answer.rrset.ttl

    # --------------------------------------------------------------- Prometheus
    def write_prom_targets(self) -> None:
        prom = self.run_dir / "prom"
        api = [{"targets": [f"{ADDRESSES['server1']}:{port}"], "labels": {"instance_name": inst, "app_version": ver}}
               for inst, (_, ver, port) in self.apis.items()]
        pg = [{"targets": [f"{self.pg[s].host}:{self.ports[f'pg_exporter_{s}']}"], "labels": {"server": s}}
              for s in self.pg_exporters]
        for name, data in (("api", api), ("postgres", pg)):
            tmp = prom / f"{name}.json.tmp"
            tmp.write_text(json.dumps(data))
            os.replace(tmp, prom / f"{name}.json")

    def start_prometheus(self) -> None:
        prom = self.run_dir / "prom"
        self.write_prom_targets()
        (prom / "prometheus.yml").write_text(configs.prometheus_yml(
            prom, f"{EDGE}:{self.ports['lb_metrics']}", f"{EDGE}:{self.ports['pgb_exporter']}"))
        self.registry.start("prometheus", ["prometheus", f"--config.file={prom}/prometheus.yml",
                                           f"--storage.tsdb.path={prom}/data",
                                           f"--web.listen-address={EDGE}:{self.ports['prometheus']}"])
        wait_until(lambda: http_ok(self.prometheus_url() + "/-/ready"), 30, "prometheus")

    def prometheus_url(self) -> str:
        return f"http://{EDGE}:{self.ports['prometheus']}"
