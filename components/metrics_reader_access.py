"""MetricsReaderAccess: the pull-request previews' SSH key, allowed to read the metrics and nothing else.

Pull-request previews run the pull request's own code; the only credential they hold is this key
(``bazbii:metrics.ssh.readerPublicKey``; its private half is the ``preview`` environment's secret). On the
server the live gate reads Prometheus through (``bazbii:metrics.ssh.server``), the server's own SSH user
gets one ``authorized_keys`` line for it, ``restrict`` with a forced command that runs only the metrics
client's curl request (``bazbii_analysis/metrics_reader.py``, copied to ``~/.bazbii``):

``<name>-authorize``  remote.Command over the stack's SSH key: the script on stdin, then the line (a previous
                      one replaced); delete removes both. Its command names the script's digest, the key
                      and the endpoint, so a change to any of them runs it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_command import remote

from bazbii_analysis.metrics_reader import MARKER, install_command, remove_command, script_text
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on


@dataclass(frozen=True)
class MetricsReaderAccessArgs:
    server: str  # the server the metrics are read through
    connection: remote.ConnectionArgs  # its SSH connection (the stack's key)
    public_key: str  # bazbii:metrics.ssh.readerPublicKey
    endpoint: str  # bazbii:metrics.endpoint, the only API the reader may ask


class MetricsReaderAccess(pulumi.ComponentResource):
    authorized: remote.Command

    def __init__(self, name: str, args: MetricsReaderAccessArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:MetricsReaderAccess", name, None, opts)
        inherit_depends_on(self, opts)
        command = install_command(args.public_key, args.endpoint)
        self.authorized = remote.Command(
            f"{name}-authorize",
            connection=args.connection,
            create=command,
            update=command,
            delete=remove_command(),
            stdin=script_text(),
            opts=child_opts(self),
        )
        self.register_outputs({"server": args.server, "marker": MARKER, "endpoint": args.endpoint})
