"""The twin as one object: the lab's network, the servers and the services production talks to.

    with Twin.start_new(workdir) as twin:
        twin.servers["server1"].ssh("uptime")
        twin.pulumi_prefix()        # run `pulumi` from where the operator stands (the edge)

What runs where, as in production:

==============  =================================================================================
servers         each plan server is a namespace of its own with its sshd (:mod:`twin.server`); the
                program's remote commands run there for real
edge            what is outside the servers: the operator's ``pulumi``, the Cloudflare API emulator,
                the Kubernetes API server (:mod:`twin.lab`)
==============  =================================================================================

Every server of the plan exists from the start, as a machine bought in the console before the step
that declares it; its console spec (:class:`twin.server.Spec`) is what the plan declares for it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from .lab import DEFAULT_SERVERS, EDGE_ADDRESS, Lab
from .server import Spec, TwinServer, keygen
from .wheelhouse import ensure_wheelhouse

# The plan's machines as its stack file declares them at their first step (Pulumi.prod.yaml).
DEFAULT_SPECS = {
    "server1": Spec(vcpu=2, memory_gb=4, disk_gb=100),
    "server2": Spec(vcpu=2, memory_gb=4, disk_gb=100),
    "server3": Spec(vcpu=4, memory_gb=8, disk_gb=500),
}


@dataclass
class Twin:
    workdir: Path
    lab: Lab
    servers: dict[str, TwinServer] = field(default_factory=dict)
    owns_workdir: bool = False

    @property
    def operator_key(self) -> Path:
        return self.workdir / "operator" / "id_ed25519"

    def operator_private_key(self) -> str:
        return self.operator_key.read_text()

    @property
    def edge_address(self) -> str:
        return EDGE_ADDRESS

    @classmethod
    def start_new(cls, workdir: Optional[Path] = None, specs: Optional[Mapping[str, Spec]] = None,
                  addresses: Optional[Mapping[str, str]] = None) -> "Twin":
        owns = workdir is None
        workdir = Path(workdir or tempfile.mkdtemp(prefix="bazbii-twin-"))
        specs = dict(specs or DEFAULT_SPECS)
        addresses = dict(addresses or {name: DEFAULT_SERVERS[name] for name in specs})
        twin = cls(workdir=workdir, lab=Lab(workdir / "lab", servers=addresses), owns_workdir=owns)
        try:
            twin._start(specs)
        except BaseException:
            twin.stop()
            raise
        return twin

    def _start(self, specs: Mapping[str, Spec]) -> None:
        (self.workdir / "operator").mkdir(parents=True, exist_ok=True)
        keygen(self.operator_key, "bazbii-twin-operator")
        wheelhouse = ensure_wheelhouse()
        self.lab.start()
        for name, spec in specs.items():
            server = TwinServer(self.lab, name, spec, self.workdir / "servers" / name, self.operator_key, wheelhouse)
            self.servers[name] = server
            server.start()

    def __enter__(self) -> "Twin":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.lab.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ where the operator stands
    def pulumi_prefix(self) -> list[str]:
        """Prefix for commands that run where the operator's ``pulumi`` runs (the edge namespace)."""
        return self.lab.edge_command([])
