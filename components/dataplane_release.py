"""DataPlaneRelease: the project's data-plane CLIs installed on the servers that run them.

The apply job reaches the servers only over SSH, so the lag gate, the consistency check, the
switchover and the schema runner run *on* the servers (``python -m bazbii_db.replication ...``,
``python -m bazbii_db.migrations ...``). This component puts the code there, per server:

``<name>-install-<server>``  remote.Command, stdin: a reproducible tarball of ``bazbii_db/``, ``bazbii_plan/``,
                             ``migrations/`` and the server's pinned requirements (:func:`bazbii_db.dataplane.release_tarball`,
                             base64, about 100 KB); unpack to ``/opt/bazbii/releases/<digest>``, refresh the
                             virtualenv ``/opt/bazbii/venv`` when the pins changed, switch ``/opt/bazbii/app``

The tarball travels on the SSH session's stdin rather than through ``remote.CopyToRemote``:
a file asset in the inputs would not survive the offline preview's policy wire format, and the
stdin needs no second upload step. It is keyed by the release's content digest: it runs again
exactly when the code, the migrations or the pins change. The components whose commands use the code depend on this one
(through their options), so an update never runs an old CLI against a new plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from bazbii_db.dataplane import (DEFAULT_RUNTIME, Runtime, install_command, release_digest, release_stdin,
                                 release_tarball)
from components._util import TYPE_PREFIX, child_opts, inherit_depends_on

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DataPlaneReleaseArgs:
    servers: Sequence[str]  # where a data-plane command runs in this state
    connections: Mapping[str, remote.ConnectionArgs]  # SSH connection per server
    runtime: Runtime = DEFAULT_RUNTIME
    repo: Path = field(default=REPO_ROOT)


class DataPlaneRelease(pulumi.ComponentResource):
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: DataPlaneReleaseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:DataPlaneRelease", name, None, opts)
        inherit_depends_on(self, opts)
        self.digest = release_digest(args.repo)
        command = install_command(digest=self.digest, runtime=args.runtime)
        self.installed: dict[str, remote.Command] = {}
        release = release_stdin(release_tarball(args.repo))
        for server in args.servers:
            self.installed[server] = remote.Command(
                f"{name}-install-{server}",
                connection=args.connections[server],
                create=command,  # names the release's digest: a new release runs it again
                update=command,
                stdin=release,
                opts=child_opts(self),
            )
        self.ready = list(self.installed.values())
        self.register_outputs({"digest": self.digest, "servers": list(args.servers)})

