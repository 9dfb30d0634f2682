"""Offline preview of the bazbii stack: the real program under the SDK's mocks, judged by the policy pack.

    python -m offline_preview                      # prod: what the current infra step changed, and the next one
    python -m offline_preview --phase traffic-50   # what setting that step now would do
    python -m offline_preview --all                # every step of the plan, forward and one-step rollback
    python -m offline_preview --base old.yaml --config new.yaml   # what a pull request proposes
    python -m offline_preview --base none          # against a stack that was never deployed
    python -m offline_preview --phase dns=switched --applied dns=ttl-lowered@2026-11-28T10:00Z
    add --json for machine-readable output

Needs no Pulumi CLI and no cloud credentials. Exit status: 0 when every
transition passes the policies, 1 on any mandatory violation, 2 on bad
config or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from bazbii_plan.errors import ConfigError

from .harness import REPO_ROOT

EXIT_OK, EXIT_VIOLATIONS, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m offline_preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="prod", help="stack name; reads Pulumi.<stack>.yaml (default: prod)")
    parser.add_argument("--config", type=Path, help="stack file to preview (default: Pulumi.<stack>.yaml)")
    parser.add_argument("--base", type=Path, help="stack file that is applied now; the preview judges base -> --config "
                        "(`--base none`: a stack that was never deployed)")
    parser.add_argument("--base-age", help="how long ago the base was applied (e.g. 2h); the time of every applied "
                        "step not given with --applied, for time gates such as DNS TTL expiry")
    parser.add_argument("--applied", action="append", default=[], metavar="TRACK=STEP@TIME",
                        help="when an applied step was applied (e.g. dns=ttl-lowered@2026-11-28T10:00Z); repeatable")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--phase", help="preview moving to this step now (NAME or TRACK=NAME)")
    scope.add_argument("--all", action="store_true", help="check every step of the plan and its one-step rollback")
    parser.add_argument("--track", default="infra", help="track whose current and next step are shown by default")
    parser.add_argument("--policy-config", type=Path, help="JSON policy config (same shape as `pulumi preview --policy-pack-config`)")
    parser.add_argument("--metrics", help="evaluate the live gate of the step applied against this Prometheus API URL "
                        "('config': bazbii:metrics.endpoint); without it the live gate is reported as not evaluated")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--verbose", action="store_true", help="show every property of created resources")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import scenarios
    from .report import as_json, print_results, summary_table

    console = Console(stderr=False, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # logs and CI: do not wrap tables at the 80-column default
    stack_file = args.config or (REPO_ROOT / f"Pulumi.{args.stack}.yaml")
    try:
        never_deployed = args.base is not None and str(args.base) == scenarios.NEVER_DEPLOYED
        if (args.base_age or args.applied) and (never_deployed or (not args.base and not args.phase)):
            raise ConfigError(["--base-age and --applied apply to --base FILE or --phase previews"])
        policy_config = json.loads(args.policy_config.read_text()) if args.policy_config else None
        if policy_config is not None:
            from policies.offline import PolicyConfigError, resolve_config

            try:
                resolve_config(policy_config)
            except PolicyConfigError as exc:
                raise ConfigError([f"--policy-config {args.policy_config}: {exc}"]) from None
        side = scenarios.load_side(stack_file)
        if never_deployed:
            transitions = [scenarios.never_deployed(side)]
        elif args.base:
            base_age = scenarios.parse_age(args.base_age) if args.base_age else None
            base = scenarios.load_side(args.base)
            applied = scenarios.parse_applied(base.config, args.applied)
            transitions = [scenarios.between_files(base, side, base_age, applied)]
        elif args.all:
            transitions = scenarios.whole_plan(side)
        elif args.phase:
            base_age = scenarios.parse_age(args.base_age) if args.base_age else None
            applied = scenarios.parse_applied(side.config, args.applied)
            transitions = [scenarios.to_step(side, args.phase, scenarios.applied_at_from_age(base_age), applied)]
        else:
            if args.track not in side.config.plan.tracks:
                raise ConfigError([f"--track {args.track}: tracks are {list(side.config.plan.tracks)}"])
            transitions = scenarios.current_and_next(side, args.track)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    results = [scenarios.run_transition(t, policy_config) for t in transitions]
    failed = sum(1 for r in results if r.failed)
    # live-metric gates (bazbii_analysis), see offline_preview/live_gate.py
    from .live_gate import evaluate_live_gates, print_live_gates

    try:
        live_gates = [] if args.all else evaluate_live_gates(transitions, args.metrics)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    denied_by_metrics = {gate.title for gate in live_gates if gate.denied}
    failed = sum(1 for r in results if r.failed or r.transition.title in denied_by_metrics)
    if args.json:
        print(json.dumps({"transitions": as_json(results), "liveGates": [g.to_json() for g in live_gates],
                          "failedTransitions": failed}, indent=2, default=str))
    else:
        if args.all:
            console.print(summary_table(results))
            print_results([r for r in results if r.violations], console, args.verbose)
        else:
            print_results(results, console, args.verbose)
        print_live_gates(live_gates, console)
        verdict = "[red]DENIED[/red]" if failed else "[green]ALLOWED[/green]"
        console.print(f"\n{verdict}: {len(results)} transition(s) checked, {failed} failed")
    return EXIT_VIOLATIONS if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
