"""What every reconciler shares: the step context and the two ways a step can stop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bazbii_plan.models import StackState

from ..faults import Faults
from ..services import Services


class StepRefused(RuntimeError):
    """A gate inside a reconciler refused the step before anything changed (nothing to undo)."""


class CheckFailed(RuntimeError):
    """A check after part of the step was applied failed (roll back to the previous state)."""


@dataclass
class Context:
    services: Services
    faults: Faults
    say: Callable[[str], None]
    soak_seconds: float
    gate_timeout: float
    notes: list[str] = field(default_factory=list)    # what the current step did, for the report
    timings: dict = field(default_factory=dict)        # extra figures (switchover window, lag gate)

    def act(self, text: str) -> None:
        self.notes.append(text)
        self.say(text)


def server_of_address(state: StackState, address: str) -> str | None:
    return next((name for name, s in state.servers.items() if s.address == address), None)
