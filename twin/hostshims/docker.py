"""``docker`` on a twin server, which has no container runtime: the commands the gateway script runs.

A container is a process of the server, started from what its image stands for on the twin
(:data:`IMAGES`): the gateway image is HAProxy, configured from the container's environment the way the
gateway image reads it (``PORT``, ``API_UPSTREAMS``, ``METRICS_PORT``), answering its health path,
forwarding the rest to the API upstreams and exporting its metrics. A published port (``-p``) listens on the server's own addresses (127.0.0.1 and its
plan address) rather than on every address as Docker's does: the twin's Kubernetes pods are processes in
the same network namespace, on addresses of their own, and a wildcard would take their port too. Supported: ``--version``, ``pull``, ``run -d --name --restart --label -p -e IMAGE``,
``inspect -f`` with ``{{index .Config.Labels "KEY"}}`` or ``{{.State.Running}}``, ``rm -f``; and the twin's
``twin-fault NAME SHARE`` (not Docker's: the rehearsal's fault injection). State lives in
``/run/bazbii-twin/containers/<name>`` (a server's tmpfs: gone with the server, as after a reboot).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from twin.hostshims.common import STATE, edge, fail, read_pid, running, start_daemon, stop_pid

PROGRAM = "docker"
CONTAINERS = STATE / "containers"
HEALTH_PATH = "/healthz"
FAULT_MAP = "fault.map"  # share of API requests, in thousandths, the gateway fails (docker twin-fault)


def gateway_config(directory: Path, env: dict[str, str], ports: list[tuple[int, int]]) -> list[str]:
    """HAProxy as the bazbii gateway (as its image is): the health path answered by the gateway itself, every
    other request to the API upstreams, and HAProxy's Prometheus exporter on ``METRICS_PORT`` when the
    container publishes it. A share of API requests can be failed on purpose (``docker twin-fault``)."""
    port = int(env.get("PORT", "8080"))
    upstreams = [urlsplit(u) for u in env.get("API_UPSTREAMS", "").split(",") if u.strip()]
    if not upstreams:
        fail(PROGRAM, "the gateway image needs API_UPSTREAMS (http://host:port,...)", 125)
    addresses = ["127.0.0.1", *([edge()["serverAddress"]] if edge().get("serverAddress") else [])]

    def binds(container_port: int) -> list[str]:
        published = [host for host, inside in ports if inside == container_port]
        return [f"    bind {address}:{p}" for p in published for address in addresses]

    metrics = int(env["METRICS_PORT"]) if env.get("METRICS_PORT") else None
    (directory / FAULT_MAP).write_text("rate 0\n")
    servers = [f"    server api{i} {u.hostname}:{u.port or 80} check inter 1s fall 2 rise 1"
               for i, u in enumerate(upstreams)]
    lines = ["global", f"    stats socket {directory}/admin.sock mode 600 level admin", "defaults", "    mode http",
             "    timeout connect 2s", "    timeout client 30s", "    timeout server 30s", "    retries 2",
             "    option redispatch", "frontend gateway", *(binds(port) or [f"    bind {a}:{port}" for a in addresses]),
             f"    http-request return status 200 content-type text/plain string ok if {{ path {HEALTH_PATH} }}",
             f"    http-request set-var(txn.fault) str(rate),map_str_int({directory}/{FAULT_MAP},0)",
             # A failed request is answered by a backend of its own, so it counts in the backend responses the
             # gates query (haproxy_backend_http_responses_total), as an upstream's 500 would.
             "    use_backend fault if { rand(1000),sub(txn.fault) -m int lt 0 }",
             "    default_backend api"]
    if metrics is not None and binds(metrics):
        lines += ["frontend metrics", *binds(metrics),
                  "    http-request use-service prometheus-exporter if { path /metrics }"]
    lines += ["backend fault", "    http-request return status 500 content-type text/plain string \"injected fault\"",
              "backend api", "    balance roundrobin", "    retry-on conn-failure empty-response 503",
              "    http-reuse safe", *servers]
    (directory / "haproxy.cfg").write_text("\n".join(lines) + "\n")
    return ["/usr/sbin/haproxy", "-W", "-db", "-f", str(directory / "haproxy.cfg")]


# Image repository (the name without registry host and tag) -> what the container runs on the twin.
IMAGES: dict[str, Callable[[Path, dict[str, str], list[tuple[int, int]]], list[str]]] = {
    "bazbii/gateway": gateway_config,
}


def repository(image: str) -> str:
    """``registry.example.com/bazbii/gateway:1.4.2`` -> ``bazbii/gateway``."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]):
        parts = parts[1:]
    return "/".join(parts)


