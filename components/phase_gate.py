"""The phase gate: the last applied record next to the target record, where policies can read both.

CrossGuard sees only new inputs (pulumi-policy#154). The program therefore
reads its own last applied record back (a StackReference to this very stack,
output ``appliedRecord``) and registers it, together with the target record
of this update, as inputs of one resource: this gate. Policies judge the
transition from those inputs; both are config-derived, so they are known at
preview time and a MANDATORY policy stays mandatory.

The gate is also a dynamic resource, and its provider's ``check(olds, news)``
sees the inputs of the last *successful* update, independent of the stack
output: a second, engine-side line of defence that works even when no policy
pack is passed. The gate depends on every other resource of the stack, so its
record (and the exported ``appliedRecord``) only advances once everything
else of the step was applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

from bazbii_plan.transitions import transition_problems

GATE_MARKER = "bazbii-phase-gate"
APPLIED_RECORD_OUTPUT = "appliedRecord"


class PhaseGateProvider(ResourceProvider):
    """Engine-side check of the step transition; create/update only store the record."""

    def check(self, _olds: dict, news: dict) -> CheckResult:
        olds = _olds or {}
        applied = (olds.get("target") or {}).get("steps") if olds else None
        target = (news.get("target") or {}).get("steps") or {}
        step_names = news.get("stepNames") or {}
        problems = transition_problems(step_names, applied, target, news.get("override"))
        failures = [CheckFailure("target", problem) for problem in problems]
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in ("target", "previous", "override", "stepNames") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], stables=["gate"], delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=GATE_MARKER, outs=dict(props))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=dict(news))


@dataclass(frozen=True)
class PhaseGateArgs:
    step_names: dict[str, list[str]]
    track_keys: dict[str, str]
    target: dict[str, Any]
    previous: pulumi.Input[Optional[dict[str, Any]]]
    previous_source: pulumi.Input[str]
    override: Optional[str]
    evaluated_at: str
    depends_on: Sequence[pulumi.Resource] = ()
    # track -> step -> {other track: step it requires}; policies check them against the applied steps
    step_requires: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # track -> step -> state paths (lists of keys) the step may change; plan-step-scope judges the effective change
    step_scopes: dict[str, dict[str, list[list[str]]]] = field(default_factory=dict)


class PhaseGate(pulumi.dynamic.Resource):
    """One record of (previous applied, target) per update; see the module docstring."""

    target: pulumi.Output[dict]

    def __init__(self, name: str, args: PhaseGateArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            PhaseGateProvider(),
            name,
            {
                "gate": GATE_MARKER,
                "stepNames": args.step_names,
                "trackKeys": args.track_keys,
                "target": args.target,
                "previous": args.previous,
                "previousSource": args.previous_source,
                "override": args.override,
                "evaluatedAt": args.evaluated_at,
                "stepRequires": args.step_requires,
                "stepScopes": args.step_scopes,
            },
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(args.depends_on))),
        )
