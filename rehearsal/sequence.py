"""The plan as ``./rehearse`` walks it: every track's steps in apply order, each after the steps of other
tracks its ``requires`` names, and the stack state before and after each move (no servers)."""

from __future__ import annotations

from pathlib import Path

from bazbii_plan.stackconfig import StackConfig
from bazbii_plan.walk import walk
from offline_preview.scenarios import load_side

BASELINE_SECONDS = 30.0  # the load before the first step, what each step's p95 is held to;
# 30 s (3,000 requests at 100/s): a 10 s baseline's p95 differed by 40 % between two idle walks (7.0, 10.1 ms)


def load_config(path: Path) -> StackConfig:
    """The stack file's config as an offline preview reads it (placeholders for the secrets)."""
    return load_side(path).config


def plan_sequence(config: StackConfig, until: str | None) -> list[tuple[str, str, dict, dict]]:
    """(track, step, steps before, steps after) in apply order; the tracks start at their first steps."""
    maps = walk(config)
    out = []
    for before, after in zip(maps, maps[1:]):
        track = next(t for t in after if after[t] != before[t])
        out.append((track, after[track], before, after))
        if until and after[track] == until:
            break
    if until and (not out or out[-1][1] != until):
        raise ValueError(f"--until {until!r}: no such step in the plan's apply order")
    return out


def step_states(config: StackConfig, sequence: list[tuple[str, str, dict, dict]]) -> dict:
    """Step -> (the state before it, the state after it) for :func:`plan_sequence`'s moves."""
    return {step: (config.with_steps(**before).state(), config.with_steps(**after).state())
            for _, step, before, after in sequence}
