"""Build crafted stack configs from the shipped prod stack file, evaluate the real program under mocks
with a chosen applied record, and run the policy pack on what it registers."""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional, Union

from bazbii_plan.record import next_record
from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config
from bazbii_plan.stackfile import read_stack_file
from bazbii_plan.walk import record_by_walking, walk
from offline_preview.harness import PROGRAM, REPO_ROOT, Evaluation, config_for_runtime, evaluate_program
from policies.offline import Violation, run_policies

GATE_TYPE = "pulumi-python:dynamic:Resource"
# The program under test (the repository's __main__.py unless overridden, e.g. to pin a known-good copy).
TEST_PROGRAM = Path(os.environ.get("BAZBII_POLICY_TEST_PROGRAM") or PROGRAM)


@functools.lru_cache(maxsize=1)
def _prod() -> tuple[dict, frozenset]:
    values, secret_keys, _ = read_stack_file(REPO_ROOT / "Pulumi.prod.yaml")
    for key in SECRET_KEYS:
        values[key] = "offline-placeholder-secret"
        secret_keys.add(key)
    return values, frozenset(secret_keys)


@dataclass
class Stack:
    """Stack config values (without the ``bazbii:`` namespace) and which keys are secrets."""

    values: dict
    secrets: frozenset

    @classmethod
    def prod(cls) -> "Stack":
        values, secrets = _prod()
        return cls(copy.deepcopy(values), secrets)

    def copy(self) -> "Stack":
        return Stack(copy.deepcopy(self.values), self.secrets)

    def key_of(self, track: str) -> str:
        return self.values["plan"][track]["key"]

    def at(self, **steps: str) -> "Stack":
        """The same stack with track pointers moved (``infra="traffic-50"``)."""
        out = self.copy()
        for track, step in steps.items():
            out.values[self.key_of(track)] = step
        return out

    def step(self, track: str, name: str) -> dict:
        """A plan step (mutable, for edits on a copy)."""
        for step in self.values["plan"][track]["steps"]:
            if step["name"] == name:
                return step
        raise KeyError((track, name))

    def edit(self, fn: Callable[["Stack"], Any]) -> "Stack":
        out = self.copy()
        fn(out)
        return out

    def config(self) -> StackConfig:
        return load_stack_config(self.values, set(self.secrets))

    def record(self, applied_at: Optional[str] = None, origin: Optional[str] = "base-file") -> dict:
        """The applied record of this stack as if the plan had been applied step by step."""
        record = record_by_walking(self.config(), applied_at)
        return dict(record, origin=origin) if origin else record


def ago(**delta: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).replace(microsecond=0).isoformat()


@dataclass
class Preview:
    evaluation: Evaluation
    violations: list[Violation]
    record: Optional[dict] = None

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    def names(self, mandatory: bool = True) -> set[str]:
        return {v.policy_name for v in (self.mandatory if mandatory else self.violations)}

    def messages(self, policy: str) -> list[str]:
        return [v.message for v in self.violations if v.policy_name == policy]

    def gate(self):
        return next(r for r in self.evaluation.resources if r.type == GATE_TYPE and r.inputs.get("gate"))

    def explain(self) -> str:
        return "\n".join(f"[{v.enforcement}] {v.message}" for v in self.violations) or "no violations"


def evaluate(target: Stack, previous_record: Optional[dict]) -> Evaluation:
    outputs = {"appliedRecord": previous_record} if previous_record is not None else None
    return evaluate_program(
        config_for_runtime(target.values), [f"bazbii:{k}" for k in target.secrets],
        stack_reference_outputs=outputs, program=TEST_PROGRAM,
    )


def preview(
    target: Stack,
    previous: Union[Stack, dict, None],
    *,
    origin: Optional[str] = "base-file",
    applied_at: Optional[str] = None,
    policy_config: Optional[dict] = None,
    mutate: Optional[Callable[[list], None]] = None,
) -> Preview:
    """Evaluate ``target`` with the applied record of ``previous`` (a Stack, a raw record, or None: never deployed).

    ``mutate`` may edit the captured resources (a list of RegisteredResource) before the policies run.
    """
    record = previous.record(applied_at, origin) if isinstance(previous, Stack) else previous
    evaluation = evaluate(target, record)
    resources = evaluation.resources
    if mutate:
        resources = copy.deepcopy(resources)
        mutate(resources)
    violations = run_policies(resources, policy_config)
    assert_fixes_name_keys(violations)
    return Preview(evaluation, violations, record)


def assert_fixes_name_keys(violations: list[Violation]) -> None:
    """Every violation any policy test provokes tells the user which ``bazbii:`` key to change (issue 9.7)."""
    for v in violations:
        if "during preview" in v.message:  # the SDK's own advisory for an unknown value: no rule text
            continue
        what, sep, fix = v.message.partition(". Fix: ")
        assert sep and "bazbii:" in fix, f"the fix of {v.policy_name} names no bazbii: key: {v.message}"


def plan_walk_records(stack: Stack) -> list[tuple[StackConfig, dict]]:
    """Every state of the plan in apply order, with the (time-less) record after applying it."""
    config = stack.config()
    out, record = [], None
    for steps in walk(config):
        side = config.with_steps(**steps)
        record = next_record(side.current, side.state().to_config(), record, None)
        out.append((steps, dict(record, origin="plan-walk")))
    return out


def of_type(resources: list, type_: str) -> list:
    return [r for r in resources if r.type == type_]
