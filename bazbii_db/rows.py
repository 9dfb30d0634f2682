"""The one way this package reads the row of a query that always returns one (``SELECT pg_is_in_recovery()``, ...).

psycopg's ``fetchone()`` says ``None`` when there is no row. For these queries that cannot happen with a
working server; if it does (a proxy answering wrongly, a query edited into one that can return nothing),
:class:`NoRowReturned` names the query instead of a ``TypeError`` at ``None[0]``. Where no row is a real
answer (a slot that may not exist, ...), callers keep calling ``fetchone()`` and test for ``None`` themselves.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
from psycopg.abc import Params, QueryNoTemplate

R = TypeVar("R")


class NoRowReturned(RuntimeError):
    """A query that always returns a row returned none. Not a ``psycopg.Error``: no caller may take it for one."""


def fetch_row(cursor: psycopg.Cursor[R], query: QueryNoTemplate | None = None) -> R:
    """The next row of ``cursor``, which must have one; ``query`` (what the cursor ran) names it in the error."""
    row = cursor.fetchone()
    if row is None:
        raise NoRowReturned(f"PostgreSQL returned no row for {_shown(query, cursor.connection)}")
    return row


def one_row(conn: psycopg.Connection[R] | psycopg.Cursor[R], query: QueryNoTemplate,
            params: Params | None = None) -> R:
    """Run ``query``, which always returns a row, and return that row."""
    return fetch_row(conn.execute(query, params), query)


def one_value(conn: psycopg.Connection[Any] | psycopg.Cursor[Any], query: QueryNoTemplate,
              params: Params | None = None) -> Any:
    """The first column of :func:`one_row` (its type is the column's, which only the query knows)."""
    return one_row(conn, query, params)[0]


def _shown(query: QueryNoTemplate | None, conn: psycopg.Connection[Any]) -> str:
    """The query's text on one line, shortened (the text only: parameters, which may be secret, never)."""
    if query is None:
        return "the query"
    if isinstance(query, str):
        text = query
    elif isinstance(query, bytes):
        text = query.decode(errors="replace")
    else:
        try:
            text = query.as_string(conn)
        except Exception:  # only a message is at stake
            text = repr(query)
    text = " ".join(text.split())
    return repr(text if len(text) <= 160 else text[:157] + "...")
