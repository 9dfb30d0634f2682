"""Configuration of the edge's DNS servers: nsd (the zone's authority) and unbound (the clients' caching
resolver, which honours the records' TTLs)."""

from __future__ import annotations

from pathlib import Path


def nsd_conf(dns: Path, bind: str, zone: str = "bazbii.example") -> str:
    return f"""server:
  ip-address: {bind}
  username: ""
  chroot: ""
  database: ""
  zonesdir: "{dns}"
  pidfile: "{dns}/nsd.pid"
  xfrdfile: "{dns}/xfrd.state"
  xfrdir: "{dns}"
  zonelistfile: "{dns}/zone.list"
  logfile: "{dns}/nsd.log"
  rrl-ratelimit: 0
  verbosity: 1
remote-control:
  control-enable: yes
  control-interface: "{dns}/nsd.ctl"
zone:
  name: {zone}
  zonefile: "{dns}/{zone}.zone"
"""


def unbound_conf(dns: Path, bind: str, nsd: str, zone: str = "bazbii.example") -> str:
    # do-not-query-localhost: no, or unbound answers SERVFAIL for a stub on loopback.
    return f"""server:
  interface: {bind}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dns}"
  pidfile: "{dns}/unbound.pid"
  use-syslog: no
  logfile: ""
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: no
  do-ip6: no
  prefetch: no
  verbosity: 0
remote-control:
  control-enable: no
stub-zone:
  name: "{zone}"
  stub-addr: {nsd}
"""
