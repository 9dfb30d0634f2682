"""The live-metric gate in the offline preview: the same gate the phase gate's check evaluates.

The gate of a step is the one the **applied** plan gives it (the previous
record's ``judgedBy``, bazbii_plan.judging), never the proposed file's.

Its time-only part is always evaluated: the soak since the previous step of
the track was applied, from ``--applied``/``--base-age`` (the DNS TTL wait and
a flag's soak are time rules of the policy pack, judged from the same times).
A soak that is not over denies the transition, as the check would. Without
either option the apply time is unknown and the soak is not evaluated.

``--metrics URL`` (or ``--metrics config`` for ``bazbii:metrics.endpoint``)
evaluates the whole gate against that Prometheus-compatible API, and a
failing or inconclusive verdict denies the transition (unreachable metrics
included: fail closed). Without ``--metrics`` the metric parts are NOT
EVALUATED and the preview says so plainly, down to its final line ("policies
passed; live gate not evaluated"): `pulumi preview`/`pulumi up` evaluate
them in the phase gate's check. The decision not to probe the configured
endpoint by default is deliberate: an offline preview must not depend on
reaching production, and must not pretend it checked it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Optional

from pydantic import ValidationError
from rich.console import Console

from bazbii_analysis.evaluate import soak_result
from bazbii_analysis.gatecheck import gated_move, live_gate_inputs, live_gate_verdict, record_live_gate
from bazbii_analysis.verdict import FAIL, PASS, SignalResult, Verdict
from bazbii_plan.errors import ConfigError, config_key
from bazbii_plan.gates import GateCriteria, MetricsConfig, effective_signals, format_value
from bazbii_plan.models import Rollback
from bazbii_plan.record import parse_time

from .scenarios import Transition

FROM_CONFIG = "config"
NO_METRICS = ("no metrics endpoint was requested (--metrics URL, or --metrics config for bazbii:metrics.endpoint); "
              "`pulumi preview` and `pulumi up` evaluate it in the phase gate's check")
UNKNOWN_TIME = "the previous step's apply time is unknown offline: give --base-age or --applied TRACK=STEP@TIME"


@dataclass
class LiveGate:
    """The live gate of one previewed transition: measured (``verdict``), or its time-only part (``soak``)."""

    title: str
    track: str
    step: str
    verdict: Optional[Verdict] = None  # --metrics: the whole gate
    soak: Optional[SignalResult] = None  # without --metrics: the soak (None: the gate has none)
    unmeasured: tuple[str, ...] = ()  # without --metrics: the signals that need metrics
    override: Optional[str] = None
    message: str = ""
    soak_key: str = ""  # where the applied plan sets the soak (bazbii:plan.<track>.steps[i].criteria.soak)

    @property
    def denied(self) -> bool:
        if self.verdict is not None:
            return not self.verdict.allowed
        return self.soak is not None and self.soak.status == FAIL and not self.override

    @property
    def fully_evaluated(self) -> bool:
        """Every part judged: measured, or time-only with its soak known and no metric part."""
        if self.verdict is not None:
            return True
        return not self.unmeasured and (self.soak is None or self.soak.status in (PASS, FAIL))

    def not_evaluated(self) -> list[str]:
        """What was left unjudged, for the final line."""
        if self.fully_evaluated:
            return []
        left = list(self.unmeasured)
        if self.soak is not None and self.soak.status not in (PASS, FAIL):
            left.insert(0, "soak")
        return left

    def lines(self) -> list[str]:
        if self.verdict is not None:
            return self.verdict.lines() + ([f"  note: {self.message}"] if self.message else [])
        name = f"live gate of {self.track} step {self.step!r}"
        if self.soak is not None and self.soak.status == FAIL:
            head = f"{name} FAILED: its soak is not over ({self.soak_key}: {format_value(self.soak.min, 'soak')}, applied)" + (
                f"; let through by bazbii:phaseOverride: {self.override}" if self.override else "")
        elif self.unmeasured:
            head = f"{name} NOT EVALUATED: {NO_METRICS}"
        elif self.soak is not None and self.soak.status != PASS:
            head = f"{name} NOT EVALUATED: {UNKNOWN_TIME}"
        else:
            head = f"{name} PASSED (its gate measures time only)"
        lines = [head]
        if self.soak is not None:
            lines.append(f"  {self.soak.line()}" if self.soak.status in (PASS, FAIL)
                         else f"  {'NOT EVALUATED':<12} soak [previous step] (threshold {self.soak.threshold()}): "
                              f"{UNKNOWN_TIME}")
        if self.unmeasured:
            lines.append(f"  {'NOT EVALUATED':<12} {', '.join(self.unmeasured)}: the metric parts need --metrics")
        return lines

    def to_json(self) -> dict:
        return {"transition": self.title, "track": self.track, "step": self.step,
                "evaluated": self.verdict is not None, "fullyEvaluated": self.fully_evaluated,
                "notEvaluated": self.not_evaluated(), "denied": self.denied, "message": self.message,
                "soak": asdict(self.soak) if self.soak else None,
                "verdict": self.verdict.to_dict() if self.verdict else None}


def not_evaluated_message(track: str, step: str) -> str:
    return f"live gate of {track} step {step!r} NOT EVALUATED: {NO_METRICS}"


def _time_only(title: str, track: str, step: str, live: dict, previous: dict, override: Optional[str],
               now: datetime) -> LiveGate:
    """The soak from the applied times, and which signals are left for the metrics."""
    criteria = GateCriteria.model_validate(live["criteria"][track][step])
    since = parse_time(((previous or {}).get("since") or {}).get(track))
    signals = effective_signals(criteria, Rollback.model_validate(live.get("rollback") or {}))
    index = live["stepNames"][track].index(step)
    return LiveGate(title, track, step, soak=soak_result(criteria, since, now),
                    unmeasured=tuple(s.name for s in signals), override=override,
                    soak_key=config_key(("plan", track, "steps", index, "criteria", "soak")))


def evaluate_live_gates(transitions: list[Transition], metrics: Optional[str],
                        now: Optional[datetime] = None, ssh_key: Optional[str] = None) -> list[LiveGate]:
    """One entry per transition that moves a track one step forward onto a step with (applied) criteria.

    ``metrics``: a URL (read directly) or ``config`` (``bazbii:metrics`` as the check reads it: over SSH with
    ``ssh_key`` when ``bazbii:metrics.ssh`` is set)."""
    now = now or datetime.now(timezone.utc)
    gates = []
    for transition in transitions:
        if transition.rollback or transition.before is None or transition.previous_record is None:
            continue
        config = transition.after.config
        step_names = {name: track.names() for name, track in config.plan.tracks.items()}
        live = record_live_gate(step_names, transition.previous_record, None) or live_gate_inputs(config)
        move = gated_move(step_names, transition.previous_record.get("steps"), config.current)
        if move is None or move[1] not in live["criteria"].get(move[0], {}):
            continue
        if metrics is None:
            gates.append(_time_only(transition.title, *move, live, transition.previous_record, config.override, now))
            continue
        endpoint = config.metrics.endpoint if metrics == FROM_CONFIG else metrics
        if endpoint is None:
            raise ConfigError(["--metrics config: bazbii:metrics.endpoint is not set in the stack file"])
        try:
            MetricsConfig(endpoint=endpoint)
        except ValidationError:
            raise ConfigError([f"--metrics {metrics}: must be an http(s) URL of a Prometheus-compatible API"]) from None
        if metrics == FROM_CONFIG:
            live["metrics"] = dict(live["metrics"], endpoint=endpoint)
        else:  # a URL given on the command line is read directly
            live["metrics"] = {**{k: v for k, v in live["metrics"].items() if k != "ssh"}, "endpoint": endpoint}
        verdict = live_gate_verdict(live, transition.previous_record, config.current, config.override, now,
                                    ssh_key=ssh_key)
        message = ""
        if verdict and any(s.kind == "soak" and s.value is None for s in verdict.signals):
            message = UNKNOWN_TIME
        gates.append(LiveGate(transition.title, *move, verdict=verdict, override=config.override, message=message))
    return gates


def print_live_gates(gates: list[LiveGate], console: Console) -> None:
    for gate in gates:
        console.rule(f"[bold]live gate: {gate.title}", style="dim")
        lines = gate.lines()
        passed = gate.verdict.passed if gate.verdict else gate.fully_evaluated and not gate.denied
        style = "green" if passed else ("red" if gate.denied else "yellow")
        console.print(lines[0], style=style, markup=False, highlight=False)
        for line in lines[1:]:
            console.print(line, markup=False, highlight=False)


def not_evaluated_summary(gates: list[LiveGate]) -> str:
    """For the final line: which gates were left (partly) unjudged, and what of them."""
    return "; ".join(f"{g.track} step {g.step!r}: {', '.join(g.not_evaluated())}" for g in gates if not g.fully_evaluated)
