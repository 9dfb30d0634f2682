"""The operator on the twin: the program checked out, the twin's stack, its secrets, ``pulumi`` from the edge.

    operator = TwinOperator.create(twin, engine)        # a workspace with the program and stack "twin"
    operator.set_steps(phase="server3-provisioned")     # what `pulumi config set bazbii:phase ...` does
    operator.up()                                       # pulumi up --policy-pack <the pack> from the edge

Everything the program's stack needs is set the way an operator sets production's: the five secrets with
``pulumi config set --secret``, the Cloudflare provider's ``baseUrl`` (the emulator) and ``apiToken``, the
Kubernetes provider's ``kubeconfig``; the stack file is the prod one with the twin's values
(:mod:`twin.stack`). ``pulumi`` runs in the edge namespace, with ``KUBECONFIG`` for the program's
``kubectl`` commands, as a CI runner of production would hold it.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from engine.workspace import Result, Workspace

from .environment import Twin
from .stack import first_steps, load_prod, twin_stack_document, write_stack_file

STACK = "twin"
PACK_CONFIG = Path("policies") / "config.json"


@dataclass
class TwinOperator:
    twin: Twin
    workspace: Workspace
    stack: str = STACK
    document: Optional[dict] = None  # the stack file as written (before the pointers the operator moves later)
    secrets: Optional[dict] = None  # the values set with `pulumi config set --secret`, for the twin's own setup

    @classmethod
    def create(cls, twin: Twin, steps: Optional[Mapping[str, str]] = None, stack: str = STACK) -> "TwinOperator":
        """A workspace on the engine build (its CLI and installed plugins) holding the program and the stack."""
        workspace = Workspace.create(prefix="bazbii-twin-operator-")
        operator = cls(twin, workspace, stack)
        try:
            operator._prepare(steps)
        except BaseException:
            workspace.cleanup()
            raise
        return operator

    def _prepare(self, steps: Optional[Mapping[str, str]]) -> None:
        ws, twin = self.workspace, self.twin
        ws.copy_program()
        tmp = ws.root / "tmp"  # the Kubernetes provider leaves the kubeconfig in $TMPDIR: keep it in here
        tmp.mkdir()
        ws.extra_env["TMPDIR"] = str(tmp)
        if twin.kube is not None:
            ws.extra_env["KUBECONFIG"] = str(twin.kube.kubeconfig)
        ws.login()
        ws.stack_init(self.stack)
        prod = load_prod()
        document = twin_stack_document(prod, {name: s.address for name, s in twin.servers.items()},
                                       steps=steps or first_steps(prod))
        write_stack_file(document, ws.project / f"Pulumi.{self.stack}.yaml")
        self.document = document
        secret_values = {
            "bazbii:dbPassword": secrets.token_urlsafe(18),
            "bazbii:replicationPassword": secrets.token_urlsafe(18),
            "bazbii:poolerAdminPassword": secrets.token_urlsafe(18),
            "bazbii:sshPrivateKey": twin.operator_private_key(),
            "bazbii:tunnelSecret": base64.b64encode(secrets.token_bytes(32)).decode(),
        }
        if twin.cloudflare is not None:
            ws.config_set(self.stack, "cloudflare:baseUrl", twin.cloudflare.api_url)
            secret_values["cloudflare:apiToken"] = twin.cloudflare.token
        if twin.kube is not None:
            secret_values["kubernetes:kubeconfig"] = twin.kube.kubeconfig.read_text()
        for key, value in secret_values.items():
            ws.config_set(self.stack, key, value, secret=True)
        self.secrets = secret_values

    # ------------------------------------------------------------------ what the operator runs
    def pulumi(self, *args: str, check: bool = True, timeout: float = 900) -> Result:
        return self.workspace.run(*args, "--stack", self.stack, check=check, timeout=timeout,
                                  prefix=self.twin.pulumi_prefix())

    def policy_args(self) -> list[str]:
        return ["--policy-pack", str(self.workspace.project / "policies"),
                "--policy-pack-config", str(self.workspace.project / PACK_CONFIG)]

    def set_steps(self, **pointers: str) -> None:
        """``pulumi config set bazbii:<pointer> <step>`` for each track pointer given (e.g. phase="traffic-10")."""
        for key, step in pointers.items():
            self.workspace.config_set(self.stack, f"bazbii:{key}", step)

    def preview(self, *args: str, check: bool = True) -> Result:
        return self.pulumi("preview", "--non-interactive", *self.policy_args(), *args, check=check)

    def up(self, *args: str, check: bool = True) -> Result:
        return self.pulumi("up", "--yes", "--non-interactive", *self.policy_args(), *args, check=check)

    def export(self) -> dict:
        return self.pulumi("stack", "export", "--show-secrets").json()

    def outputs(self) -> dict:
        return self.pulumi("stack", "output", "--json", "--show-secrets").json()

    def cleanup(self) -> None:
        self.workspace.cleanup()

