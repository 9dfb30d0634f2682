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
import re
import secrets
from datetime import datetime, timedelta
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from bazbii_plan.facts import APPLIED_RECORD
from engine.events import DEBUG_COMMANDS_ENV, Judgement, read_event_log
from engine.workspace import Result, Workspace

from .environment import Twin
from .stack import first_steps, load_prod, twin_stack_document, write_stack_file

STACK = "twin"
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)$")


def _shift_times(value: Any, by: timedelta) -> Any:
    if isinstance(value, str) and ISO_TIME.match(value):
        return (datetime.fromisoformat(value.replace("Z", "+00:00")) - by).isoformat()
    if isinstance(value, dict):
        return {k: _shift_times(v, by) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift_times(v, by) for v in value]
    return value
PACK_CONFIG = Path("policies") / "config.json"


@dataclass
class TwinOperator:
    twin: Twin
    workspace: Workspace
    stack: str = STACK
    document: Optional[dict] = None  # the stack file as written (before the pointers the operator moves later)
    secrets: Optional[dict] = None  # the values set with `pulumi config set --secret`, for the twin's own setup
    policy_pack: Optional[Path] = None  # the pack folder --policy-pack names (None: the program's policies/)

    @classmethod
    def create(cls, twin: Twin, steps: Optional[Mapping[str, str]] = None, stack: str = STACK,
               document: Optional[Mapping[str, Any]] = None) -> "TwinOperator":
        """A workspace on the engine build (its CLI and installed plugins) holding the program and the stack:
        the twin's stack file (at ``steps``, default the first ones) or ``document`` as it is."""
        workspace = Workspace.create(prefix="bazbii-twin-operator-", parent=twin.scratch)
        operator = cls(twin, workspace, stack)
        try:
            operator._prepare(steps, document)
        except BaseException:
            workspace.cleanup()
            raise
        return operator

    def _prepare(self, steps: Optional[Mapping[str, str]], document: Optional[Mapping[str, Any]]) -> None:
        ws, twin = self.workspace, self.twin
        ws.copy_program()
        tmp = ws.root / "tmp"  # the Kubernetes provider leaves the kubeconfig in $TMPDIR: keep it in here
        tmp.mkdir()
        ws.extra_env["TMPDIR"] = str(tmp)
        if twin.kube is not None:
            ws.extra_env["KUBECONFIG"] = str(twin.kube.kubeconfig)
        ws.login()
        ws.stack_init(self.stack)
        if document is None:
            prod = load_prod()
            document = twin_stack_document(prod, {name: s.address for name, s in twin.servers.items()},
                                           steps=steps or first_steps(prod))
        write_stack_file(document, ws.project / f"Pulumi.{self.stack}.yaml")
        self.document = dict(document)
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
    def pulumi(self, *args: str, check: bool = True, timeout: float = 900, wrap: Sequence[str] = ()) -> Result:
        """``pulumi ARGS --stack <stack>`` from the edge (``wrap``: a command it runs under, e.g. faketime)."""
        return self.workspace.run(*args, "--stack", self.stack, check=check, timeout=timeout,
                                  prefix=[*self.twin.pulumi_prefix(), *wrap])

    def policy_args(self) -> list[str]:
        pack = self.policy_pack or self.workspace.project / "policies"
        return ["--policy-pack", str(pack),
                "--policy-pack-config", str(self.workspace.project / PACK_CONFIG)]

    @property
    def stack_file(self) -> Path:
        return self.workspace.project / f"Pulumi.{self.stack}.yaml"

    def use_stack_document(self, document: Mapping[str, Any]) -> None:
        """Make the stack file ``document``'s ``bazbii:`` values (a pull request's stack file), keeping what was
        set with the CLI: the secrets (ciphertext) and the providers' settings."""
        current = yaml.safe_load(self.stack_file.read_text())
        kept = {k: v for k, v in current["config"].items()
                if (isinstance(v, dict) and set(v) == {"secure"}) or not k.startswith("bazbii:")}
        proposed = {k: v for k, v in document["config"].items() if k.startswith("bazbii:") and k not in kept}
        write_stack_file({**current, "config": {**proposed, **kept}}, self.stack_file)

    def set_applied_record(self, record: Optional[Mapping[str, Any]]) -> None:
        """Make the stack's last outputs say ``record`` was applied (what the program reads back through its
        self StackReference); ``None``: a stack that was never deployed. Replaces the stack's resources."""
        exported = self.pulumi("stack", "export").json()
        resources = []
        if record is not None:
            resources.append({"urn": f"urn:pulumi:{self.stack}::bazbii::pulumi:pulumi:Stack::bazbii-{self.stack}",
                              "custom": False, "type": "pulumi:pulumi:Stack",
                              "outputs": {"appliedRecord": dict(record)}})
        exported["deployment"]["resources"] = resources
        self.workspace.import_state(self.stack, exported)

    def age_applied_record(self, by: timedelta) -> None:
        """Every time the stack's applied record holds, ``by`` earlier: the waits the plan asks for (an old DNS
        TTL to expire, a soak) are over, through the applied times themselves. In the root stack's output (what
        the next update reads back) and in the applied-record resource (what it stamps the next record from)."""
        exported = self.pulumi("stack", "export", "--show-secrets").json()
        for resource in exported["deployment"].get("resources", []):
            if resource["type"] == "pulumi:pulumi:Stack" or resource["urn"].endswith(f"::{APPLIED_RECORD}"):
                for field in ("inputs", "outputs"):
                    if field in resource:
                        resource[field] = _shift_times(resource[field], by)
        self.workspace.import_state(self.stack, exported)

    def set_steps(self, **pointers: str) -> None:
        """``pulumi config set bazbii:<pointer> <step>`` for each track pointer given (e.g. phase="traffic-10")."""
        for key, step in pointers.items():
            self.workspace.config_set(self.stack, f"bazbii:{key}", step)

    def preview(self, *args: str, check: bool = True) -> Result:
        return self.pulumi("preview", "--non-interactive", *self.policy_args(), *args, check=check)

    def up(self, *args: str, check: bool = True) -> Result:
        return self.pulumi("up", "--yes", "--non-interactive", *self.policy_args(), *args, check=check)

    def judged(self, command: str, *args: str) -> Judgement:
        """``pulumi preview`` or ``up`` with the policy pack, and what the engine decided (its event log)."""
        log = self.workspace.root / f"events-{command}.jsonl"
        log.unlink(missing_ok=True)
        self.workspace.extra_env.update(DEBUG_COMMANDS_ENV)
        extra = ("--yes",) if command == "up" else ()
        result = self.pulumi(command, "--non-interactive", *extra, *self.policy_args(), "--event-log", str(log),
                             *args, check=False)
        return read_event_log(log, result.returncode, result.output)

    def export(self) -> dict:
        return self.pulumi("stack", "export", "--show-secrets").json()

    def outputs(self) -> dict:
        return self.pulumi("stack", "output", "--json", "--show-secrets").json()

    def cleanup(self) -> None:
        self.workspace.cleanup()

