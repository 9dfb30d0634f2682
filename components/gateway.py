"""Gateway: the gateway container and a Cloudflare Tunnel on every server with the ``gateway`` role.

Per gateway host ``<server>``:

``<name>-<server>-tunnel``   ZeroTrustTunnelCloudflared, ``config_src="cloudflare"`` (remotely managed),
                             its secret derived from ``bazbii:tunnelSecret`` (HMAC per tunnel name,
                             so no two tunnels share a secret)
``<name>-<server>-config``   ZeroTrustTunnelCloudflaredConfig: the load-balanced hostname to the local
                             gateway, then the catch-all ``http_status:404`` (cloudflared requires the
                             last rule to match everything)
``<name>-<server>-run``      remote.Command: runs the gateway container, waits for its health path,
                             and runs cloudflared as a systemd service with the tunnel token. The token
                             reaches the host only on stdin (a secret input) and is stored in a 0600
                             EnvironmentFile; it is never on a command line or in the logs. Deleting
                             the resource (gateway-off-server1) stops cloudflared and the container
                             *before* the tunnel itself is deleted (it depends on the tunnel).

The tunnel token is the documented cloudflared token format, base64 of
``{"a": account tag, "t": tunnel id, "s": tunnel secret}``, built from values
this program owns (so it needs no extra API read and stays a secret Output).

A gateway image change restarts the container host by host; move traffic off a
host with the pool weights first if that blip matters (the plan never changes
the gateway image).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import partial
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_cloudflare as cloudflare
from pulumi_command import remote

from components._util import TYPE_PREFIX, child_opts, inherit_depends_on, q, script

CATCH_ALL_SERVICE = "http_status:404"
CONTAINER_NAME = "bazbii-gateway"
ENV_FILE = "/etc/cloudflared/bazbii-gateway.env"
UNIT = "bazbii-cloudflared.service"


@dataclass(frozen=True)
class GatewayArgs:
    account_id: str
    tunnel_name: str
    image: str
    port: int
    health_path: str
    hostnames: Sequence[str]  # hostnames the tunnels route to the gateway (before the catch-all)
    connections: Mapping[str, remote.ConnectionArgs]  # SSH to each gateway host, by server name
    api_upstreams: Sequence[str]  # where the gateway sends API requests (http://host:port)
    tunnel_secret: pulumi.Input[str]
    metrics_port: int  # where the gateway's Prometheus exporter listens (published: metricsTargets scrapes it)


def derive_tunnel_secret(master: str, tunnel_name: str) -> str:
    """A distinct 32-byte secret per tunnel, base64 (what the Cloudflare API expects)."""
    digest = hmac.new(master.encode(), f"cloudflared-tunnel:{tunnel_name}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def tunnel_token(account_id: str, tunnel_id: str, secret_b64: str) -> str:
    """The token ``cloudflared tunnel run`` takes (TUNNEL_TOKEN)."""
    payload = json.dumps({"a": account_id, "t": tunnel_id, "s": secret_b64}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def ingress_rules(hostnames: Sequence[str], port: int) -> list[cloudflare.ZeroTrustTunnelCloudflaredConfigConfigIngressArgs]:
    rules = [
        cloudflare.ZeroTrustTunnelCloudflaredConfigConfigIngressArgs(hostname=h, service=f"http://localhost:{port}")
        for h in hostnames
    ]
    rules.append(cloudflare.ZeroTrustTunnelCloudflaredConfigConfigIngressArgs(service=CATCH_ALL_SERVICE))
    return rules


def run_script(server: str, image: str, port: int, health_path: str, api_upstreams: Sequence[str],
               metrics_port: int) -> str:
    unit = f"""[Unit]
Description=Cloudflare Tunnel for the bazbii gateway ({server})
After=network-online.target docker.service
Wants=network-online.target

