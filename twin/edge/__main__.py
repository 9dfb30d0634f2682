"""Run the edge: HAProxy, nsd and unbound, kept in step with the Cloudflare emulator's state.

    python -m twin.edge --cloudflare URL --token-file FILE --zone ZONE_ID --dir DIR --address ADDR
                        [--time-scale N] [--interval SECONDS]

Started in the twin's edge namespace (``twin.environment.Twin.start_edge``). It prints one JSON line once
everything serves (``{"http": "ADDR:PORT", "stats": ..., "dns": ..., "resolver": ...}``), then polls the
emulator's state every ``--interval`` seconds and applies what changed: weights and origins through
HAProxy's runtime API (no reload, no connection lost), pools added or removed by a reload of HAProxy's
workers (connections in flight finish on the old ones), records by a new zone serial and
``nsd-control reload``. Each change applied is logged to stderr with the time. SIGTERM stops everything.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from twin.edge.render import Edge, edge_of, haproxy_config, weight_map, zone_text
from twin.edge.servers import nsd_conf, unbound_conf
from twin.lab import free_port

STATE_PATH = "/_twin/state"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} edge: {message}", file=sys.stderr, flush=True)


class EdgeServers:
    def __init__(self, directory: Path, address: str, zone_id: str, time_scale: float):
        self.dir, self.address, self.zone_id, self.time_scale = directory, address, zone_id, time_scale
        self.ports = {name: free_port(address) for name in ("http", "stats", "dns", "resolver")}
        self.processes: dict[str, subprocess.Popen] = {}
        self.edge: Optional[Edge] = None
        self.servers: dict[str, tuple[Optional[str], int, bool]] = {}  # pool id -> (host, port, serving)
        self.serial = 0
        (directory / "haproxy").mkdir(parents=True, exist_ok=True)
        (directory / "dns").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ HAProxy
    @property
    def hap(self) -> Path:
        return self.dir / "haproxy"

    def _write_haproxy(self, edge: Edge) -> None:
        (self.hap / "weights.map").write_text("".join(f"{k} {v}\n" for k, v in weight_map(edge).items()))
        (self.hap / "haproxy.cfg").write_text(haproxy_config(
            edge, self.hap, f"{self.address}:{self.ports['http']}", f"{self.address}:{self.ports['stats']}"))
        self.servers = {p.id: (p.origin.host, p.origin.port, bool(p.enabled and p.origin.host))
                        for p in edge.pools.values()}

    def admin(self, command: str, sock: str = "admin.sock") -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(str(self.hap / sock))
            connection.sendall(command.encode() + b"\n")
            chunks = []
            while data := connection.recv(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    def start(self, edge: Edge) -> None:
        self._write_haproxy(edge)
        self.processes["haproxy"] = subprocess.Popen(
            ["haproxy", "-W", "-S", f"{self.hap}/master.sock", "-f", f"{self.hap}/haproxy.cfg"],
            stdout=sys.stderr, stderr=sys.stderr)
        self._write_zone(edge)
        dns = self.dir / "dns"
        zone = edge.zone
        (dns / "nsd.conf").write_text(nsd_conf(dns, f"{self.address}@{self.ports['dns']}", zone))
        (dns / "unbound.conf").write_text(unbound_conf(dns, f"{self.address}@{self.ports['resolver']}",
                                                       f"{self.address}@{self.ports['dns']}", zone))
        self.processes["nsd"] = subprocess.Popen(["nsd", "-d", "-c", str(dns / "nsd.conf")],
                                                 stdout=sys.stderr, stderr=sys.stderr)
        self.processes["unbound"] = subprocess.Popen(["unbound", "-d", "-c", str(dns / "unbound.conf")],
                                                     stdout=sys.stderr, stderr=sys.stderr)
        deadline = time.monotonic() + 20
        while not (self.hap / "admin.sock").exists() or not self._answers(self.ports["dns"]):
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"edge: {name} exited with {process.returncode} while starting")
            if time.monotonic() > deadline:
                raise SystemExit("edge: HAProxy or nsd did not start within 20 s")
            time.sleep(0.1)
        self.edge = edge

    def _answers(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((self.address, port)) == 0

    def apply(self, edge: Edge) -> None:
        if self.edge is None:
            raise RuntimeError("apply() before start()")
        if edge.structure() != self.edge.structure():
            self._write_haproxy(edge)
            self.admin("reload", sock="master.sock")
            log("load balancers or pools changed: HAProxy reloaded")
        else:
            old = weight_map(self.edge)
            for key, bound in weight_map(edge).items():
                if old.get(key) != bound:
                    self.admin(f"set map {self.hap}/weights.map {key} {bound}")
                    log(f"weight bound {key} -> {bound}")
            for pool in edge.pools.values():
                wanted = (pool.origin.host, pool.origin.port, bool(pool.enabled and pool.origin.host))
                if self.servers.get(pool.id) == wanted:
                    continue
                host, port, serving = wanted
                if host:
                    self.admin(f"set server {pool.backend}/origin addr {host} port {port}")
                self.admin(f"set server {pool.backend}/origin state {'ready' if serving else 'maint'}")
                self.servers[pool.id] = wanted
                log(f"pool {pool.name}: origin {host or '-'}:{port} {'serving' if serving else 'down: ' + pool.origin.why_down}")
        if edge.records != self.edge.records:
            self._write_zone(edge)
            done = subprocess.run(["nsd-control", "-c", str(self.dir / "dns" / "nsd.conf"), "reload", edge.zone],
                                  capture_output=True, text=True, timeout=15)
            if done.returncode != 0:
                log(f"nsd-control reload failed: {done.stderr.strip() or done.stdout.strip()}")
            else:
                log(f"zone {edge.zone} serial {self.serial}: " + ", ".join(
                    f"{r.name} {r.type} {r.content} ttl {r.ttl}" for r in edge.records))
        self.edge = edge

    def _write_zone(self, edge: Edge) -> None:
        self.serial += 1
        path = self.dir / "dns" / f"{edge.zone}.zone"
        path.write_text(zone_text(edge, self.serial, self.address, self.time_scale))

    def stop(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                process.send_signal(signal.SIGUSR1 if name == "haproxy" else signal.SIGTERM)  # USR1: soft-stop
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def fetch_state(url: str, token: str) -> dict:
    request = urllib.request.Request(url.rstrip("/") + STATE_PATH, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cloudflare", required=True, help="the emulator's base URL (without /client/v4)")
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--zone", required=True, help="the zone id whose load balancers and records to serve")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--address", required=True, help="the edge's address (every server listens there)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="monitor intervals and TTLs divided by it")
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args(argv)
    if args.time_scale < 1:
        parser.error("--time-scale must be >= 1")
    token = args.token_file.read_text().strip()
    servers = EdgeServers(args.dir, args.address, args.zone, args.time_scale)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    try:
        servers.start(edge_of(fetch_state(args.cloudflare, token), args.zone, time_scale=args.time_scale))
        print(json.dumps({name: f"{args.address}:{port}" for name, port in servers.ports.items()}), flush=True)
        while not stopping:
            time.sleep(args.interval)
            try:
                state = fetch_state(args.cloudflare, token)
            except (urllib.error.URLError, OSError) as exc:
                log(f"emulator unreachable ({exc}); serving what was applied last")
                continue
            servers.apply(edge_of(state, args.zone, time_scale=args.time_scale))
            for name, process in servers.processes.items():
                if process.poll() is not None:
                    raise SystemExit(f"edge: {name} exited with {process.returncode}")
    finally:
        servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
