"""The rehearsal's API: posts CRUD through PgBouncer, in version 1.9 or 2.0.

Run as ``uvicorn rehearsal.api_app:app`` with the environment:

``BAZBII_DSN``              libpq string to PgBouncer (transaction mode)
``BAZBII_API_VERSION``      ``1.9.0`` or ``2.0.0``; 2.0 reads and writes ``posts.category``
``BAZBII_API_INSTANCE``     a name for the ``X-Api-Instance`` header and the metrics
``BAZBII_FAULT_FILE``       a file holding the fraction of ``/posts`` requests answered 500, read again while
                            the app runs (the twin's pods: a fault injected into a running release; no file or
                            no such file: 0)
``BAZBII_FLAGS``            the feature flags document (:func:`bazbii_plan.flags.flags_document`), read
                            once at start; a missing flag is at rollout 0

Feature flags: 2.0 reads ``new_category_ui``. Its create-post takes the new path (stores the
category the user picked, ``general`` when none) for a user in the flag's cohort
(:func:`bazbii_plan.flags.in_cohort`) or once the old path is removed, and the old path (the
1.x form: ``category`` NULL) for everyone else. The user is the post's ``user_id`` for a write,
the ``X-User-Id`` header otherwise (no user: not in any cohort).

Every new post enqueues a job in ``jobs`` in the same transaction; the workers consume them.
``/metrics`` is the Prometheus text format: requests by route/status and a latency histogram,
labelled with the version and, per flag this version reads, ``flag_<name>="on|off"`` (the path
the request took), so a gate can be scoped to a flag's cohort.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bazbii_plan.flags import ENV_VAR as FLAGS_ENV_VAR
from bazbii_plan.flags import in_cohort

VERSION = os.environ.get("BAZBII_API_VERSION", "1.9.0")
INSTANCE = os.environ.get("BAZBII_API_INSTANCE", "api")
FAULT_FILE = os.environ.get("BAZBII_FAULT_FILE")
FAULT_FILE_SECONDS = 0.5  # how often the fault file is read again
READS_CATEGORY = not VERSION.startswith("1.")
FLAGS: dict = json.loads(os.environ.get(FLAGS_ENV_VAR) or "{}")
NEW_CATEGORY_UI = "new_category_ui"
# The flags this version's code reads (a flag's minAppVersion); any other flag in the document is ignored.
READ_FLAGS: tuple[str, ...] = (NEW_CATEGORY_UI,) if READS_CATEGORY else ()
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (route, status, flag labels) -> count; latency histogram per (route, flag labels)
_requests: dict[tuple[str, int, str], int] = {}
_hist: dict[tuple[str, str], list[int]] = {}
_hist_sum: dict[tuple[str, str], float] = {}
_hist_count: dict[tuple[str, str], int] = {}

# psycopg would auto-prepare after 5 executions; PgBouncer in transaction mode cannot carry that.
pool = AsyncConnectionPool(os.environ.get("BAZBII_DSN", ""), min_size=2, max_size=8, open=False,
                           kwargs={"prepare_threshold": None, "autocommit": False}, timeout=10)


def flag_on(name: str, user_id: int | None) -> bool:
    """Whether ``user_id`` takes flag ``name``'s new path: in its cohort, or its old path is removed."""
    if name not in READ_FLAGS:
        return False
    flag = FLAGS.get(name) or {}
    if flag.get("oldPathRemoved"):
        return True
    return user_id is not None and in_cohort(user_id, int(flag.get("rollout", 0)))


