"""The live-metric gate in the offline preview: the same evaluation the phase gate's check makes.

``--metrics URL`` (or ``--metrics config`` for ``bazbii:metrics.endpoint``)
evaluates the gate of the step each previewed transition applies, against
that Prometheus-compatible API, and a failing or inconclusive verdict denies
the transition (unreachable metrics included: fail closed).

Without ``--metrics`` nothing is measured and the preview says so plainly:
the live gate was not evaluated, and ``pulumi preview``/``pulumi up`` will
evaluate it (the phase gate's check resource). The decision not to probe the
configured endpoint by default is deliberate: an offline preview must not
depend on reaching production, and must not pretend it checked it.

The previous step's apply time comes from ``--base-age``; without it a gate
with a soak is inconclusive, and denied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from pydantic import ValidationError
from rich.console import Console

from bazbii_analysis.gatecheck import gated_move, live_gate_inputs, live_gate_verdict
from bazbii_analysis.verdict import Verdict
from bazbii_plan.errors import ConfigError
from bazbii_plan.gates import MetricsConfig

from .scenarios import Transition

FROM_CONFIG = "config"


@dataclass
class LiveGate:
    title: str
    verdict: Optional[Verdict]
    message: str = ""

    @property
    def denied(self) -> bool:
        return self.verdict is not None and not self.verdict.allowed

    def to_json(self) -> dict:
        return {"transition": self.title, "evaluated": self.verdict is not None, "denied": self.denied,
                "message": self.message, "verdict": self.verdict.to_dict() if self.verdict else None}


def not_evaluated_message(track: str, step: str) -> str:
    return (f"live gate of {track} step {step!r} NOT EVALUATED: no metrics endpoint was requested "
            "(--metrics URL, or --metrics config for bazbii:metrics.endpoint); "
            "`pulumi preview` and `pulumi up` evaluate it in the phase gate's check")


def evaluate_live_gates(transitions: list[Transition], metrics: Optional[str],
                        now: Optional[datetime] = None) -> list[LiveGate]:
    """One entry per transition that moves a track one step forward onto a step with criteria."""
    now = now or datetime.now(timezone.utc)
    gates = []
    for transition in transitions:
        if transition.rollback or transition.before is None or transition.previous_record is None:
            continue
        config = transition.after.config
        live = live_gate_inputs(config)
        move = gated_move(live["stepNames"], transition.previous_record.get("steps"), config.current)
        if move is None or move[1] not in live["criteria"].get(move[0], {}):
            continue
        if metrics is None:
            gates.append(LiveGate(transition.title, None, not_evaluated_message(*move)))
            continue
        endpoint = config.metrics.endpoint if metrics == FROM_CONFIG else metrics
        if endpoint is None:
            raise ConfigError(["--metrics config: bazbii:metrics.endpoint is not set in the stack file"])
        try:
            MetricsConfig(endpoint=endpoint)
        except ValidationError:
            raise ConfigError([f"--metrics {metrics}: must be an http(s) URL of a Prometheus-compatible API"]) from None
        live["metrics"]["endpoint"] = endpoint
        verdict = live_gate_verdict(live, transition.previous_record, config.current, config.override, now)
        message = ""
        if verdict and any(s.kind == "soak" and s.value is None for s in verdict.signals):
            message = "the previous step's apply time is unknown offline: give --base-age"
        gates.append(LiveGate(transition.title, verdict, message))
    return gates


def print_live_gates(gates: list[LiveGate], console: Console) -> None:
    for gate in gates:
        console.rule(f"[bold]live gate: {gate.title}", style="dim")
        if gate.verdict is None:
            console.print(gate.message, markup=False, highlight=False)
            continue
        style = "green" if gate.verdict.passed else ("yellow" if gate.verdict.allowed else "red")
        lines = gate.verdict.lines()
        console.print(lines[0], style=style, markup=False, highlight=False)
        for line in lines[1:]:
            console.print(line, markup=False, highlight=False)
        if gate.message:
            console.print(f"  note: {gate.message}", markup=False, highlight=False)
