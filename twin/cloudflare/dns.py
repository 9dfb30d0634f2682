"""DNS records of a zone (``zones/{zone_id}/dns_records``).

Refusals answer like Cloudflare's DNS API, HTTP 400 with the DNS error code: 9000 (name), 9004
(record that cannot be proxied), 9005/9006 (A/AAAA content), 9007 (CNAME content), 9021 (TTL),
81053/81054 (CNAME next to other records), 81058 (identical record); a body that does not fit the
record shape is 1004 "DNS Validation Error"; an unknown record id is HTTP 404, code 81044.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from . import fields as f
from .api import Answer, Call, Route, listing, require_body
from .errors import ApiError
from .names import fqdn_in_zone, is_hostname, normalise
from .store import Store, new_identifier, now

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "OPENPGPKEY", "PTR", "TXT", "CAA", "CERT", "DNSKEY", "DS", "HTTPS",
                "LOC", "NAPTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "URI")
# Types whose value is given as structured ``data`` rather than ``content``.
DATA_TYPES = ("CAA", "CERT", "DNSKEY", "DS", "HTTPS", "LOC", "NAPTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "URI")
PROXIABLE = ("A", "AAAA", "CNAME")
MIN_TTL = 60  # 30 on Enterprise zones; the twin's zones are not Enterprise
MAX_TTL = 86400
READ_ONLY = ("id", "zone_id", "zone_name", "created_on", "modified_on", "comment_modified_on", "tags_modified_on",
             "proxiable", "meta", "locked")

RECORD = f.obj(
    name=f.string(nullable=False), type=f.string(*RECORD_TYPES, nullable=False), content=f.string(), ttl=f.number(),
    proxied=f.boolean(), comment=f.string(), tags=f.STRING_LIST, priority=f.number(0, 65535),
    private_routing=f.boolean(), data=f.map_of(f.ANY),
    settings=f.obj(ipv4_only=f.boolean(), ipv6_only=f.boolean(), flatten_cname=f.boolean()),
)


def dns_error(code: int, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


def build_record(store: Store, zone_id: str, body: dict, previous: Optional[dict]) -> dict:
    body = {k: v for k, v in body.items() if k not in READ_ONLY}
    try:
        f.check_object(RECORD, body)
    except f.FieldError as error:
        raise dns_error(1004, f"DNS Validation Error: {error}") from None
    zone = store.zones[zone_id]
    record_type = (body.get("type") or "").upper()
    if not record_type:
        raise dns_error(1004, "DNS Validation Error: type is required")
    raw_name = body.get("name") or ""
    name = fqdn_in_zone(raw_name, zone, relative=True)
    if name is None or not is_hostname(name):
        raise dns_error(9000, f"DNS name is invalid: '{raw_name}' is not a name in zone {zone}.")
    content = body.get("content")
    if record_type in DATA_TYPES:
        if body.get("data") is None:
            raise dns_error(1004, f"DNS Validation Error: data is required for {record_type} records")
    elif not content:
        raise dns_error(1004, f"DNS Validation Error: content is required for {record_type} records")
    content = _checked_content(record_type, content)
    ttl = body.get("ttl", 1)
    if ttl is None:
        ttl = 1
    if ttl != 1 and not MIN_TTL <= ttl <= MAX_TTL:
        raise dns_error(9021, f"Invalid TTL. Must be between {MIN_TTL} and {MAX_TTL} seconds, or 1 for automatic.")
    proxied = bool(body.get("proxied", False))
    if proxied and record_type not in PROXIABLE:
        raise dns_error(9004, "This kind of record cannot be proxied.")
    if proxied and ttl != 1:
        # The API stores a proxied record's TTL as 1 (automatic) whatever was sent; the twin refuses
        # instead, so a declared TTL that Cloudflare would silently drop is caught.
        raise dns_error(9021, f"Invalid TTL {ttl:g} for a proxied record. "
                              "Proxied records always use TTL 1 (automatic).")
    if record_type == "MX" and body.get("priority") is None:
        raise dns_error(1004, "DNS Validation Error: priority is required for MX records")
    _check_conflicts(store, zone_id, name, record_type, content, body.get("data"), previous)
    moment = now()
    comment = body.get("comment")
    tags = body.get("tags") or []
    record = {
        "id": previous["id"] if previous else new_identifier(),
        "zone_id": zone_id, "zone_name": zone, "name": name, "type": record_type, "content": content,
        "proxiable": record_type in PROXIABLE, "proxied": proxied, "ttl": ttl,
        "settings": body.get("settings") or {}, "meta": {"auto_added": False, "managed_by_apps": False,
                                                         "managed_by_argo_tunnel": False},
        "comment": comment, "tags": tags,
        "created_on": previous["created_on"] if previous else moment, "modified_on": moment,
    }
    for key in ("priority", "data", "private_routing"):
        if body.get(key) is not None:
            record[key] = body[key]
    if comment is not None:
        changed = previous is None or previous.get("comment") != comment
        record["comment_modified_on"] = moment if changed else previous.get("comment_modified_on", moment)
    if tags:
        changed = previous is None or previous.get("tags") != tags
        record["tags_modified_on"] = moment if changed else previous.get("tags_modified_on", moment)
    return record


def _checked_content(record_type: str, content: Optional[str]) -> Optional[str]:
    if record_type == "A":
        try:
            return str(ipaddress.IPv4Address(content))
        except ValueError:
            raise dns_error(9005, "Content for A record must be a valid IPv4 address.") from None
    if record_type == "AAAA":
        try:
            return str(ipaddress.IPv6Address(content))
        except ValueError:
            raise dns_error(9006, "Content for AAAA record must be a valid IPv6 address.") from None
    if record_type == "CNAME":
        target = normalise(content)
        if not is_hostname(target):
            raise dns_error(9007, "Content for CNAME record is invalid.")
        return target
    return content


def _check_conflicts(store: Store, zone_id: str, name: str, record_type: str, content, data,
                     previous: Optional[dict]) -> None:
    for other in store.all("dns_record", zone_id):
        if previous is not None and other["id"] == previous["id"]:
            continue
        if other["name"] != name:
            continue
        if record_type == "CNAME" or other["type"] == "CNAME":
            # A CNAME owns its name: nothing else may share it, and it may not join other records.
            if record_type == "CNAME":
                raise dns_error(81053, "An A, AAAA, or CNAME record with that host already exists.")
            raise dns_error(81054, "A CNAME record with that host already exists.")
        if other["type"] == record_type and other.get("content") == content and other.get("data") == data:
            raise dns_error(81058, "An identical record already exists.")


def _existing(store: Store, call: Call) -> dict:
    record = store.get("dns_record", call.params["record_id"], call.params["zone_id"])
    if record is None:
        raise dns_error(81044, "Record does not exist.", status=404)
    return record


def list_records(store: Store, call: Call) -> Answer:
    records = store.all("dns_record", call.params["zone_id"])
    zone = store.zones[call.params["zone_id"]]
    if call.query.get("name"):
        wanted = fqdn_in_zone(call.query["name"], zone, relative=True)
        records = [r for r in records if r["name"] == wanted]
    if call.query.get("type"):
        records = [r for r in records if r["type"] == call.query["type"].upper()]
    if call.query.get("content"):
        records = [r for r in records if r.get("content") == call.query["content"]]
    return listing(records, call.query)


def create_record(store: Store, call: Call) -> Answer:
    zone_id = call.params["zone_id"]
    record = build_record(store, zone_id, require_body(call), None)
    store.put("dns_record", record["id"], zone_id, record, action="created")
    return Answer(record)


def get_record(store: Store, call: Call) -> Answer:
    return Answer(_existing(store, call))


def change_record(store: Store, call: Call) -> Answer:
    zone_id = call.params["zone_id"]
    previous = _existing(store, call)
    body = require_body(call)
    if call.method == "PATCH":
        body = {**{k: v for k, v in previous.items() if k not in READ_ONLY}, **body}
    record = build_record(store, zone_id, body, previous)
    store.put("dns_record", record["id"], zone_id, record, action="updated")
    return Answer(record)


def delete_record(store: Store, call: Call) -> Answer:
    record = _existing(store, call)
    store.remove("dns_record", record["id"])
    return Answer({"id": record["id"]})


_BASE = "zones/{zone_id}/dns_records"
_ITEM = _BASE + "/{record_id}"
_IDS = {"record_id": "identifier"}
ROUTES = [
    Route("GET", _BASE, list_records), Route("POST", _BASE, create_record),
    Route("GET", _ITEM, get_record, _IDS), Route("PUT", _ITEM, change_record, _IDS),
    Route("PATCH", _ITEM, change_record, _IDS), Route("DELETE", _ITEM, delete_record, _IDS),
]
