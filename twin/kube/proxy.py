"""NodePorts: a small kube-proxy. Every TCP nodePort of every NodePort/LoadBalancer Service is
listened on at each ``--nodeport-address`` of the agent and forwarded to the Service's ready endpoints.

An endpoint is chosen per connection, round-robin over the endpoints ready at that moment
(:func:`twin.kube.endpoints.ready_endpoints`). As with kube-proxy's iptables rules there is no second
try: an endpoint that refuses fails that connection (closed at once, as with no endpoint ready), so
a rollout that sends traffic to a pod not serving shows up as failed requests. A pod that stops being
ready (or starts terminating) gets no new connection, while the connections it already has carry on,
as with kube-proxy's conntrack.

A pod's close is passed on whole. Behind kube-proxy's NAT the client talks to the pod's kernel: once an
HTTP server has closed a connection (uvicorn's keep-alive timeout, a graceful shutdown), a request already
on its way is answered with a reset, on which a proxy in front (the gateway's HAProxy) retries or fails
the request at once. Forwarding only the FIN (a half-close) left the client's side open: a request sent
into that race reached a closed pod and the client waited for an answer that could not come (seen: a
gateway request held until its 30 s server timeout). So when the pod's side ends, the client's connection
is closed whole (a later byte from the client gets a reset from this side's kernel), and reset at once
when the pod's kernel refused what was already forwarded. A pod that only half-closes (still reading
after its FIN) is not supported; HTTP servers do not.

UDP/SCTP ports and ClusterIPs are not proxied.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from typing import Callable, Iterable

log = logging.getLogger("twin.kube.proxy")

CONNECT_SECONDS = 2.0
CHUNK = 64 * 1024

# (service, service port) -> [(ip, port), ...]
EndpointsFor = Callable[[dict, dict], list[tuple[str, int]]]


def node_ports(services: Iterable[dict]) -> dict[int, tuple[tuple[str, str], str]]:
    """nodePort -> ((namespace, service name), service port name or number) of every TCP node port."""
    ports = {}
    for service in services:
        spec = service.get("spec") or {}
        if spec.get("type") not in ("NodePort", "LoadBalancer"):
            continue
        key = (service["metadata"]["namespace"], service["metadata"]["name"])
        for port in spec.get("ports") or []:
            if port.get("nodePort") and port.get("protocol", "TCP") == "TCP":
                ports[port["nodePort"]] = (key, port.get("name") or str(port["port"]))
    return ports


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until the reader's end; True when it ended with an error (a reset), not a FIN."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return False
    except (ConnectionError, OSError):
        return True


def refused(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer's kernel answered what was written with a reset (the socket's pending error)."""
    sock = writer.get_extra_info("socket")
    try:
        return sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
    except OSError:
        return True


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset rather than a FIN (SO_LINGER 0), as the pod's kernel answered."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class NodePortProxy:
    def __init__(self, addresses: list[str], services: Callable[[], dict], endpoints_for: EndpointsFor):
        self.addresses = addresses
        self.services = services  # (namespace, name) -> the current Service object
        self.endpoints_for = endpoints_for
        self.listeners: dict[int, tuple[tuple[tuple[str, str], str], list[asyncio.AbstractServer]]] = {}
        self._turn = itertools.count()

    async def sync(self) -> None:
        """Listen on exactly the node ports the Services have now."""
        wanted = node_ports(self.services().values())
        for port in [p for p in self.listeners if self.listeners[p][0] != wanted.get(p)]:
            for server in self.listeners.pop(port)[1]:
                server.close()
            log.info("node port %d closed", port)
        for port, target in wanted.items():
            if port in self.listeners:
                continue
            servers = []
            for address in self.addresses:
                try:
                    servers.append(await asyncio.start_server(
                        lambda r, w, t=target: self._forward(r, w, t), address, port, reuse_address=True))
                except OSError as exc:
                    log.warning("node port %s:%d: %s", address, port, exc)
            if servers:
                self.listeners[port] = (target, servers)
                log.info("node port %d -> %s/%s port %s", port, *target[0], target[1])

    def _endpoints(self, target) -> list[tuple[str, int]]:
        (key, port_name) = target
        service = self.services().get(key)
        if service is None:
            return []
        for port in service["spec"].get("ports") or []:
            if (port.get("name") or str(port["port"])) == port_name:
                return self.endpoints_for(service, port)
        return []

    async def _forward(self, client_reader, client_writer, target) -> None:
        try:
            endpoints = self._endpoints(target)
            if not endpoints:
                return
            ip, port = endpoints[next(self._turn) % len(endpoints)]
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), CONNECT_SECONDS)
            except (OSError, asyncio.TimeoutError) as exc:
                log.info("node port connection to %s:%d failed: %s", ip, port, exc)
                return
            # The client's half-close is passed on (the pod may still answer); the pod's close ends both sides.
            upstream = asyncio.ensure_future(_pipe(client_reader, writer))
            try:
                if await _pipe(reader, client_writer) or refused(writer):
                    reset(client_writer)
            finally:
                upstream.cancel()
                writer.close()
        finally:
            client_writer.close()

    async def close(self) -> None:
        for _, servers in self.listeners.values():
            for server in servers:
                server.close()
        self.listeners.clear()
