"""``docker`` on a twin server, which has no container runtime: the commands the gateway script runs.

A container is a process of the server, started from what its image stands for on the twin
(:data:`IMAGES`): the gateway image is nginx, configured from the container's environment the way the
gateway image reads it (``PORT``, ``API_UPSTREAMS``), answering its health path and forwarding the rest
to the API upstreams. A published port (``-p``) listens on the server's own addresses (127.0.0.1 and its
plan address) rather than on every address as Docker's does: the twin's Kubernetes pods are processes in
the same network namespace, on addresses of their own, and a wildcard would take their port too. Supported: ``--version``, ``pull``, ``run -d --name --restart --label -p -e IMAGE``,
``inspect -f`` with ``{{index .Config.Labels "KEY"}}`` or ``{{.State.Running}}``, ``rm -f``. State lives in
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


def gateway_config(directory: Path, env: dict[str, str], ports: list[tuple[int, int]]) -> list[str]:
    """nginx as the bazbii gateway: health path, then every request to the API upstreams."""
    port = int(env.get("PORT", "8080"))
    listen = [host for host, container in ports if container == port] or [port]
    upstreams = [urlsplit(u) for u in env.get("API_UPSTREAMS", "").split(",") if u.strip()]
    if not upstreams:
        fail(PROGRAM, "the gateway image needs API_UPSTREAMS (http://host:port,...)", 125)
    servers = "\n".join(f"    server {u.hostname}:{u.port or 80} max_fails=1 fail_timeout=2s;" for u in upstreams)
    addresses = ["127.0.0.1", *([edge()["serverAddress"]] if edge().get("serverAddress") else [])]
    listens = "\n".join(f"    listen {address}:{p};" for p in listen for address in addresses)
    (directory / "nginx.conf").write_text(f"""daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body;
  proxy_temp_path {directory}/proxy;
  upstream api {{
{servers}
    keepalive 16;
  }}
  server {{
{listens}
    location = {HEALTH_PATH} {{ return 200 "ok\\n"; }}
    location / {{
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
""")
    return ["/usr/sbin/nginx", "-c", str(directory / "nginx.conf")]


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
    fail(PROGRAM, f"the twin's docker does not do {command!r}", 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
