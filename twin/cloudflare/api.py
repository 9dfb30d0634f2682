"""What an endpoint handler receives and returns, and the routes' shape.

A handler is ``handler(store, call) -> Answer`` and raises :class:`~twin.cloudflare.errors.ApiError`
to refuse. The server has already authenticated the call, checked that the account or zone in the
path is one it serves, parsed the JSON body and holds the store's lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import ApiError


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # below /client/v4, for messages
    params: dict  # path parameters: account_id / zone_id and the object's id
    query: dict  # query string, one value per key
    body: Any  # parsed JSON, or None when there was no body


@dataclass(frozen=True)
class Answer:
    result: Any
    status: int = 200
    result_info: Optional[dict] = None


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # e.g. "accounts/{account_id}/load_balancers/pools/{pool_id}"
    handler: Callable
    id_kind: dict = field(default_factory=dict)  # path parameter -> "identifier" | "uuid"


def listing(items: list, query: dict, default_per_page: int = 100, max_per_page: int = 1000) -> Answer:
    """A page of ``items`` with Cloudflare's ``result_info`` (page/per_page from the query)."""
    page = _positive_int(query, "page", 1)
    per_page = min(_positive_int(query, "per_page", default_per_page), max_per_page)
    start = (page - 1) * per_page
    chunk = items[start:start + per_page]
    info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": len(items),
            "total_pages": max(1, math.ceil(len(items) / per_page))}
    return Answer(chunk, result_info=info)


def _positive_int(query: dict, key: str, default: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ApiError(400, 1004, f"Invalid query parameter {key}: must be a positive integer")
    return value


def require_body(call: Call) -> dict:
    if not isinstance(call.body, dict):
        raise ApiError(400, 1001, "Request body must be a JSON object")
    return call.body
