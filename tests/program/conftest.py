"""Evaluate the real Pulumi program under the SDK mocks for any combination of steps.

The prod stack file is read as the CLI would hand it to the program; its
secrets (not in the file until set) are filled with recognisable secret
placeholders, so tests can check that none of them ever leaks into a
non-secret input.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config
from bazbii_plan.stackfile import read_stack_file
from bazbii_plan.walk import walk
from offline_preview import harness
from offline_preview.harness import REPO_ROOT, Evaluation, config_for_runtime, evaluate_program

SECRET_VALUES = {key: f"PLACEHOLDER-{key}-5f3a9c" for key in SECRET_KEYS}


@dataclass
class Program:
    values: dict[str, Any]
    secret_keys: set[str]
    config: StackConfig
    sequence: list[dict[str, str]]
    _cache: dict = field(default_factory=dict)

    def values_for(self, steps: Optional[dict[str, str]] = None, **overrides: Any) -> dict[str, Any]:
        values = copy.deepcopy(self.values)
        for track, step in (steps or {}).items():
            values[self.config.track_key(track)] = step
        values.update(copy.deepcopy(overrides))
        return values

    def run(self, values: dict[str, Any], secret_keys: Optional[set[str]] = None) -> Evaluation:
        keys = self.secret_keys if secret_keys is None else secret_keys
        return evaluate_program(config_for_runtime(values), [f"bazbii:{k}" for k in sorted(keys)])

    def evaluate(self, steps: Optional[dict[str, str]] = None) -> Evaluation:
        """The program at ``steps`` (tracks not named keep the stack file's current step); cached."""
        key = tuple(sorted((steps or {}).items()))
        if key not in self._cache:
            self._cache[key] = self.run(self.values_for(steps))
        return self._cache[key]

    def at(self, track: str, step: str) -> dict[str, str]:
        """The first combination of the apply-order walk where ``track`` reaches ``step``."""
        for steps in self.sequence:
            if steps[track] == step:
                return steps
        raise KeyError((track, step))


@pytest.fixture(scope="session")
def program() -> Program:
    values, secret_keys, _ = read_stack_file(REPO_ROOT / "Pulumi.prod.yaml")
    for key, value in SECRET_VALUES.items():
        values.setdefault(key, value)
        if values[key] != value:
            values[key] = value
        secret_keys.add(key)
    config = load_stack_config(values, secret_keys)
    return Program(values=values, secret_keys=secret_keys, config=config, sequence=walk(config))


class Captured:
    """What a failed evaluation registered and logged (the harness raises before returning them)."""

    def __init__(self):
        self.monitors: list = []
        self.logs: list = []

    @property
    def resources(self):
        return [r for m in self.monitors for r in m.captured]

    @property
    def errors(self) -> list[str]:
        return [msg for collector in self.logs for level, msg in collector.records if level == "error"]


@pytest.fixture
def captured(monkeypatch) -> Captured:
    box = Captured()

    class Monitor(harness.CapturingMonitor):
        def __init__(self, mocks):
            super().__init__(mocks)
            box.monitors.append(self)

    class Logs(harness._LogCollector):
        def __init__(self):
            super().__init__()
            box.logs.append(self)

    monkeypatch.setattr(harness, "CapturingMonitor", Monitor)
    monkeypatch.setattr(harness, "_LogCollector", Logs)
    return box