[Service]
EnvironmentFile={ENV_FILE}
ExecStart=/usr/bin/cloudflared --no-autoupdate tunnel run
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
    upstreams = ",".join(api_upstreams)
    return script(
        f"""
IFS= read -r TUNNEL_TOKEN  # from stdin (secret); never echoed
sudo install -d -m 0700 /etc/cloudflared
umask 077
printf 'TUNNEL_TOKEN=%s\\n' "$TUNNEL_TOKEN" | sudo tee {ENV_FILE} >/dev/null
unset TUNNEL_TOKEN
sudo chmod 0600 {ENV_FILE}
# gateway container (replaced only when its image or settings changed)
sudo docker pull -q {q(image)}
want={q(f"{image}|{port}|{upstreams}|{metrics_port}")}
have=$(sudo docker inspect -f '{{{{index .Config.Labels "bazbii.gateway"}}}}' {CONTAINER_NAME} 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  sudo docker rm -f {CONTAINER_NAME} >/dev/null 2>&1 || true
  sudo docker run -d --name {CONTAINER_NAME} --restart unless-stopped \\
    --label bazbii.gateway="$want" -p {port}:{port} -p {metrics_port}:{metrics_port} \\
    -e PORT={port} -e API_UPSTREAMS={q(upstreams)} -e METRICS_PORT={metrics_port} {q(image)}
fi
for attempt in $(seq 1 60); do
  if curl -fsS -o /dev/null http://127.0.0.1:{port}{health_path}; then break; fi
  [ "$attempt" -eq 60 ] && {{ echo "gateway on {server} not healthy at {health_path}" >&2; exit 1; }}
  sleep 2
done
# cloudflared as a service, token from the EnvironmentFile
printf '%s' {q(unit)} | sudo tee /etc/systemd/system/{UNIT} >/dev/null
sudo systemctl daemon-reload
sudo systemctl enable {UNIT} >/dev/null
sudo systemctl restart {UNIT}
sleep 5
sudo systemctl is-active --quiet {UNIT} || {{ echo "cloudflared failed to start on {server}" >&2; exit 1; }}
echo "gateway and tunnel running on {server}"
"""
    )


STOP_SCRIPT = script(
    f"""
sudo systemctl disable --now {UNIT} >/dev/null 2>&1 || true
sudo rm -f /etc/systemd/system/{UNIT} {ENV_FILE}
sudo systemctl daemon-reload
sudo docker rm -f {CONTAINER_NAME} >/dev/null 2>&1 || true
echo "gateway and tunnel stopped"
"""
)


class Gateway(pulumi.ComponentResource):
    """Gateway container + remotely managed Cloudflare Tunnel on each gateway host."""

    tunnel_ids: dict[str, pulumi.Output[str]]
    origins: dict[str, pulumi.Output[str]]  # server -> "<tunnel id>.cfargotunnel.com"
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: GatewayArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:Gateway", name, None, opts)
        inherit_depends_on(self, opts)
        self.tunnel_ids, self.origins, self.ready = {}, {}, []
        master = pulumi.Output.secret(args.tunnel_secret)
        for server_name in sorted(args.connections):
            tunnel_name = f"{args.tunnel_name}-{server_name}"
            secret_b64: pulumi.Output[str] = pulumi.Output.secret(
                master.apply(partial(derive_tunnel_secret, tunnel_name=tunnel_name)))
            tunnel = cloudflare.ZeroTrustTunnelCloudflared(
                f"{name}-{server_name}-tunnel",
                account_id=args.account_id,
                name=tunnel_name,
                config_src="cloudflare",
                tunnel_secret=secret_b64,
                opts=child_opts(self),
            )
            config = cloudflare.ZeroTrustTunnelCloudflaredConfig(
                f"{name}-{server_name}-config",
                account_id=args.account_id,
                tunnel_id=tunnel.id,
                config=cloudflare.ZeroTrustTunnelCloudflaredConfigConfigArgs(
                    ingresses=ingress_rules(args.hostnames, args.port),
                ),
                opts=child_opts(self),
            )
            token: pulumi.Output[str] = pulumi.Output.secret(
                pulumi.Output.all(tunnel.id, secret_b64).apply(
                    lambda parts: tunnel_token(args.account_id, parts[0], parts[1]) + "\n"
                )
            )
            start = run_script(server_name, args.image, args.port, args.health_path, args.api_upstreams,
                               args.metrics_port)
            run = remote.Command(
                f"{name}-{server_name}-run",
                connection=args.connections[server_name],
                # The image, port, health path and upstreams are in the script, the tunnel in the token on stdin:
                # a change of any runs `update` in place. Never `triggers`: a changed trigger replaces the
                # resource, and the replacement runs STOP_SCRIPT right after the new start (components._util.script).
                create=start,
                update=start,
                delete=STOP_SCRIPT,
                stdin=token,
                opts=child_opts(self, depends_on=[config], additional_secret_outputs=["stdin"]),
            )
            self.tunnel_ids[server_name] = tunnel.id
            self.origins[server_name] = tunnel.id.apply(lambda i: f"{i}.cfargotunnel.com")
            self.ready.append(run)
        self.register_outputs({"tunnelIds": self.tunnel_ids, "origins": self.origins})
