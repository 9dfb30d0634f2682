"""Offline preview of the bazbii stack: the real program under the SDK's mocks, judged by the policy pack.

    python -m offline_preview                      # prod: what the current infra step changed, and the next one
    python -m offline_preview --phase traffic-50   # what setting that step now would do
    python -m offline_preview --all                # every step of the plan, forward and one-step rollback
    python -m offline_preview --base old.yaml --config new.yaml   # what a pull request proposes
    python -m offline_preview --base none          # against a stack that was never deployed
    python -m offline_preview --phase dns=switched --applied dns=ttl-lowered@2026-11-28T10:00Z
    python -m offline_preview --shadow-dsn-env SHADOW_DSN   # migration SQL also judged by a shadow run
    add --json for machine-readable output

Needs no Pulumi CLI and no cloud credentials. Exit status: 0 when every
transition passes the policies, 1 on any mandatory violation (or a live gate
that fails: a soak not over, or measured signals with --metrics), 2 on bad
config or arguments: every config and pre-flight problem (the same checks the
program runs before it registers anything) is one line naming its key
(``bazbii:...``), or the option and file it comes from; with ``--json`` the
same problems are the ``errors`` list. The final line says ALLOWED only when
every live gate was judged; "policies passed; live gate not evaluated" when a
part of one was not (its metrics without --metrics, a soak without apply
times), which exits 0, or 3 with ``--require-live-gate``. Exit 4: the check itself could not finish (a
worker process of ``--all`` died or went silent); nothing was judged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from pulumi.errors import RunError
from rich.console import Console
from rich.markup import escape

from bazbii_db.dsn import DsnError, read_dsn
from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV
from bazbii_plan.cli import CliParser, run_main
from bazbii_plan.errors import NAMESPACE, ConfigError

from .harness import REPO_ROOT

if TYPE_CHECKING:  # the scenarios import the program's harness; loaded only when a preview runs
    from .scenarios import Side

EXIT_OK, EXIT_VIOLATIONS, EXIT_BAD_INPUT, EXIT_LIVE_GATE_NOT_EVALUATED, EXIT_NOT_CHECKED = 0, 1, 2, 3, 4


class _Parser(CliParser):
    """Bad arguments are a ConfigError like any other bad input (one line, exit 2, in JSON with --json)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError([f"arguments: {message} (see --help)"])


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m offline_preview", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--ssh-key", type=Path, metavar="FILE",
                        help="with --metrics config and bazbii:metrics.ssh: the private key to read the metrics over SSH")
    parser.add_argument("--require-live-gate", action="store_true",
                        help=f"exit {EXIT_LIVE_GATE_NOT_EVALUATED} when the policies pass but a live gate was not fully "
                        "evaluated (its metric parts need --metrics, its soak --applied/--base-age)")
    shadow = parser.add_mutually_exclusive_group()
    shadow.add_argument("--shadow-dsn-env", metavar="VAR",
                        help="a PostgreSQL 15 server (its connection string in VAR) on which the schema policies run "
                             "each migration stage on a scratch database: PostgreSQL judges its locks, rewrites and "
                             f"dependents (default: ${SHADOW_DSN_ENV}, which the policy pack reads under the Pulumi CLI)")
    shadow.add_argument("--shadow-dsn-file", metavar="PATH", help="the same, read from a file")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="worker processes that check the transitions of --all (default: the CPUs this process "
                        "may use, at most 4; 1 checks them in this process)")
    parser.add_argument("--verbose", action="store_true", help="show every property of created resources")
    return parser


def _load(path: Path, option: str, prefix_keys: bool = False) -> "Side":
    """A stack file, validated like the program does (config loader, then pre-flight); errors name their key.

    A problem with the file itself names the option (``--base FILE: not valid YAML ...``). Key problems of
    the ``--base`` file (``prefix_keys``) are prefixed with the option and file, so the key is never mistaken
    for one of the proposed file.
    """
    from components import preflight

    from . import scenarios

    try:
        side = scenarios.load_side(path)
        problems = preflight.check(side.config)
    except ConfigError as exc:
        problems = exc.problems
    if problems:
        raise ConfigError([
            f"{option} {line}" if line.startswith(f"{path}: ")
            else (f"{option} {path}: {line}" if prefix_keys else line)
            for line in problems
        ])
    return side


def _policy_config(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    from policies.offline import PolicyConfigError, resolve_config

    where = f"--policy-config {path}"
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read: {exc.strerror or exc}"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{where}: not valid JSON: {exc}"]) from None
    if not isinstance(config, dict):
        raise ConfigError([f"{where}: must be a JSON object of policy name -> level or settings"])
    try:
        resolve_config(config)
    except PolicyConfigError as exc:
        raise ConfigError([f"{where}: {exc}"]) from None
    return config


def _ssh_key(args: argparse.Namespace) -> Optional[str]:
    if args.ssh_key is None:
        return None
    if args.metrics != "config":
        raise ConfigError(["--ssh-key: reads the metrics over bazbii:metrics.ssh, so it goes with --metrics config"])
    try:
        return args.ssh_key.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"--ssh-key {args.ssh_key}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None


def _use_shadow_server(args: argparse.Namespace) -> None:
    """The schema policies read the shadow server from $BAZBII_SHADOW_DSN, as they do under the Pulumi CLI."""
    if not (args.shadow_dsn_env or args.shadow_dsn_file):
        return
    option = "--shadow-dsn-env" if args.shadow_dsn_env else "--shadow-dsn-file"
    try:
        os.environ[SHADOW_DSN_ENV] = read_dsn(env=args.shadow_dsn_env, file=args.shadow_dsn_file,
                                             what="shadow server connection string")
    except DsnError as exc:
        raise ConfigError([f"{option}: {exc}"]) from None