def known_image(image: str) -> Callable:
    runner = IMAGES.get(repository(image))
    if runner is None:
        fail(PROGRAM, f"Error response from daemon: manifest for {image} not known to the twin "
                      f"(it runs {', '.join(sorted(IMAGES))})", 1)
    return runner


def container_dir(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        fail(PROGRAM, f"invalid container name {name!r}", 125)
    return CONTAINERS / name


def run(args: list[str]) -> int:
    name, labels, env, ports, detach = None, {}, {}, [], False
    position = 0
    while position < len(args) and args[position].startswith("-"):
        flag = args[position]
        value = args[position + 1] if position + 1 < len(args) else ""
        if flag == "-d":
            detach, position = True, position + 1
            continue
        if flag == "--name":
            name = value
        elif flag == "--label":
            key, _, text = value.partition("=")
            labels[key] = text
        elif flag == "-e":
            key, _, text = value.partition("=")
            env[key] = text
        elif flag == "-p":
            host, _, container = value.rpartition(":")
            ports.append((int(host.rsplit(":", 1)[-1]), int(container.split("/")[0])))
        elif flag != "--restart":
            fail(PROGRAM, f"the twin's docker run does not take {flag}", 125)
        position += 2
    if position >= len(args):
        fail(PROGRAM, "docker run needs an image", 125)
    image = args[position]
    if not detach or not name:
        fail(PROGRAM, "the twin runs only detached, named containers (-d --name NAME)", 125)
    runner = known_image(image)
    directory = container_dir(name)
    if running(directory / "pid"):
        fail(PROGRAM, f'Conflict. The container name "/{name}" is already in use', 125)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    argv = runner(directory, env, ports)
    (directory / "container.json").write_text(json.dumps({"image": image, "labels": labels, "env": sorted(env)}))
    start_daemon(argv, directory / "pid", directory / "output.log")
    print(name)
    return 0


def inspect(args: list[str]) -> int:
    if len(args) != 3 or args[0] != "-f":
        fail(PROGRAM, "the twin's docker inspect takes -f FORMAT NAME", 1)
    template, name = args[1], args[2]
    directory = container_dir(name)
    if not (directory / "container.json").is_file():
        print("[]")
        fail(PROGRAM, f"Error: No such object: {name}", 1)
    info = json.loads((directory / "container.json").read_text())
    label = re.fullmatch(r'\{\{\s*index \.Config\.Labels "([^"]+)"\s*\}\}', template)
    if label:
        print(info["labels"].get(label.group(1), "<no value>"))
        return 0
    if re.fullmatch(r"\{\{\s*\.State\.Running\s*\}\}", template):
        print("true" if running(directory / "pid") else "false")
        return 0
    fail(PROGRAM, f"the twin's docker inspect does not evaluate {template}", 1)


def remove(args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    if "-f" not in args:
        fail(PROGRAM, "the twin removes only with -f", 1)
    for name in names:
        directory = container_dir(name)
        if not directory.exists():
            print(f"Error response from daemon: No such container: {name}", file=sys.stderr)
            return 1
        stop_pid(read_pid(directory / "pid"))
        shutil.rmtree(directory, ignore_errors=True)
        print(name)
    return 0


def twin_fault(args: list[str]) -> int:
    """``docker twin-fault NAME SHARE``: the gateway fails SHARE (0..1) of its API requests with 500, until set
    back to 0. Not a docker command: how the rehearsal injects a fault into a server's gateway."""
    if len(args) != 2:
        fail(PROGRAM, "usage: docker twin-fault NAME SHARE", 1)
    directory = container_dir(args[0])
    try:
        share = float(args[1])
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        fail(PROGRAM, f"twin-fault: SHARE must be a number in 0..1, not {args[1]!r}", 1)
    if not running(directory / "pid"):
        fail(PROGRAM, f"Error: No such container: {args[0]}", 1)
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
        admin.settimeout(5)
        admin.connect(str(directory / "admin.sock"))
        admin.sendall(f"set map {directory}/{FAULT_MAP} rate {round(share * 1000)}\n".encode())
        answer = admin.recv(4096).decode().strip()
    if answer:
        fail(PROGRAM, f"twin-fault: {answer}", 1)
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        fail(PROGRAM, "usage: docker COMMAND", 1)
    command, args = argv[0], argv[1:]
    if command in ("--version", "version"):
        print("Docker version 0.0.0-twin (bazbii twin: containers are the server's processes)")
        return 0
    if command == "pull":
        images = [a for a in args if not a.startswith("-")]
        for image in images:
            known_image(image)
        return 0
    if command == "run":
        return run(args)
    if command == "inspect":
        return inspect(args)
    if command == "rm":
        return remove(args)
    if command == "twin-fault":
        return twin_fault(args)
    fail(PROGRAM, f"the twin's docker does not do {command!r}", 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
