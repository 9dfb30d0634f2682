"""What ``watch`` reads from the stack itself: its applied record and, for ``bazbii:metrics.ssh``, the SSH key.

This is the package's only Pulumi boundary, and ``pulumi.automation`` is imported inside :func:`read_stack`
alone. The Automation API drives the ``pulumi`` CLI as an operator would (``pulumi stack output
appliedRecord``, ``pulumi config get bazbii:sshPrivateKey``); with Pulumi Cloud a token with the stack's
read permission is enough (it may decrypt the stack's config, it cannot update the stack).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bazbii_plan.facts import APPLIED_RECORD_OUTPUT, SSH_KEY_CONFIG


class StackUnreadable(Exception):
    """The stack's outputs or config could not be read (one-line message)."""


@dataclass(frozen=True)
class StackView:
    applied_record: Optional[dict[str, Any]]  # None: the stack was never updated by this program
    ssh_key: Optional[str] = field(default=None, repr=False)


def read_stack(stack: str, work_dir: Path, *, with_key: bool) -> StackView:
    """The stack's ``appliedRecord`` output, and ``bazbii:sshPrivateKey`` when ``with_key``."""
    from pulumi import automation as auto

    try:
        handle = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        outputs = handle.outputs()
        record = outputs[APPLIED_RECORD_OUTPUT].value if APPLIED_RECORD_OUTPUT in outputs else None
        key = handle.get_config(SSH_KEY_CONFIG).value if with_key else None
    except auto.CommandError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip() and "stderr:" not in line]
        raise StackUnreadable(f"pulumi could not read stack {stack}: {lines[-1] if lines else exc}") from None
    except FileNotFoundError:
        raise StackUnreadable("the pulumi CLI is not on PATH (it reads the stack's applied record)") from None
    return StackView(record if isinstance(record, dict) else None, key)
