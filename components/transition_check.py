"""The transition check: registered first, every other resource of the stack waits for it.

Under ``pulumi up`` the engine's ``RegisterResource`` returns only after a
resource was applied, and a resource waits for everything it depends on. This
resource therefore carries the last applied record (read back through the self
StackReference) next to the target record of this update, the step names,
requirements and the digests of the plan's steps, and is registered before
anything it guards:

* its provider's ``check(olds, news)`` runs the transition check, the applied
  history check, every time gate (:func:`bazbii_plan.transitions.check_problems`)
  and the live gate of the step applied, as the *applied* record gives it
  (``previous.judgedBy``, bazbii_plan.judging), with the current time taken
  *inside* ``check()``; a failure rejects this registration and nothing that
  depends on it is ever registered;
* every gate policy of the pack reads this resource (its inputs are all
  config-derived, hence known at preview, so MANDATORY stays mandatory), and a
  MANDATORY violation on it stops the update the same way.

No input is a wall-clock value, so ``pulumi preview --save-plan`` followed by
``pulumi up --plan`` sees identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import pulumi
from pulumi.dynamic import (CheckFailure, CheckResult, ConfigureRequest, CreateResult, DiffResult, ResourceProvider,
                            UpdateResult)

from bazbii_analysis.gatecheck import check_input_verdict
from bazbii_plan.facts import GATE_MARKER, SSH_KEY_CONFIG
from bazbii_plan.transitions import check_problems
# The inputs whose change is a change of the check (the provider pickle changes with any code edit).
COMPARED_INPUTS = ("target", "previous", "override", "stepNames", "stepRequires", "stepDigests", "trackKeys")


# The failures name no input: for a failure on a property the engine prints that property's whole value
# first ("property target value {map[history:...]} has a problem: ..."), burying the reason; each reason
# names its bazbii: keys itself.
NO_PROPERTY = ""


def check_failures(news: dict, now: datetime, *, live_gate: bool = True, ssh_key: Optional[str] = None,
                   show: Callable[[str], None] = lambda _text: None) -> list[CheckFailure]:
    """What the provider's ``check()`` refuses at ``now``; ``live_gate=False`` leaves out the live-metric gate
    (the offline preview evaluates it only against an endpoint it was asked to use). ``show`` is given the
    live gate's verdict with its numbers, passed or not."""
    failures = [CheckFailure(NO_PROPERTY, problem) for problem in check_problems(news, now)]
    if live_gate:
        # The live-metric gate of the step this update applies, as the applied record gives it (fails closed).
        verdict = check_input_verdict(news, now, ssh_key)
        if verdict is not None:
            show("\n".join(verdict.lines()))
            failures += [CheckFailure(NO_PROPERTY, problem) for problem in verdict.problems()]
    return failures


def _to_engine(text: str) -> None:
    # The engine shows each line a provider prints among the update's diagnostics (`pulumi preview` and
    # `pulumi up` alike): a preview, and the pull-request comment made of it, carry the gate's numbers.
    print(text, flush=True)


class TransitionCheckProvider(ResourceProvider):
    """Engine-side check of the transition; create/update only store the inputs."""

    def configure(self, req: ConfigureRequest) -> None:
        # The engine hands a dynamic provider the stack's config, secrets decrypted; kept in memory only.
        self._ssh_key = req.config.get(SSH_KEY_CONFIG)

    def check(self, _olds: dict, news: dict) -> CheckResult:
        # The previous record comes from the stack output of the last *successful* update
        # (news["previous"]), not from _olds: this resource is applied first, so its old
        # inputs may belong to an update that failed further on.
        return CheckResult(news, check_failures(news, datetime.now(timezone.utc),
                                                ssh_key=getattr(self, "_ssh_key", None), show=_to_engine))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in COMPARED_INPUTS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], stables=["gate"], delete_before_replace=False)

    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=GATE_MARKER, outs=dict(props))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=dict(news))


@dataclass(frozen=True)
class TransitionCheckArgs:
    step_names: dict[str, list[str]]
    track_keys: dict[str, str]
    target: dict[str, Any]
    previous: pulumi.Input[Optional[dict[str, Any]]]
    previous_source: pulumi.Input[str]
    override: Optional[str]
    # track -> [[step, digest, gate digest], ...] of the plan now; the applied record holds those of the applied steps
    step_digests: dict[str, list[list[str]]]
    # track -> step -> {other track: step it requires}; policies check them against the applied steps
    step_requires: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # What judges each step (criteria, scope, metrics config) is in both records (``judgedBy``): the
    # applied record's decides, the target's is what the next update will be judged by.


class TransitionCheck(pulumi.dynamic.Resource):
    """(previous applied record, target record) of this update, checked before anything changes."""

    def __init__(self, name: str, args: TransitionCheckArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(
            TransitionCheckProvider(),
            name,
            {
                "gate": GATE_MARKER,
                "stepNames": args.step_names,
                "trackKeys": args.track_keys,
                "target": args.target,
                "previous": args.previous,
                "previousSource": args.previous_source,
                "override": args.override,
                "stepRequires": args.step_requires,
                "stepDigests": args.step_digests,
            },
            opts,
        )
