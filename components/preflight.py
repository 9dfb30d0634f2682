"""Checks that need more than the config schema, run before anything is registered.

The stack config was already validated (``load_or_stop``). What is left needs
rules shared with the policy pack or files next to the program: rollout
settings a zero-downtime Deployment cannot have (:mod:`bazbii_plan.rollout`,
the same rules the Kubernetes policies apply to the registered Deployments),
and the migration files of the schema step. Every step of every track is checked (each track on its own, the others
at their first step, as the config loader does), plus the current combination,
so a bad later step fails now. Problems are reported like config errors:
one ``bazbii:<key>: message`` line each, then a clean stop.
"""

from __future__ import annotations

from typing import Optional

from bazbii_plan.errors import ConfigError
from bazbii_plan.models import StackState
from bazbii_plan.rollout import rollout_problems
from bazbii_plan.stackconfig import StackConfig
from components.schema_release import MigrationBundle, load_bundle
from components.stack_inputs import stop_on_config_errors


def state_problems(state: StackState) -> list[str]:
    lines = [problem.line() for problem in rollout_problems(state.app.rollout)]
    try:
        load_bundle(state.schema_)
    except ConfigError as exc:
        lines += exc.problems
    return lines


def check(stack: StackConfig) -> list[str]:
    """One line per problem: a problem of the current steps once, a problem only some step brings named by it."""
    lines = state_problems(stack.state())
    seen = set(lines)
    firsts = stack.plan.first_steps()
    for track_name, track in stack.plan.tracks.items():
        for step in track.names():
            if stack.current[track_name] == step:
                continue
            other = stack.with_steps(**dict(firsts, **{track_name: step}))
            for line in state_problems(other.state()):
                if line not in seen:  # the same problem in every step is one problem, reported once
                    seen.add(line)
                    lines.append(f"{line} (at step {track_name}={step})")
    return lines


def check_or_stop(stack: StackConfig) -> Optional[MigrationBundle]:
    """The current step's migration bundle (or None); on problems, one error line each and a clean stop."""
    stop_on_config_errors(check(stack))
    return load_bundle(stack.state().schema_)
