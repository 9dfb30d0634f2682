"""Rules that relate one section of the desired state to another.

Each problem is a ``(path, message)`` pair; ``path`` is a tuple of keys from
the top of the state (``("traffic", "pools", "server2", "server")``) so the
caller can name the config key the user has to fix.
"""

from __future__ import annotations

from typing import Mapping

from .models import Server, StackState

Problem = tuple[tuple, str]


def servers_with_role(servers: Mapping[str, Server], role: str) -> list[str]:
    """The servers (of ``state.servers``, or any mapping of them) that have ``role``, in declaration order."""
    return [name for name, server in servers.items() if role in server.roles]


def cross_check(state: StackState) -> list[Problem]:
    problems: list[Problem] = []
    servers = state.servers
    db = state.database

    def need_server(path: tuple, name: str, role: str | None = None) -> None:
        if name not in servers:
            problems.append((path, f"unknown server {name!r} (servers: {', '.join(sorted(servers)) or 'none'})"))
        elif role and role not in servers[name].roles:
            problems.append((path, f"server {name!r} must have the {role!r} role"))

    need_server(("database", "primary"), db.primary, "database")
    for name in db.replicas:
        need_server(("database", "replicas", name), name, "database")
    need_server(("database", "pooler", "server"), db.pooler.server, "pooler")
    for index, name in enumerate(db.retired):
        need_server(("database", "retired", index), name)
        if name in db.replicas:
            problems.append((("database", "retired", index), f"server {name!r} is still a replica"))
    if db.switchover is not None:
        need_server(("database", "switchover", "from"), db.switchover.from_)
        if db.switchover.from_ == db.primary:
            problems.append((("database", "switchover", "from"), "the old primary cannot be the current primary"))

    # PostgreSQL runs exactly where the database section says it does.
    expected_db_hosts = {db.primary, *db.replicas}
    if db.switchover is not None and db.switchover.from_ not in db.retired:
        expected_db_hosts.add(db.switchover.from_)  # stopped, kept re-attachable until it is retired
    for name in servers_with_role(state.servers, "database"):
        if name not in expected_db_hosts:
            problems.append(
                (("servers", name, "roles"),
                 f"server {name!r} has the 'database' role but is neither primary, replica nor a not-yet-retired old primary")
            )
    for name in db.retired:
        if name in servers and "database" in servers[name].roles:
            problems.append((("servers", name, "roles"), f"retired database server {name!r} must drop the 'database' role"))

    # Every gateway host serves exactly one pool, and only gateway hosts do.
    gateway_hosts = servers_with_role(state.servers, "gateway")
    pool_servers: dict[str, str] = {}
    for pool_name, pool in state.traffic.pools.items():
        need_server(("traffic", "pools", pool_name, "server"), pool.server, "gateway")
        if pool.server in pool_servers:
            problems.append(
                (("traffic", "pools", pool_name, "server"),
                 f"server {pool.server!r} already serves pool {pool_servers[pool.server]!r}")
            )
        pool_servers[pool.server] = pool_name
    for host in gateway_hosts:
        if host not in pool_servers:
            problems.append((("servers", host, "roles"), f"gateway host {host!r} has no load-balancer pool in traffic.pools"))
    if not gateway_hosts:
        problems.append((("servers",), "at least one server needs the 'gateway' role"))
    if not servers_with_role(state.servers, "api"):
        problems.append((("servers",), "at least one server needs the 'api' role (it hosts the Kubernetes node)"))

    traffic_name = state.traffic.hostname
    if not (traffic_name == state.cloudflare.zone or traffic_name.endswith("." + state.cloudflare.zone)):
        problems.append((("traffic", "hostname"), f"{traffic_name!r} is not inside zone {state.cloudflare.zone!r}"))
    return problems
