"""Connection helpers shared by the replication modules.

Every connection here is short-timeout, autocommit and has server-side
prepared statements disabled (PgBouncer in transaction mode cannot carry them).
DSNs carry passwords: :func:`redact_dsn` is the only form that may appear in a
message, a report or a log line.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bazbii_db.dsn import describe, redact, redact_params as redact_dsn, with_params  # noqa: F401  (re-exported)

from .errors import ConnectionFailed


def dsn_target(dsn: str) -> str:
    """``host:port/dbname as user``: the identity of a DSN, safe to print and to store in state."""
    return describe(dsn)


def connect(dsn: str, *, connect_timeout: float = 5.0, application_name: str = "bazbii-replication",
            **kwargs) -> psycopg.Connection:
    """Autocommit connection with a bounded connect time; errors never echo the password."""
    given = conninfo_to_dict(dsn)
    defaults = {"connect_timeout": str(max(1, int(round(connect_timeout)))), "application_name": application_name}
    conninfo = with_params(dsn, **{k: v for k, v in defaults.items() if k not in given})  # the DSN's own win
    try:
        return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None, **kwargs)
    except psycopg.Error as exc:
        raise ConnectionFailed(f"cannot connect to {dsn_target(dsn)}: {scrub(str(exc), dsn)}") from None


def scrub(message: str, *dsns: str) -> str:
    """Remove any password that occurs in ``dsns`` from ``message`` (libpq errors may quote conninfo)."""
    return redact(message, *dsns)
