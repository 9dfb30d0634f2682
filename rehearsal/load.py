"""Open-loop, constant-rate load: ``python -m rehearsal.load --lb URL --resolver HOST:PORT ...``.

A dispatcher sleeps until ``t0 + i/rate`` and starts request ``i`` as its own task, whatever
happened to the earlier ones, so a stall shows up as latency measured from the *scheduled*
time, never as fewer requests (no coordinated omission). The mix: reads and writes through the
load balancer (HAProxy), and a share of reads and writes to the ``direct`` DNS record, resolved
through the caching resolver with a TTL-honouring client cache (like a partner's webhook
sender). Every request is sent as a user (``X-User-Id``, the post's ``user_id`` for a write,
drawn uniformly so every flag cohort bucket gets traffic); a write picks a category. Every
request is written as one CSV line: kind, scheduled, start, end (wall-clock
seconds), status (0 = no response), pool, gateway, API version, error. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import signal
import sys
import time

import aiohttp
import dns.asyncresolver
import dns.resolver
import uvloop

from rehearsal.bootstrap import SEED_POSTS

FIELDS = ("kind", "scheduled", "start", "end", "status", "pool", "gateway", "version", "error")
# 20 slots: 14 reads and 4 writes through the load balancer, 1 read and 1 write to the direct record.
MIX = ["lb_read"] * 14 + ["lb_write"] * 4 + ["direct_read", "direct_write"]
LOOPBACK_PREFIX = "127."
USERS = 10_000                     # user ids 1..USERS: every id % 100 bucket of a flag's cohort
CATEGORIES = ("news", "howto", "offtopic")   # what the new post form's picker offers


class DirectTarget:
    """Resolves ``direct.<zone>`` through the resolver, caching answers for their TTL."""

    def __init__(self, resolver: str, name: str, port: int):
        host, _, rport = resolver.partition(":")
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = [host]
        self.resolver.port = int(rport)
        self.resolver.cache = dns.resolver.Cache()
        self.resolver.lifetime = 2.0
        self.name = name
        self.port = port

    async def base(self) -> str:
        answer = await self.resolver.resolve(self.name, "A")
        address = answer[0].address
        if not address.startswith(LOOPBACK_PREFIX):
            raise RuntimeError(f"{self.name} resolved to {address}, not loopback: refusing")
        return f"http://{address}:{self.port}"


async def run(args) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512, force_close=False),
                                    timeout=aiohttp.ClientTimeout(total=args.timeout))
    direct = DirectTarget(args.resolver, args.direct_name, args.gateway_port)
    out = open(args.out, "w", newline="")
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    rng = random.Random(7)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    pending: set[asyncio.Task] = set()

    async def one(kind: str, scheduled: float) -> None:
        start = time.time()
        status, pool, gateway, version, error = 0, "", "", "", ""
        try:
            base = await direct.base() if kind.startswith("direct") else args.lb
            user = rng.randint(1, USERS)
            headers = {"X-User-Id": str(user)}
            if kind.endswith("read"):
                request = session.get(f"{base}/posts/{rng.randint(1, args.read_ids)}", headers=headers)
            else:
                request = session.post(f"{base}/posts", headers=headers, json={
                    "title": f"load {scheduled:.3f}", "user_id": user, "category": rng.choice(CATEGORIES)})
            async with request as response:
                await response.read()
                status = response.status
                pool = response.headers.get("X-LB-Pool", "direct" if kind.startswith("direct") else "")
                gateway = response.headers.get("X-Gateway", "")
                version = response.headers.get("X-Api-Version", "")
        except Exception as exc:  # recorded, never raised: one failure must not stop the load
            error = f"{type(exc).__name__}: {str(exc)[:120]}"
        writer.writerow((kind, f"{scheduled:.6f}", f"{start:.6f}", f"{time.time():.6f}", status, pool, gateway,
                         version, error))

    t0_wall, t0 = time.time(), loop.time()
    i = 0
    last_flush = t0
    while not stop.is_set() and (args.duration <= 0 or i < args.duration * args.rate):
        due = t0 + i / args.rate
        delay = due - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
                break
            except asyncio.TimeoutError:
                pass
        task = asyncio.create_task(one(MIX[i % len(MIX)], t0_wall + i / args.rate))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        if loop.time() - last_flush > 0.5:
            out.flush()
            last_flush = loop.time()
    if pending:
        await asyncio.wait(pending, timeout=args.timeout + 1)
    out.flush()
    out.close()
    await session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.load", description=__doc__.split("\n")[0])
    parser.add_argument("--lb", required=True, help="load balancer base URL")
    parser.add_argument("--resolver", required=True, help="HOST:PORT of the caching resolver")
    parser.add_argument("--direct-name", default="direct.bazbii.example")
    parser.add_argument("--gateway-port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=0, help="seconds (0: until SIGTERM)")
    parser.add_argument("--read-ids", type=int, default=SEED_POSTS, help="posts 1..N are read (the seeded ones)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.lb.startswith("http://127.") or not args.resolver.startswith("127."):
        parser.error("the load only targets loopback (127.0.0.0/8)")
    if not 0 < args.rate <= 2000:
        parser.error("--rate must be in (0, 2000]")
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
