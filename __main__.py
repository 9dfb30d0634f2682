"""bazbii prod stack: read and validate config, wire components, export outputs."""

import pulumi

from bazbii_plan.record import next_record, now_iso
from components.applied_record import read_previous_record
from components.phase_gate import APPLIED_RECORD_OUTPUT, PhaseGate, PhaseGateArgs
from components.stack_inputs import load_or_stop

stack = load_or_stop()
state = stack.state()
if stack.override:
    pulumi.log.warn(f"phase override in effect: {stack.override}")

previous, previous_source = read_previous_record()
evaluated_at = now_iso()
step_names = {name: track.names() for name, track in stack.plan.tracks.items()}
target = previous.apply(lambda prev: next_record(stack.current, state.to_config(), prev, evaluated_at))

gate = PhaseGate(
    "phase-gate",
    PhaseGateArgs(
        step_names=step_names,
        track_keys={name: track.key for name, track in stack.plan.tracks.items()},
        target=target,
        previous=previous,
        previous_source=previous_source,
        override=stack.override,
        evaluated_at=evaluated_at,
        depends_on=[],
    ),
)

pulumi.export("steps", stack.current)
pulumi.export(APPLIED_RECORD_OUTPUT, gate.target)
