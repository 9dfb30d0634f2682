"""Connection strings, the one home for both operator CLIs and every database module.

Read from an environment variable or a file, never from argv (:func:`dsn_from_env`,
:func:`dsn_from_file`); shown only as a target (:func:`describe`) or with every password
removed (:func:`redact`, :func:`redact_params`). No Pulumi import.
"""

from __future__ import annotations

import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

REDACTED = "********"


class DsnError(ValueError):
    """A connection string is missing or unreadable (a usage error: CLI exit code 2)."""


def dsn_from_env(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise DsnError(f"environment variable {var} is not set or empty")
    return value.strip()


def dsn_from_file(path: str | os.PathLike) -> str:
    p = Path(path)
    try:
        value = p.read_text().strip()
    except OSError as exc:
        raise DsnError(f"cannot read DSN file {p}: {exc.strerror}") from None
    if not value:
        raise DsnError(f"DSN file {p} is empty")
    return value


def read_dsn(*, env: str | None = None, file: str | os.PathLike | None = None, what: str = "connection string") -> str:
    """The one input rule of both CLIs: the DSN comes from a file (when given) or an environment variable."""
    if file:
        return dsn_from_file(file)
    if env:
        return dsn_from_env(env)
    raise DsnError(f"no {what}: set an environment variable or give a file")


def with_params(dsn: str, **params) -> str:
    return make_conninfo(dsn, **params)


def passwords_in(dsn: str) -> list[str]:
    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return []
    return [str(info["password"])] if info.get("password") else []


def redact(text: str, *dsns: str) -> str:
    """Remove every password of ``dsns`` (and any password=... in ``text``) from a message."""
    out = str(text)
    for dsn in dsns:
        for pw in passwords_in(dsn):
            if pw:
                out = out.replace(pw, REDACTED)
    # generic key=value and URI forms, without regular expressions
    for marker in ("password=", "password ="):
        start = 0
        while True:
            i = out.find(marker, start)
            if i < 0:
                break
            j = i + len(marker)
            k = j
            if k < len(out) and out[k] == "'":
                k = out.find("'", k + 1)
                k = len(out) if k < 0 else k + 1
            else:
                while k < len(out) and not out[k].isspace():
                    k += 1
            out = out[:j] + REDACTED + out[k:]
            start = j + len(REDACTED)
    start = 0
    while True:
        i = out.find("://", start)
        if i < 0:
            break
        at = out.find("@", i)
        end = min([x for x in (out.find(" ", i), out.find("/", i + 3)) if x >= 0] or [len(out)])
        if 0 <= at < end:
            creds = out[i + 3:at]
            if ":" in creds:
                user = creds.split(":", 1)[0]
                out = out[:i + 3] + user + ":" + REDACTED + out[at:]
        start = i + 3
    return out


def describe(dsn: str) -> str:
    """host:port/dbname as user, for messages (never the password)."""
    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable dsn>"
    return f"{info.get('host', 'local')}:{info.get('port', 5432)}/{info.get('dbname', '?')} as {info.get('user', '?')}"


def redact_params(dsn: str) -> str:
    """``host=... password=secret`` -> ``host=... password=********``, every parameter shown."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # unparsable: say nothing about it rather than echo it
        return "<unparsable dsn>"
    return " ".join(f"{k}={REDACTED if k in ('password', 'sslpassword') else v}" for k, v in params.items())


def _kv_value(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "._-/:" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def build_dsn(*, form: str = "kv", **params: object) -> str:
    """The one way this project writes a connection string.

    ``form="kv"``: libpq ``key=value`` (values quoted when needed, ``None`` left out), for every
    operational and migration connection. ``form="url"``: ``postgresql://user:password@host:port/dbname``
    for the application's ``DATABASE_URL`` (needs user, host, port, dbname).
    """
    if form == "kv":
        return " ".join(f"{k}={_kv_value(v)}" for k, v in params.items() if v is not None)
    if form == "url":
        from urllib.parse import quote

        user, host, port, dbname = (params.pop(k) for k in ("user", "host", "port", "dbname"))
        password = params.pop("password", None)
        if params:
            raise ValueError(f"url form takes no extra parameters: {', '.join(sorted(params))}")
        auth = quote(str(user), safe="") + (f":{quote(str(password), safe='')}" if password is not None else "")
        return f"postgresql://{auth}@{host}:{port}/{quote(str(dbname), safe='')}"
    raise ValueError(f"unknown connection string form {form!r} (kv or url)")
