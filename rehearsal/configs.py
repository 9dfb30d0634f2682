"""Config files of the rehearsal's servers, as text (pure functions; ``services`` writes and runs them)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from twin.edge.servers import nsd_conf, unbound_conf  # noqa: F401 (the rehearsal's DNS, as the twin's edge runs it)


def nginx_conf(d: Path, upstream_file: Path, server: str, address: str, port: int, fault: float) -> str:
    """A gateway: proxies to the API instances listed in ``upstream_file``; ``fault`` > 0 answers
    that share of API requests (not /healthz) with 500."""
    fault_split = (f'split_clients "${{request_id}}" $bazbii_fault {{ {fault * 100:.1f}% 1; * 0; }}\n'
                   if fault > 0 else "")
    fault_rule = "if ($bazbii_fault) { return 500; }" if fault > 0 else ""
    temps = "".join(f"{t}_temp_path {d}/{t};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  {temps}
  {fault_split}
  upstream api {{ include {upstream_file}; keepalive 32; }}
  server {{
    listen {address}:{port};
    add_header X-Gateway {server} always;
    location = /healthz {{ proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    location / {{
      {fault_rule}
      proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502 non_idempotent;
    }}
  }}
}}
"""


def cumulative(pools: dict[str, dict]) -> dict[str, int]:
    """Pool -> upper bound of its slice of 0..99 (the split map: a pool at weight 0 gets an empty slice)."""
    total, out = 0, {}
    for name, pool in pools.items():
        total += int(pool["weight"])
        out[name] = total
    return out


def haproxy_cfg(hap: Path, pool_origins: dict[str, str], lb_bind: str, metrics_bind: str, gateway_port: int) -> str:
    """The load balancer: one backend per pool (its gateway, actively health-checked), a random
    0..99 draw against the runtime-editable split map picks the pool; unhealthy pools are skipped."""
    order = list(pool_origins)
    rules = ["    http-request set-var(txn.r) rand(100)"]
    for name in order:
        rules.append(f"    http-request set-var(txn.c_{name}) str({name}),map({hap}/split.map,0)")
    for name in order:
        rules.append(f"    use_backend pool_{name} if {{ var(txn.r),sub(txn.c_{name}) -m int lt 0 }} "
                     f"{{ nbsrv(pool_{name}) gt 0 }}")
    for name in order:  # steering skips unhealthy pools: any healthy pool, in order
        rules.append(f"    use_backend pool_{name} if {{ nbsrv(pool_{name}) gt 0 }}")
    backends = []
    for name, origin in pool_origins.items():
        # One connection per request to the gateway: a gateway reload closes idle keep-alive
        # connections, and a POST sent on one at that instant cannot be retried safely.
        backends.append(f"""backend pool_{name}
    option http-server-close
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 check
    server gw {origin}:{gateway_port}
""")
    return f"""global
    stats socket {hap}/admin.sock mode 600 level admin expose-fd listeners
    server-state-file {hap}/server.state
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
    load-server-state-from-file global
frontend lb
    bind {lb_bind}
    http-response set-header X-LB-Pool %b
{chr(10).join(rules)}
    default_backend pool_{order[0]}
frontend metrics
    bind {metrics_bind}
    http-request use-service prometheus-exporter if {{ path /metrics }}
{chr(10).join(backends)}"""


def zone_text(records: dict[str, dict], serial: int, edge: str, scaled_ttl: Callable[[int], int]) -> str:
    lines = ["$ORIGIN bazbii.example.", "$TTL 60", f"@ IN SOA ns1 hostmaster {serial} 60 60 600 5", "@ IN NS ns1",
             f"ns1 IN A {edge}", f"api 1 IN A {edge}"]
    for record in records.values():
        if record.get("proxied"):
            continue  # proxied records live in Cloudflare's proxy, i.e. HAProxy here
        lines.append(f"{record['name']} {scaled_ttl(record['ttl'])} IN {record['type']} {record['content']}")
    return "\n".join(lines) + "\n"


def prometheus_yml(prom: Path, haproxy_target: str, pgbouncer_target: str) -> str:
    return f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: haproxy
    static_configs: [{{targets: ["{haproxy_target}"]}}]
  - job_name: api
    file_sd_configs: [{{files: ["{prom}/api.json"], refresh_interval: 1s}}]
  - job_name: postgres
    file_sd_configs: [{{files: ["{prom}/postgres.json"], refresh_interval: 1s}}]
  - job_name: pgbouncer
    static_configs: [{{targets: ["{pgbouncer_target}"]}}]
"""
