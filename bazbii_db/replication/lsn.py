"""PostgreSQL WAL positions (``pg_lsn``) as plain integers.

``pg_lsn`` text is ``XXXXXXXX/YYYYYYYY`` (high and low 32 bits, hex). Comparing
the text form is wrong (``0/A0`` vs ``0/1000``), so every comparison in this
package goes through :func:`parse_lsn`.
"""

from __future__ import annotations

import re

_LSN_RE = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")


def parse_lsn(text: str | None) -> int | None:
    """``'16/B374D848'`` -> integer byte position; ``None`` stays ``None``."""
    if text is None:
        return None
    match = _LSN_RE.match(str(text))
    if not match:
        raise ValueError(f"not a pg_lsn: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int | None) -> str | None:
    """Integer byte position -> ``'16/B374D848'`` (the server's spelling)."""
    if value is None:
        return None
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"LSN out of range: {value}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def lsn_diff(ahead: int, behind: int | None) -> int | None:
    """Bytes by which ``behind`` trails ``ahead`` (never negative), like ``pg_wal_lsn_diff``."""
    if behind is None:
        return None
    return max(0, ahead - behind)
