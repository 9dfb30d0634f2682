"""The live gate as the phase gate's check resource (and ``./preview``) call it: one function.

The gate of a step is the one the **applied** plan gives it: the criteria, the
metrics config and the rollback triggers of the last applied record
(``judgedBy`` and its state, bazbii_plan.judging), never those of the pull
request that applies the step. Both records are config-derived inputs of the
transition check (no clock, no verdict), so ``--save-plan``/``--plan`` keep
working. The provider's ``check(olds, news)`` then makes one call, with the
time read inside ``check()`` and the SSH key of ``bazbii:sshPrivateKey`` (the
stack config its ``configure()`` was given; ``bazbii:metrics.ssh``)::

    verdict = check_input_verdict(news, datetime.now(timezone.utc), ssh_key)

prints ``verdict.lines()`` (the engine shows a provider's output among the
update's diagnostics, so a preview carries the numbers) and turns each line
of ``verdict.problems()`` into a ``CheckFailure``. Only a track moving exactly one
step forward is gated; a rollback is never held back by metrics (it is the
remedy), and an update that moves nothing has nothing to measure. An applied
record exported before ``judgedBy`` existed is judged by the target's copy,
for that one update.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from bazbii_plan.gates import MetricsConfig
from bazbii_plan.judging import ROLLBACK_SECTION, TIME_SCALE_KEY, Judging, judged_by
from bazbii_plan.models import Rollback
from bazbii_plan.plan import Step
from bazbii_plan.record import JUDGED_BY, is_record
from bazbii_plan.stackconfig import StackConfig
from bazbii_plan.moves import moves

from .evaluate import evaluate_step_gate
from .prometheus import PrometheusClient
from .reach import metrics_client
from .verdict import Verdict

# The check input a live-gate failure is reported on: the applied record, whose gate it is.
LIVE_GATE_INPUT = "previous"


SERVERS_SECTION = "servers"  # the state section a metrics SSH route's server is looked up in


def live_gate_inputs(stack: StackConfig) -> dict[str, Any]:
    """A stack config's own live-gate data: every step's criteria, the metrics config and the rollback triggers."""
    state = stack.state().to_config()
    record = {"state": {ROLLBACK_SECTION: state[ROLLBACK_SECTION], SERVERS_SECTION: state[SERVERS_SECTION]},
              JUDGED_BY: judged_by(stack.plan, stack.metrics, stack.time_scale)}
    inputs = record_live_gate({name: track.names() for name, track in stack.plan.tracks.items()}, record, None)
    if inputs is None:  # the stack's own judgedBy, written by this program, always parses
        raise ValueError("the stack's own live-gate data (judgedBy) does not parse")
    return inputs


def record_live_gate(step_names: dict[str, list[str]], previous: Optional[dict[str, Any]],
                     target: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The live-gate data of an update: the applied record's; the target's only when the applied one has none.

    With it the servers of that record's state: where ``bazbii:metrics.ssh.server`` is looked up.
    """
    for record in (previous, target):
        judging = Judging.of_record(record)
        if record is not None and judging is not None:  # of_record(None) is None
            servers = ((record.get("state") or {}).get(SERVERS_SECTION)) or {}
            return {**judging.live_gate(step_names), SERVERS_SECTION: dict(servers)}
    return None


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
    ssh_key: Optional[str] = None,
) -> Optional[Verdict]:
    """The verdict for the step this update applies, or None when no step is gated.

    Without ``client`` the metrics are read as ``bazbii:metrics`` says: directly, or over SSH with ``ssh_key``.
    """
    previous_steps = (previous_record or {}).get("steps")
    move = gated_move(live_gate["stepNames"], previous_steps, target_steps)
    if move is None:
        return None
    track, step_name = move
    raw = (live_gate.get("criteria") or {}).get(track, {}).get(step_name)
    step = Step(name=step_name, summary="-", gate="-", rollback="-", criteria=raw)
    metrics = MetricsConfig.model_validate(live_gate.get("metrics") or {})
    owned = None
    if client is None and metrics.endpoint is not None and step.criteria is not None:
        client = owned = metrics_client(metrics, live_gate.get(SERVERS_SECTION) or {}, ssh_key)
    try:
        return evaluate_step_gate(
            step, track, (previous_record or {}).get("since") or {}, metrics,
            Rollback.model_validate(live_gate.get("rollback") or {}),
            now, client=client, override=override or None, time_scale=int(live_gate.get(TIME_SCALE_KEY) or 1),
        )
    finally:
        if owned is not None:
            owned.close()


def live_gate_problems(
    live_gate: Optional[dict[str, Any]],
    previous_record: Optional[dict[str, Any]],
    target_steps: dict[str, str],
    override: Optional[str],
    now: datetime,
    *,
    ssh_key: Optional[str] = None,
) -> list[str]:
    """Lines to report as check failures (empty: the step may proceed)."""
    if not live_gate:
        return []
    verdict = live_gate_verdict(live_gate, previous_record, target_steps, override, now, ssh_key=ssh_key)
    return verdict.problems() if verdict else []


def check_input_verdict(inputs: dict[str, Any], now: datetime, ssh_key: Optional[str] = None) -> Optional[Verdict]:
    """The live gate from the transition check's own inputs (``previous``, ``target``, ``stepNames``, ``override``);
    None when this update applies no gated step."""
    previous = inputs.get("previous") if is_record(inputs.get("previous")) else None
    target = inputs.get("target") or {}
    live_gate = record_live_gate({k: list(v) for k, v in (inputs.get("stepNames") or {}).items()}, previous, target)
    if not live_gate:
        return None
    return live_gate_verdict(live_gate, previous, target.get("steps") or {}, inputs.get("override"), now,
                             ssh_key=ssh_key)


def check_input_problems(inputs: dict[str, Any], now: datetime, ssh_key: Optional[str] = None) -> list[str]:
    """:func:`check_input_verdict`'s lines to report as check failures (empty: the step may proceed)."""
    verdict = check_input_verdict(inputs, now, ssh_key)
    return verdict.problems() if verdict else []
