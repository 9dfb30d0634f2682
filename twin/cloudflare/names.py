"""Host names against a zone: what Cloudflare stores for a record or load-balancer name."""

from __future__ import annotations

import re
from typing import Optional

LABEL = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)$")


def normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def is_hostname(name: str) -> bool:
    labels = name.split(".")
    if not name or len(name) > 253:
        return False
    if any(not LABEL.match(label) for label in labels):
        return False
    return "*" not in labels[1:]  # a wildcard only as the leftmost label


def fqdn_in_zone(name: str, zone: str, *, relative: bool) -> Optional[str]:
    """The fully qualified name ``name`` stands for in ``zone``, or None when it is outside the zone.

    With ``relative`` (DNS records), ``@`` is the apex and a single label is taken relative to the
    zone, as Cloudflare does (``direct`` -> ``direct.<zone>``). A dotted name must be the zone or end
    with ``.<zone>``: Cloudflare would append the zone to any other name and store a record nobody
    meant (``www.other.example.<zone>``), which the twin refuses instead.
    """
    wanted = normalise(name)
    zone = normalise(zone)
    if relative and wanted == "@":
        return zone
    if relative and wanted and "." not in wanted:
        wanted = f"{wanted}.{zone}"
    if wanted == zone or wanted.endswith("." + zone):
        return wanted
    return None
