"""DnsRecords: the zone's records from ``dns.records``, one ``DnsRecord`` each, named ``<name>-<key>``.

TTL is the record's own (``1`` = automatic, the only value Cloudflare allows
for proxied records). The cutover of a DNS-only record is done in steps of the
``dns`` track, never in one change:

1. ``ttl-lowered``: TTL down (3600 -> 300), content unchanged;
2. ``switched``: new content, at the low TTL, no earlier than one *old* TTL after (1);
3. ``ttl-restored``: TTL back up once the switch has held.

This component declares exactly the state of the current step; the timing
rules between steps (old TTL expired, one change at a time) are checked by the
phase gate and the policies (``policies/rules/dns.py``), which see the last applied record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
import pulumi_cloudflare as cloudflare

from bazbii_plan import models
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on

MANAGED_COMMENT = "managed by the bazbii Pulumi stack (dns track)"


@dataclass(frozen=True)
class DnsRecordsArgs:
    zone_id: str
    zone: str
    records: Mapping[str, models.DnsRecord]


def fqdn(name: str, zone: str) -> str:
    """``@`` -> the zone apex; ``direct`` -> ``direct.<zone>`` (Cloudflare stores full names)."""
    if name == "@":
        return zone
    return name if name == zone or name.endswith("." + zone) else f"{name}.{zone}"


class DnsRecords(pulumi.ComponentResource):
    records: dict[str, cloudflare.DnsRecord]

    def __init__(self, name: str, args: DnsRecordsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:DnsRecords", name, None, opts)
        inherit_depends_on(self, opts)
        self.records = {}
        for key in sorted(args.records):
            record = args.records[key]
            self.records[key] = cloudflare.DnsRecord(
                f"{name}-{key}",
                zone_id=args.zone_id,
                name=fqdn(record.name, args.zone),
                type=record.type,
                content=record.content,
                ttl=record.ttl,
                proxied=record.proxied,
                comment=MANAGED_COMMENT,
                opts=child_opts(self),
            )
        self.register_outputs(
            {"records": {k: {"name": fqdn(r.name, args.zone), "ttl": r.ttl, "content": r.content}
                         for k, r in args.records.items()}}
        )
