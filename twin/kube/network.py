"""Pod IPs: one address per pod from the node's pod network, bound by the pod's processes.

Every address of the pod network is reachable on this machine only if it is *local* in the agent's
network namespace. In a host namespace ``lo`` holds all of 127.0.0.0/8, so a loopback pod network
needs nothing; where an address is not local (the twin's own namespace, whose ``lo`` has only
127.0.0.1/32) the agent adds it to ``lo`` as a /32 while the pod lives and removes it after.

Addresses are handed out round-robin (an address just released is the last one reused), never the
network's first or last address, nor the node's own IP.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

log = logging.getLogger("twin.kube.network")


def is_local(ip: str) -> bool:
    """Whether a socket can bind ``ip`` in this network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


async def _ip(*args: str) -> None:
    process = await asyncio.create_subprocess_exec("ip", *args, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {stderr.decode().strip()}")


class PodNetwork:
    def __init__(self, cidr: str, node_ip: str):
        self.network = ipaddress.IPv4Network(cidr)
        self.node_ip = node_ip
        self.in_use: set[str] = set()
        self.added: set[str] = set()  # addresses we put on `lo`
        self._next = 0

    def _candidates(self) -> list[str]:
        hosts = [str(ip) for ip in self.network.hosts() if str(ip) != self.node_ip]
        return hosts[self._next:] + hosts[:self._next]

    async def acquire(self, taken_elsewhere: set[str] = frozenset()) -> str:
        """A free address, made local. ``taken_elsewhere``: IPs the API still shows on pods of this node."""
        for ip in self._candidates():
            if ip in self.in_use or ip in taken_elsewhere:
                continue
            self.in_use.add(ip)
            hosts = [str(h) for h in self.network.hosts() if str(h) != self.node_ip]
            self._next = (hosts.index(ip) + 1) % len(hosts)
            if not is_local(ip):
                await _ip("addr", "add", f"{ip}/32", "dev", "lo")
                self.added.add(ip)
            return ip
        raise RuntimeError(f"pod network {self.network} has no free address")

    async def release(self, ip: str) -> None:
        self.in_use.discard(ip)
        if ip in self.added:
            self.added.discard(ip)
            try:
                await _ip("addr", "del", f"{ip}/32", "dev", "lo")
            except OSError as exc:
                log.warning("%s", exc)
