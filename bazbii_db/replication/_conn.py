"""Connection helpers shared by the replication modules.

Every connection here is short-timeout, autocommit and has server-side
prepared statements disabled (PgBouncer in transaction mode cannot carry them).
DSNs carry passwords: :func:`redact_dsn` is the only form that may appear in a
message, a report or a log line.
"""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

_SECRET_KEYS = {"password", "sslpassword"}


def redact_dsn(dsn: str) -> str:
    """``host=... password=secret`` -> ``host=... password=***``; URLs keep no userinfo password."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # unparsable: say nothing about it rather than echo it
        return "<unparsable dsn>"
    shown = []
    for key, value in params.items():
        if key in _SECRET_KEYS:
            value = "***"
        shown.append(f"{key}={value}")
    return " ".join(shown)


def dsn_target(dsn: str) -> str:
    """``host:port/dbname as user``: the identity of a DSN, safe to print and to store in state."""
    params = conninfo_to_dict(dsn)
    return f"{params.get('host', '')}:{params.get('port', '5432')}/{params.get('dbname', '')} as {params.get('user', '')}"


def connect(dsn: str, *, connect_timeout: float = 5.0, application_name: str = "bazbii-replication",
            **kwargs) -> psycopg.Connection:
    """Autocommit connection with a bounded connect time; errors never echo the password."""
    params = conninfo_to_dict(dsn)
    params.setdefault("connect_timeout", str(max(1, int(round(connect_timeout)))))
    params.setdefault("application_name", application_name)
    try:
        return psycopg.connect(autocommit=True, prepare_threshold=None, **params, **kwargs)
    except psycopg.Error as exc:
        raise ConnectionFailed(f"cannot connect to {dsn_target(dsn)}: {scrub(str(exc), dsn)}") from None


def scrub(message: str, *dsns: str) -> str:
    """Remove any password that occurs in ``dsns`` from ``message`` (libpq errors may quote conninfo)."""
    for dsn in dsns:
        try:
            params = conninfo_to_dict(dsn)
        except Exception:
            continue
        for key in _SECRET_KEYS:
            secret = params.get(key)
            if secret:
                message = message.replace(str(secret), "***")
    return re.sub(r"password=\S+", "password=***", message)


class ConnectionFailed(RuntimeError):
    """A server could not be reached; the message names the target but never the password."""
