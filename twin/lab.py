"""The twin's network: a network namespace per server, joined by a bridge in an "edge" namespace.

Each server of the plan is a machine of its own here, as in production: its own network namespace with
its own ``127.0.0.1`` and its plan address (``127.0.1.1`` ...) on ``eth0``, so a PostgreSQL listening on
``*:5432``, a PgBouncer admin console on ``127.0.0.1:6432`` or a gateway on ``:8080`` exist once per
server and never collide. The servers' ``eth0`` ends sit on a bridge in the **edge** namespace, which
holds ``127.0.1.254``: what production reaches from outside the servers (the operator's ``pulumi``, the
Cloudflare API, the Kubernetes API server, Prometheus) runs there.

Addresses stay in 127.0.0.0/8, as every load and fault test of this project must. Linux treats those as
loopback-only, so each namespace has ``route_localnet`` on and keeps only ``127.0.0.1/32`` on ``lo``.
All of it lives in namespaces this lab creates, named after a random lab id: two labs at once (two test
runs, a rehearsal beside the tests) never share an address, a port or a name, and the host's own
network is never touched.

Processes get into the lab by ``nsenter --net=...`` (:meth:`Lab.edge_command`) or, for Python code of
the test process, on a thread that joined the edge namespace (:meth:`Lab.in_edge`).
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TypeVar

EDGE = "edge"
EDGE_ADDRESS = "127.0.1.254"
NETWORK_PREFIX = 24
DEFAULT_SERVERS = {"server1": "127.0.1.1", "server2": "127.0.1.2", "server3": "127.0.1.3"}
NETNS_DIR = Path("/run/netns")
# Labs still registered here belong to a live owner; a lab whose owner died is reaped by the next one.
REGISTRY = Path("/run/bazbii-twin")
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not be built or used; the message says which step and why."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")


def _sysctl(namespace: str, *settings: str) -> None:
    done = subprocess.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", *settings],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"sysctl in {namespace}: {done.stderr.strip()}")


def _loopback_only_localhost(namespace: str) -> None:
    """``lo`` up with 127.0.0.1/32 only: the rest of 127/8 is routed like any network, not answered locally."""
    _ip("-n", namespace, "link", "set", "lo", "up")
    _ip("-n", namespace, "addr", "del", "127.0.0.1/8", "dev", "lo")
    _ip("-n", namespace, "addr", "add", "127.0.0.1/32", "dev", "lo")
    _sysctl(namespace, "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.default.route_localnet=1",
            "net.ipv4.conf.lo.route_localnet=1")


def _kill_namespace_processes(namespace: str, grace: float = 5.0) -> None:
    def pids() -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        found = pids()
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids() and time.monotonic() < deadline:
            time.sleep(0.05)


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_labs() -> list[str]:
    """Delete the namespaces of labs whose owning process is gone (a run that was killed)."""
    reaped = []
    if not REGISTRY.is_dir():
        return reaped
    for entry in REGISTRY.glob("*.json"):
        try:
            info = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if _owner_alive(int(info.get("owner", 0))):
            continue
        for namespace in info.get("namespaces", []):
            if (NETNS_DIR / namespace).exists():
                _kill_namespace_processes(namespace, grace=1.0)
                subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        if info.get("workdir"):
            shutil.rmtree(info["workdir"], ignore_errors=True)
        entry.unlink(missing_ok=True)
        reaped.append(entry.stem)
    return reaped


@dataclass
class Lab:
    """The namespaces and links of one twin. ``with Lab(workdir) as lab:`` builds and removes them."""

    workdir: Path
    servers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SERVERS))
    lab_id: str = field(default_factory=lambda: "bz" + secrets.token_hex(3))
    started: bool = False

    # ------------------------------------------------------------------ names
    def namespace(self, member: str) -> str:
        """The network namespace of ``member`` (``edge`` or a server name)."""
        if member != EDGE and member not in self.servers:
            raise LabError(f"no server {member!r} in this lab (servers: {', '.join(self.servers)})")
        return f"{self.lab_id}-{member}"

    def namespace_path(self, member: str) -> Path:
        return NETNS_DIR / self.namespace(member)

    def address(self, member: str) -> str:
        self.namespace(member)  # names the lab's servers when ``member`` is not one of them
        return EDGE_ADDRESS if member == EDGE else self.servers[member]

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the twin needs root (network and mount namespaces)")
        for tool in ("ip", "nsenter", "unshare"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is missing (Debian: iproute2 / util-linux)")
        reap_stale_labs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        REGISTRY.mkdir(parents=True, exist_ok=True)
        members = [EDGE, *self.servers]
        (REGISTRY / f"{self.lab_id}.json").write_text(json.dumps({
            "owner": os.getpid(), "workdir": str(self.workdir), "namespaces": [self.namespace(m) for m in members]}))
        self.started = True
        try:
            for member in members:
                _ip("netns", "add", self.namespace(member))
                _loopback_only_localhost(self.namespace(member))
            edge = self.namespace(EDGE)
            _ip("-n", edge, "link", "add", "br0", "type", "bridge")
            _ip("-n", edge, "link", "set", "br0", "up")
            _sysctl(edge, "net.ipv4.conf.br0.route_localnet=1")
            _ip("-n", edge, "addr", "add", f"{EDGE_ADDRESS}/{NETWORK_PREFIX}", "dev", "br0")
            for index, (server, address) in enumerate(self.servers.items(), start=1):
                ns = self.namespace(server)
                port = f"p{index}"  # the bridge port's name, inside the edge namespace only
                _ip("link", "add", port, "netns", edge, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", edge, "link", "set", port, "master", "br0", "up")
                _sysctl(edge, f"net.ipv4.conf.{port}.route_localnet=1")
                _sysctl(ns, "net.ipv4.conf.eth0.route_localnet=1")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "addr", "add", f"{address}/{NETWORK_PREFIX}", "dev", "eth0")
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if not self.started:
            return
        for member in [*self.servers, EDGE]:
            namespace = self.namespace(member)
            if (NETNS_DIR / namespace).exists():
                _kill_namespace_processes(namespace)
                subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        (REGISTRY / f"{self.lab_id}.json").unlink(missing_ok=True)
        self.started = False

    # ------------------------------------------------------------------ getting in
    def command(self, member: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``member``'s network namespace (the host's files and mounts)."""
        return ["nsenter", f"--net={self.namespace_path(member)}", "--", *argv]

    def edge_command(self, argv: Sequence[str]) -> list[str]:
        return self.command(EDGE, argv)

    def run(self, member: str, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(member, argv), **kwargs)

    def popen(self, member: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(member, argv), **kwargs)

    def in_namespace(self, member: str, function: Callable[..., T], *args, **kwargs) -> T:
        """Call ``function`` on a thread inside ``member``'s network namespace; sockets it opens live there."""
        path = self.namespace_path(member)
        result: dict[str, object] = {}

        def body() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise LabError(f"setns into {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            try:
                result["value"] = function(*args, **kwargs)
            except BaseException as exc:  # handed back to the caller's thread
                result["error"] = exc

        thread = threading.Thread(target=body, name=f"lab-{member}")
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        return result.get("value")  # type: ignore[return-value]

    def in_edge(self, function: Callable[..., T], *args, **kwargs) -> T:
        return self.in_namespace(EDGE, function, *args, **kwargs)


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (bound and released: the caller's server binds it next). Call it inside the
    namespace whose address ``host`` is (:meth:`Lab.in_namespace`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(lab: Lab, member: str, host: str, port: int, timeout: float,
                  process: Optional[subprocess.Popen] = None, what: str = "") -> None:
    """Until ``host:port`` accepts a connection from inside ``member``'s namespace."""
    import socket

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while not lab.in_namespace(member, probe):
        if process is not None and process.poll() is not None:
            raise LabError(f"{what or 'the process'} exited ({process.returncode}) before {host}:{port} listened")
        if time.monotonic() > deadline:
            raise LabError(f"{what or host}:{port} did not listen within {timeout:g} s")
        time.sleep(0.1)
