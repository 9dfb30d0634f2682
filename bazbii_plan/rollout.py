"""The zero-downtime rollout rules of a serving Deployment, defined once.

Two callers judge the same settings from two sides: the program's pre-flight
(``components/preflight.py``) reads them from stack config (``bazbii:app.rollout``)
before anything is registered, and the Kubernetes policies
(``policies/rules/kubernetes.py``) read them from the Deployments the program
registers. Both call the functions below, with thresholds from the constants
below (the policy pack's config defaults are these constants), so the two can
never disagree on what a safe rollout is.

Each problem names the ``bazbii:app.rollout`` key that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from .errors import config_key
from .facts import DEFAULT_DRAIN_SECONDS

ROLLOUT_PATH = ("app", "rollout")

MIN_REVISION_HISTORY = 2  # `kubectl rollout undo` needs at least one old ReplicaSet besides the current one
MIN_DRAIN_SECONDS = DEFAULT_DRAIN_SECONDS  # preStop sleep while endpoints and the gateway stop sending requests
# What Kubernetes uses when a Deployment leaves a field unset.
KUBERNETES_DEFAULTS: dict[str, Union[int, str]] = {"maxUnavailable": "25%", "maxSurge": "25%",
                                                   "revisionHistoryLimit": 10, "terminationGracePeriodSeconds": 30}

IntOrPercent = Union[int, float, str]


@dataclass(frozen=True)
class RolloutProblem:
    key: str  # the field under bazbii:app.rollout that fixes it (camelCase)
    requirement: str  # what the setting must be, e.g. "must be 0"
    why: str  # what goes wrong otherwise
    fix: str  # the config change, naming the bazbii: key

    @property
    def config_key(self) -> str:
        return config_key(ROLLOUT_PATH + (self.key,))

    def line(self) -> str:
        """The pre-flight form: ``bazbii:app.rollout.<key>: <requirement>: <why>``."""
        return f"{self.config_key}: {self.requirement}: {self.why}"


def key(name: str) -> str:
    return config_key(ROLLOUT_PATH + (name,))


def is_zero(value: Any) -> bool:
    """0, 0.0, "0" or "0%" (an int-or-percent Kubernetes value)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, str) and value.strip() in ("0", "0%")


def show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def surge_problems(max_surge: IntOrPercent, max_unavailable: IntOrPercent) -> list[RolloutProblem]:
    """A rolling update never removes a serving pod before its replacement is ready, and can still progress."""
    out = []
    if not is_zero(max_unavailable):
        out.append(RolloutProblem(
            "maxUnavailable", "must be 0",
            "a rollout takes serving pods away before their replacements are ready",
            f"set {key('maxUnavailable')}: 0"))
    if is_zero(max_surge):
        out.append(RolloutProblem(
            "maxSurge", "must be >= 1",
            "with maxUnavailable 0, a surge of 0 means the rollout can never progress",
            f"set {key('maxSurge')} to 1 or more"))
    return out


def revision_history_problems(limit: float, minimum: float = MIN_REVISION_HISTORY) -> list[RolloutProblem]:
    if limit >= minimum:
        return []
    return [RolloutProblem(
        "revisionHistoryLimit", f"must be >= {show(minimum)}",
        f"keeping {show(limit)} old ReplicaSets leaves `kubectl rollout undo` too few revisions to go back to",
        f"set {key('revisionHistoryLimit')} to {show(minimum)} or more")]


def drain_problems(drain: float, grace: float, minimum: float = MIN_DRAIN_SECONDS) -> list[RolloutProblem]:
    """The preStop drain lasts at least ``minimum`` and the grace period outlasts it."""
    out = []
    if drain < minimum:
        out.append(RolloutProblem(
            "drainSeconds", f"must be >= {show(minimum)}",
            f"a preStop drain of {show(drain)} s stops pods while endpoints and the gateway still send them requests",
            f"set {key('drainSeconds')} to {show(minimum)} or more"))
    if grace <= max(drain, minimum):
        out.append(RolloutProblem(
            "terminationGracePeriodSeconds", f"must be longer than drainSeconds ({show(max(drain, minimum))})",
            "the preStop sleep counts against the grace period, so the pod is killed before it finishes "
            "in-flight requests",
            f"set {key('terminationGracePeriodSeconds')} above {key('drainSeconds')} plus the longest request"))
    return out


def readiness_problems(min_ready: Optional[float], progress_deadline: Optional[float]) -> list[RolloutProblem]:
    if min_ready is None or progress_deadline is None or progress_deadline > min_ready:
        return []
    return [RolloutProblem(
        "progressDeadlineSeconds", f"must be longer than minReadySeconds ({show(min_ready)})",
        "every new pod must stay ready for minReadySeconds, so the rollout would be declared failed first",
        f"set {key('progressDeadlineSeconds')} above {key('minReadySeconds')}")]


def rollout_problems(
    rollout: Any,
    *,
    min_revision_history: float = MIN_REVISION_HISTORY,
    min_drain_seconds: float = MIN_DRAIN_SECONDS,
) -> list[RolloutProblem]:
    """Every rule on a ``bazbii:app.rollout`` value (a :class:`bazbii_plan.models.Rollout`)."""
    return (
        surge_problems(rollout.max_surge, rollout.max_unavailable)
        + revision_history_problems(rollout.revision_history_limit, min_revision_history)
        + drain_problems(rollout.drain_seconds, rollout.termination_grace_period_seconds, min_drain_seconds)
        + readiness_problems(rollout.min_ready_seconds, rollout.progress_deadline_seconds)
    )
