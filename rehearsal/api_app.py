"""The rehearsal's API: posts CRUD through PgBouncer, in version 1.9 or 2.0.

Run as ``uvicorn rehearsal.api_app:app`` with the environment:

``BAZBII_DSN``              libpq string to PgBouncer (transaction mode)
``BAZBII_API_VERSION``      ``1.9.0`` or ``2.0.0``; 2.0 reads and writes ``posts.category``
``BAZBII_API_INSTANCE``     a name for the ``X-Api-Instance`` header and the metrics
``BAZBII_FAULT_ERROR_RATE`` fraction of ``/posts`` requests answered 500 (fault injection; 0 default)

Every new post enqueues a job in ``jobs`` in the same transaction; the workers consume them.
``/metrics`` is the Prometheus text format: requests by route/status and a latency histogram,
labelled with the version.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

VERSION = os.environ.get("BAZBII_API_VERSION", "1.9.0")
INSTANCE = os.environ.get("BAZBII_API_INSTANCE", "api")
FAULT_RATE = float(os.environ.get("BAZBII_FAULT_ERROR_RATE", "0") or 0)
READS_CATEGORY = not VERSION.startswith("1.")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (route, status) -> count; latency histogram per route
_requests: dict[tuple[str, int], int] = {}
_hist: dict[str, list[int]] = {}
_hist_sum: dict[str, float] = {}
_hist_count: dict[str, int] = {}

# psycopg would auto-prepare after 5 executions; PgBouncer in transaction mode cannot carry that.
pool = AsyncConnectionPool(os.environ.get("BAZBII_DSN", ""), min_size=2, max_size=8, open=False,
                           kwargs={"prepare_threshold": None, "autocommit": False}, timeout=10)


def _observe(route: str, status: int, seconds: float) -> None:
    _requests[(route, status)] = _requests.get((route, status), 0) + 1
    counts = _hist.setdefault(route, [0] * len(BUCKETS))
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            counts[i] += 1
    _hist_sum[route] = _hist_sum.get(route, 0.0) + seconds
    _hist_count[route] = _hist_count.get(route, 0) + 1


def _headers() -> dict[str, str]:
    return {"X-Api-Version": VERSION, "X-Api-Instance": INSTANCE}


def _injected_fault() -> bool:
    return FAULT_RATE > 0 and random.random() < FAULT_RATE


def observed(route: str):
    """Time and count a handler; the injected fault and any database error are answered here.

    The handler returns ``(status, body)``; an exception (PgBouncer paused past its timeout, a
    server gone) becomes a 503 that the load generator records.
    """

    def wrap(handler):
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            status, body = 500, {"error": "injected fault"}
            try:
                if not _injected_fault():
                    status, body = await handler(request)
            except Exception as exc:
                status, body = 503, {"error": type(exc).__name__}
            _observe(route, status, time.perf_counter() - started)
            return JSONResponse(body, status_code=status, headers=_headers())

        return endpoint

    return wrap


@observed("get_post")
async def get_post(request: Request) -> tuple[int, dict]:
    post_id = int(request.path_params["post_id"])
    columns = "id, title, content, category" if READS_CATEGORY else "id, title, content"
    async with pool.connection() as conn:
        row = await (await conn.execute(f"SELECT {columns} FROM posts WHERE id = %s", (post_id,))).fetchone()
    if row is None:
        return 404, {"error": "not found"}
    body = {"id": row[0], "title": row[1], "content": row[2]}
    if READS_CATEGORY:
        body["category"] = row[3]
    return 200, body


@observed("create_post")
async def create_post(request: Request) -> tuple[int, dict]:
    data = await request.json()
    async with pool.connection() as conn:
        if READS_CATEGORY:
            cur = await conn.execute(
                "INSERT INTO posts (user_id, title, content, category) VALUES (%s, %s, %s, %s) RETURNING id",
                (data.get("user_id"), data["title"], data.get("content"), data.get("category") or "general"))
        else:
            cur = await conn.execute("INSERT INTO posts (user_id, title, content) VALUES (%s, %s, %s) RETURNING id",
                                     (data.get("user_id"), data["title"], data.get("content")))
        (post_id,) = await cur.fetchone()
        await conn.execute("INSERT INTO jobs (post_id, kind) VALUES (%s, 'index')", (post_id,))
    return 201, {"id": post_id}


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok", headers=_headers())


async def metrics(request: Request) -> Response:
    labels = f'version="{VERSION}",instance_name="{INSTANCE}"'
    lines = ["# TYPE bazbii_api_requests_total counter"]
    for (route, status), count in sorted(_requests.items()):
        lines.append(f'bazbii_api_requests_total{{{labels},route="{route}",status="{status}"}} {count}')
    lines.append("# TYPE bazbii_api_request_duration_seconds histogram")
    for route, counts in sorted(_hist.items()):
        for bound, count in zip(BUCKETS, counts):
            lines.append(f'bazbii_api_request_duration_seconds_bucket{{{labels},route="{route}",le="{bound}"}} {count}')
        lines.append(f'bazbii_api_request_duration_seconds_bucket{{{labels},route="{route}",le="+Inf"}} {_hist_count[route]}')
        lines.append(f'bazbii_api_request_duration_seconds_sum{{{labels},route="{route}"}} {_hist_sum[route]}')
        lines.append(f'bazbii_api_request_duration_seconds_count{{{labels},route="{route}"}} {_hist_count[route]}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


@asynccontextmanager
async def lifespan(app):
    await pool.open(wait=True, timeout=30)
    try:
        yield
    finally:
        await pool.close()


app = Starlette(routes=[
    Route("/posts/{post_id:int}", get_post, methods=["GET"]),
    Route("/posts", create_post, methods=["POST"]),
    Route("/healthz", healthz),
    Route("/readyz", healthz),
    Route("/metrics", metrics),
], lifespan=lifespan)
