"""What an update or preview of the real engine decided, read from its engine event log.

``pulumi preview|up --event-log FILE`` (a flag the CLI shows with ``PULUMI_DEBUG_COMMANDS=true``, as the
Automation API uses it) writes one JSON engine event per line. ``--json`` output carries no policy
violations; the event log does: ``policyEvent`` (policy name, enforcement level, resource URN, message)
and ``diagnosticEvent`` (severity, URN, message), among them a provider's ``Check`` failures (errors) and
what a provider printed (info: the transition check's live-gate verdict with its numbers); the closing
``summaryEvent`` counts the resources by what the engine did to them (``resourceChanges``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DEBUG_COMMANDS_ENV = {"PULUMI_DEBUG_COMMANDS": "true"}
# How the engine words a provider Check failure (sdk/go/common/diag: "%v resource '%v' has a problem: %v").
CHECK_FAILED = "has a problem: "
# The operations of a summary's resourceChanges that change a resource (apitype.OpType); "same", "read",
# "refresh" and the halves of a replacement ("create-replacement", "delete-replaced", counted as one
# "replace") do not add to the count.
CHANGING_OPS = ("create", "update", "replace", "delete", "import")


@dataclass(frozen=True)
class PolicyViolation:
    policy: str
    level: str  # "mandatory" | "advisory" | ...
    urn: str
    message: str


@dataclass(frozen=True)
class EngineError:
    urn: str
    message: str

    @property
    def check_failure(self) -> str:
        """The reason when this is a provider Check failure, else ""."""
        _, found, reason = self.message.partition(CHECK_FAILED)
        return reason.strip() if found else ""


@dataclass
class Judgement:
    returncode: int
    output: str
    violations: list[PolicyViolation] = field(default_factory=list)
    errors: list[EngineError] = field(default_factory=list)
    printed: list[EngineError] = field(default_factory=list)  # the non-error diagnostics (plugins' output)
    resource_changes: dict[str, int] = field(default_factory=dict)  # the summary's: operation -> resources

    @property
    def changed(self) -> int:
        """How many resources the engine created, updated, replaced, deleted or imported."""
        return sum(self.resource_changes.get(op, 0) for op in CHANGING_OPS)

    @property
    def denied(self) -> bool:
        return self.returncode != 0

    @property
    def mandatory_policies(self) -> set[str]:
        return {v.policy for v in self.violations if v.level == "mandatory"}

    def check_failures(self, resource_name: str) -> list[str]:
        """The provider Check failures reported on the resource named ``resource_name``."""
        return [e.check_failure for e in self.errors if e.urn.endswith(f"::{resource_name}") and e.check_failure]

    def resource_failures(self) -> list[str]:
        """Each error the engine reported on a resource, by its last line (a failed command's own last word:
        its whole script and output come before it); the update's closing errors name no resource."""
        return [e.message.strip().splitlines()[-1] for e in self.errors if e.urn and e.message.strip()]

    def printed_lines(self) -> list[str]:
        """What the plugins printed, line by line (the engine logs a plugin's output with no URN: a line of the
        dynamic providers' process cannot be told apart by resource)."""
        return [line.rstrip() for e in self.printed for line in e.message.splitlines() if line.strip()]


def read_event_log(path: Path, returncode: int, output: str) -> Judgement:
    judgement = Judgement(returncode, output)
    if not path.is_file():
        return judgement
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        if "policyEvent" in event:
            policy = event["policyEvent"]
            judgement.violations.append(PolicyViolation(policy["policyName"], policy.get("enforcementLevel", ""),
                                                        policy.get("resourceUrn", ""), policy.get("message", "")))
        elif "diagnosticEvent" in event:
            diagnostic = event["diagnosticEvent"]
            found = EngineError(diagnostic.get("urn", ""), diagnostic.get("message", ""))
            (judgement.errors if diagnostic.get("severity") == "error" else judgement.printed).append(found)
        elif "summaryEvent" in event:
            changes = event["summaryEvent"].get("resourceChanges") or {}
            judgement.resource_changes = {op: int(n) for op, n in changes.items()}
    return judgement
