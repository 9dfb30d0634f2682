"""The live gate as the phase gate's check resource (and ``./preview``) call it: one function.

The Pulumi program puts :func:`live_gate_inputs` (config-derived, no clock, no
verdict) into the check resource's inputs, so ``--save-plan``/``--plan`` keep
working. The provider's ``check(olds, news)`` then calls::

    problems = live_gate_problems(news["liveGate"], previous_record, news["target"]["steps"],
                                  news.get("override"), now=datetime.now(timezone.utc))

and turns each line into a ``CheckFailure``. Only a track moving exactly one
step forward is gated; a rollback is never held back by metrics (it is the
remedy), and an update that moves nothing has nothing to measure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from bazbii_plan.gates import MetricsConfig
from bazbii_plan.models import Rollback
from bazbii_plan.plan import Step
from bazbii_plan.stackconfig import StackConfig
from bazbii_plan.transitions import moves

from .evaluate import evaluate_step_gate
from .prometheus import PrometheusClient
from .verdict import Verdict

LIVE_GATE_INPUT = "liveGate"


def live_gate_inputs(stack: StackConfig) -> dict[str, Any]:
    """Plain data for the check resource: every step's criteria, the metrics config and the rollback triggers."""
    return {
        "stepNames": {name: track.names() for name, track in stack.plan.tracks.items()},
        "criteria": {
            name: {s.name: s.criteria.model_dump(by_alias=True, mode="json") for s in track.steps if s.criteria}
            for name, track in stack.plan.tracks.items()
        },
        "metrics": stack.metrics.model_dump(by_alias=True, mode="json", exclude_defaults=True),
        "rollback": stack.state().rollback.model_dump(by_alias=True, mode="json"),
    }


def gated_move(step_names: dict[str, list[str]], previous: Optional[dict[str, str]],
               target: dict[str, str]) -> Optional[tuple[str, str]]:
    """``(track, step)`` when exactly one track moves one step forward, else None."""
    if not previous:
        return None
    changed = moves(step_names, previous, target)
    if len(changed) == 1 and changed[0].distance == 1:
        return changed[0].track, changed[0].after
    return None


def live_gate_verdict(
    live_gate: dict[str, Any],
    previous_record: Optional[dict[str, Any]],
    target_steps: dict[str, str],
    override: Optional[str],
    now: datetime,
    *,
    client: Optional[PrometheusClient] = None,
) -> Optional[Verdict]:
    """The verdict for the step this update applies, or None when no step is gated."""
    previous_steps = (previous_record or {}).get("steps")
    move = gated_move(live_gate["stepNames"], previous_steps, target_steps)
    if move is None:
        return None
    track, step_name = move
    raw = (live_gate.get("criteria") or {}).get(track, {}).get(step_name)
    step = Step(name=step_name, summary="-", gate="-", rollback="-", criteria=raw)
    return evaluate_step_gate(
        step, track, (previous_record or {}).get("since") or {},
        MetricsConfig.model_validate(live_gate.get("metrics") or {}),
        Rollback.model_validate(live_gate.get("rollback") or {}),
        now, client=client, override=override or None,
    )


def live_gate_problems(
    live_gate: Optional[dict[str, Any]],
    previous_record: Optional[dict[str, Any]],
    target_steps: dict[str, str],
    override: Optional[str],
    now: datetime,
) -> list[str]:
    """Lines to report as check failures (empty: the step may proceed)."""
    if not live_gate:
        return []
    verdict = live_gate_verdict(live_gate, previous_record, target_steps, override, now)
    return verdict.problems() if verdict else []
