"""``cloudflared`` on a twin server: the tunnel connector, connecting to the twin's Cloudflare emulator.

``cloudflared [--no-autoupdate] tunnel run`` with ``TUNNEL_TOKEN`` (or ``--token``) decodes the token as
cloudflared does (base64 JSON: account tag ``a``, tunnel id ``t``, tunnel secret ``s``) and registers a
connection of this server with the emulator (``/etc/bazbii-twin/edge.json`` says where it is), which
refuses a secret that is not the tunnel's. It renews the registration every few seconds, retries while
the emulator cannot be reached (as cloudflared retries the edge), and withdraws it on SIGTERM.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

from twin.hostshims.common import edge, fail

PROGRAM = "cloudflared"
HEARTBEAT_SECONDS = 5.0


def decode(token: str) -> dict:
    try:
        fields = json.loads(base64.b64decode(token.strip(), validate=True))
        return {"account": fields["a"], "tunnel": fields["t"], "secret": fields["s"]}
    except (ValueError, KeyError, TypeError):
        fail(PROGRAM, "Provided Tunnel token is not valid.", 1)


def call(method: str, url: str, body: dict) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def run_tunnel(token: str) -> int:
    info = decode(token)
    base = edge().get("cloudflareTwinUrl", "")
    connector = {"account": info["account"], "secret": info["secret"], "connector": socket.gethostname(),
                 "origin": edge().get("serverAddress", "")}
    url = f"{base}/_twin/tunnels/{info['tunnel']}/connections"
    stopping = False

    def stop(_signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    registered = False
    while not stopping:
        status = call("POST", url, connector) if base else 0
        if status in (200, 201):
            if not registered:
                print(f"Registered tunnel connection tunnel={info['tunnel']}", flush=True)
            registered = True
        elif status in (401, 403, 404):
            print(f"ERR the edge refused the tunnel connection (HTTP {status}); retrying", flush=True)
        else:
            print("ERR cannot reach the Cloudflare edge; retrying", flush=True)
        deadline = time.monotonic() + HEARTBEAT_SECONDS
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.2)
    if base and registered:
        call("DELETE", url, connector)
    return 0


def main(argv: list[str]) -> int:
    if "--version" in argv or argv[:1] == ["version"]:
        print("cloudflared version 2026.11.0 (bazbii twin)")
        return 0
    words = [a for a in argv if a != "--no-autoupdate"]
    token = os.environ.get("TUNNEL_TOKEN", "")
    if "--token" in words:
        token = words[words.index("--token") + 1]
        words = [w for w in words if w not in ("--token", token)]
    if words[:2] != ["tunnel", "run"]:
        fail(PROGRAM, "the twin's cloudflared runs only `tunnel run` with a token", 1)
    if not token:
        fail(PROGRAM, "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the last "
                      "command line argument or in the configuration file, or a token (TUNNEL_TOKEN).", 1)
    return run_tunnel(token)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