def _transitions(args: argparse.Namespace, stack_file: Path) -> list:
    from . import scenarios

    never_deployed = args.base is not None and str(args.base) == scenarios.NEVER_DEPLOYED
    if (args.base_age or args.applied) and (never_deployed or (not args.base and not args.phase)):
        raise ConfigError(["--base-age and --applied apply to --base FILE or --phase previews"])
    if args.require_live_gate and args.all:
        raise ConfigError(["--require-live-gate: --all walks the plan without apply times or metrics, so it evaluates "
                           "no live gate; use it with --phase or --base/--config"])
    base_age = scenarios.parse_age(args.base_age) if args.base_age else None
    side = _load(stack_file, "--config")
    if never_deployed:
        return [scenarios.never_deployed(side)]
    if args.base:
        base = _load(args.base, "--base", prefix_keys=True)
        return [scenarios.between_files(base, side, base_age, scenarios.parse_applied(base.config, args.applied))]
    if args.all:
        return scenarios.whole_plan(side)
    if args.phase:
        applied = scenarios.parse_applied(side.config, args.applied)
        return [scenarios.to_step(side, args.phase, scenarios.applied_at_from_age(base_age), applied)]
    if args.track not in side.config.plan.tracks:
        raise ConfigError([f"--track {args.track}: tracks are {list(side.config.plan.tracks)}"])
    return scenarios.current_and_next(side, args.track)


def error_entry(line: str) -> dict[str, str]:
    """``[--base FILE: ]<key>: <message>`` -> ``{"key", "message"[, "file"]}`` for --json."""
    entry: dict[str, str] = {}
    option, _, rest = line.partition(" ")
    if option in ("--base", "--config") and ": " in rest:
        entry["file"], _, line = rest.partition(": ")
        if not line.startswith(f"{NAMESPACE}:"):  # a problem with the file itself
            return dict(entry, key=option, message=line)
    key, _, message = line.partition(": ")
    return dict(entry, key=key, message=message)


def _bad_input(problems: list[str], as_json: bool) -> int:
    lines = [" ".join(str(p).split()) for p in problems]  # one line per problem, whatever the source wrote
    if as_json:
        print(json.dumps({"errors": [error_entry(line) for line in lines], "transitions": [],
                          "failedTransitions": 0}, indent=2))
    else:
        for line in lines:
            print(line, file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except ConfigError as exc:
        return _bad_input(exc.problems, "--json" in (sys.argv[1:] if argv is None else argv))
    from .parallel import WorkerFailed, check_all, default_jobs
    from .report import as_json, print_results, summary_table

    console = Console(stderr=False, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # logs and CI: do not wrap tables at the 80-column default
    stack_file = args.config or (REPO_ROOT / f"Pulumi.{args.stack}.yaml")
    try:
        _use_shadow_server(args)
        policy_config = _policy_config(args.policy_config)
        transitions = _transitions(args, stack_file)
        if args.jobs is not None and args.jobs < 1:
            raise ConfigError([f"--jobs {args.jobs}: give at least 1 worker process"])
        results = check_all(transitions, policy_config, args.jobs or default_jobs(), shown=args.all)
    except ConfigError as exc:
        return _bad_input(exc.problems, args.json)
    except RunError as exc:  # the program refused its config in a way the pre-flight above did not foresee
        return _bad_input([f"the program stopped before registering anything: {exc}"], args.json)
    except WorkerFailed as exc:
        if args.json:
            print(json.dumps({"errors": [{"key": "--jobs", "message": str(exc)}], "transitions": [],
                              "failedTransitions": 0, "outcome": "not-checked"}, indent=2))
        else:
            print(f"preview not checked: {exc}", file=sys.stderr)
        return EXIT_NOT_CHECKED

    # live-metric gates (bazbii_analysis), see offline_preview/live_gate.py
    from .live_gate import evaluate_live_gates, not_evaluated_summary, print_live_gates

    try:
        live_gates = [] if args.all else evaluate_live_gates(transitions, args.metrics, ssh_key=_ssh_key(args))
    except ConfigError as exc:
        return _bad_input(exc.problems, args.json)
    denied_by_gate = {gate.title for gate in live_gates if gate.denied}
    failed = sum(1 for r in results if r.failed or r.transition.title in denied_by_gate)
    unjudged = not_evaluated_summary(live_gates)
    outcome = "denied" if failed else ("live-gate-not-evaluated" if unjudged else "allowed")
    if args.json:
        print(json.dumps({"errors": [], "transitions": as_json(results), "liveGates": [g.to_json() for g in live_gates],
                          "failedTransitions": failed, "outcome": outcome}, indent=2, default=str))
    else:
        if args.all:
            console.print(summary_table(results))
            print_results([r for r in results if r.violations], console, args.verbose)
        else:
            print_results(results, console, args.verbose)
        print_live_gates(live_gates, console)
        counts = f"{len(results)} transition(s) checked, {failed} failed"
        if failed:
            console.print(f"\n[red]DENIED[/red]: {counts}")
        elif unjudged:
            console.print(f"\n[yellow]policies passed; live gate not evaluated[/yellow]: {counts}; not evaluated: "
                          f"{escape(unjudged)} (--metrics URL evaluates the metrics, --applied/--base-age the soak)")
        else:
            console.print(f"\n[green]ALLOWED[/green]: {counts}")
    if failed:
        return EXIT_VIOLATIONS
    return EXIT_LIVE_GATE_NOT_EVALUATED if unjudged and args.require_live_gate else EXIT_OK


if __name__ == "__main__":
    run_main(main)
