"""Roll a track back exactly one step through the Pulumi Automation API, and record why.

This is the package's only Pulumi boundary, and ``pulumi.automation`` is
imported inside :func:`run_rollback` alone: the Automation API drives the
``pulumi`` CLI (``config set`` then ``up`` with the policy pack), exactly as
an operator would by hand::

    pulumi config set --stack prod bazbii:phase traffic-10
    pulumi up --stack prod --policy-pack policies --yes --skip-preview
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional


class RollbackFailed(Exception):
    """The rollback could not be carried out (one-line message)."""


@dataclass(frozen=True)
class RollbackPlan:
    stack: str
    work_dir: Path
    track: str
    track_key: str
    from_step: str
    to_step: str
    policy_pack: Path

    def commands(self) -> list[str]:
        return [
            f"pulumi config set --stack {self.stack} bazbii:{self.track_key} {self.to_step}",
            f"pulumi up --stack {self.stack} --policy-pack {self.policy_pack} --yes --skip-preview",
        ]


def record_rollback(log_file: Path, plan: RollbackPlan, reasons: list[str], at: datetime, *,
                    dry_run: bool, outcome: str, details: Optional[dict] = None) -> dict:
    """Append one JSON line saying what was rolled back, why, and how it ended."""
    entry = {
        "at": at.isoformat(), "stack": plan.stack, "track": plan.track, "key": f"bazbii:{plan.track_key}",
        "from": plan.from_step, "to": plan.to_step, "reasons": reasons, "dryRun": dry_run,
        "commands": plan.commands(), "outcome": outcome, "verdict": details or {},
    }
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as handle:
        handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
    return entry


def run_rollback(plan: RollbackPlan, on_output: Callable[[str], None] = print) -> None:
    """``config set`` the previous step, then ``up`` with the policy pack (Automation API, local program)."""
    from pulumi import automation as auto

    try:
        stack = auto.select_stack(stack_name=plan.stack, work_dir=str(plan.work_dir))
        stack.set_config(f"bazbii:{plan.track_key}", auto.ConfigValue(value=plan.to_step))
        stack.up(policy_packs=[str(plan.policy_pack)], on_output=on_output)
    except auto.CommandError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise RollbackFailed(f"pulumi failed during the rollback to {plan.to_step}: {lines[-1] if lines else exc}") from None
    except auto.errors.InvalidVersionError as exc:
        raise RollbackFailed(f"unusable pulumi CLI: {exc}") from None
    except FileNotFoundError:
        raise RollbackFailed("the pulumi CLI is not on PATH; run the commands by hand") from None