def _user_id(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _flag_labels(user_id: int | None) -> str:
    return "".join(f',flag_{name}="{"on" if flag_on(name, user_id) else "off"}"' for name in READ_FLAGS)


def _observe(route: str, status: int, seconds: float, flag_labels: str) -> None:
    key = (route, flag_labels)
    _requests[(route, status, flag_labels)] = _requests.get((route, status, flag_labels), 0) + 1
    counts = _hist.setdefault(key, [0] * len(BUCKETS))
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            counts[i] += 1
    _hist_sum[key] = _hist_sum.get(key, 0.0) + seconds
    _hist_count[key] = _hist_count.get(key, 0) + 1


def _headers() -> dict[str, str]:
    return {"X-Api-Version": VERSION, "X-Api-Instance": INSTANCE}


_fault_read = {"at": float("-inf"), "rate": 0.0}


def _fault_rate() -> float:
    if FAULT_FILE is None:
        return 0.0
    now = time.monotonic()
    if now - _fault_read["at"] >= FAULT_FILE_SECONDS:
        _fault_read["at"] = now
        try:
            with open(FAULT_FILE) as handle:
                _fault_read["rate"] = float(handle.read().strip() or 0)
        except (OSError, ValueError):
            _fault_read["rate"] = 0.0
    return _fault_read["rate"]


def _injected_fault() -> bool:
    rate = _fault_rate()
    return rate > 0 and random.random() < rate


def observed(route: str):
    """Time and count a handler; the injected fault and any database error are answered here.

    The handler returns ``(status, body)``; an exception (PgBouncer paused past its timeout, a
    server gone) becomes a 503 that the load generator records. ``request.state.user_id`` (the
    ``X-User-Id`` header; a handler may set it) decides the flag labels.
    """

    def wrap(handler):
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            request.state.user_id = _user_id(request.headers.get("x-user-id"))
            status, body = 500, {"error": "injected fault"}
            try:
                if not _injected_fault():
                    status, body = await handler(request)
            except Exception as exc:
                status, body = 503, {"error": type(exc).__name__}
            _observe(route, status, time.perf_counter() - started, _flag_labels(request.state.user_id))
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
    if "user_id" in data:
        request.state.user_id = _user_id(data["user_id"])
    user_id = request.state.user_id
    body = {}
    async with pool.connection() as conn:
        if READS_CATEGORY:
            # The old path stores NULL explicitly: the column's DEFAULT is the backfill's, not the 1.x form's.
            category = (data.get("category") or "general") if flag_on(NEW_CATEGORY_UI, user_id) else None
            cur = await conn.execute(
                "INSERT INTO posts (user_id, title, content, category) VALUES (%s, %s, %s, %s) RETURNING id",
                (user_id, data["title"], data.get("content"), category))
            body["category"] = category
        else:
            cur = await conn.execute("INSERT INTO posts (user_id, title, content) VALUES (%s, %s, %s) RETURNING id",
                                     (user_id, data["title"], data.get("content")))
        (post_id,) = await cur.fetchone()
        await conn.execute("INSERT INTO jobs (post_id, kind) VALUES (%s, 'index')", (post_id,))
    return 201, {"id": post_id, **body}


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok", headers=_headers())


async def metrics(request: Request) -> Response:
    labels = f'version="{VERSION}",instance_name="{INSTANCE}"'
    # The metric names the program's gates query (bazbii_plan.gates DEFAULT_QUERIES), as the real API exports them.
    lines = ["# TYPE http_requests_total counter"]
    for (route, status, flags), count in sorted(_requests.items()):
        lines.append(f'http_requests_total{{{labels},route="{route}"{flags},code="{status}"}} {count}')
    lines.append("# TYPE http_request_duration_seconds histogram")
    for (route, flags), counts in sorted(_hist.items()):
        series = f'{labels},route="{route}"{flags}'
        for bound, count in zip(BUCKETS, counts):
            lines.append(f'http_request_duration_seconds_bucket{{{series},le="{bound}"}} {count}')
        lines.append(f'http_request_duration_seconds_bucket{{{series},le="+Inf"}} {_hist_count[(route, flags)]}')
        lines.append(f'http_request_duration_seconds_sum{{{series}}} {_hist_sum[(route, flags)]}')
        lines.append(f'http_request_duration_seconds_count{{{series}}} {_hist_count[(route, flags)]}')
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
