"""Watch the step just applied and roll it back one step on a breach.

    python -m bazbii_analysis.watch                       # prod, infra track, for the next gate's soak
    python -m bazbii_analysis.watch --track release --interval 30 --dry-run
    python -m bazbii_analysis.watch --replica-dsn 'host=203.0.113.13 user=ops dbname=bazbii' \\
        --primary-dsn 'host=203.0.113.12 user=ops dbname=bazbii' --journal-dsn '...'

Run it right after ``pulumi up``. Every ``--interval`` seconds it re-evaluates
the rollback triggers of ``bazbii:rollback`` (error ratio, p95 against 2x its
target) over the last ``--window`` (never reaching back before the step was
applied), scoped to what this step moved (the next step's gate measures it;
``--scope`` overrides), plus the data-consistency triggers given (replica
consistency, migration journal). It runs for ``--duration``, by default the
soak the next step's gate requires.

On a breach it rolls back exactly one step: ``pulumi config set`` of the
previous step and ``pulumi up`` with the policy pack (Automation API), writes
a JSON line to ``--log-file`` saying why, and exits 1. ``--dry-run`` prints the
commands instead. Too few samples or unreachable metrics are not a breach
(nothing says the step is bad) but are shown; if the watch ends without one
conclusive healthy evaluation it exits 1 without rolling back.

Exit status: 0 healthy for the whole duration; 1 rolled back, rollback failed,
or health not verified; 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import psycopg
from pydantic import ValidationError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bazbii_db.migrations.journal import Journal
from bazbii_db.replication import check_consistency, redact_dsn
from bazbii_plan.cli import CliParser, emit, positive_seconds, run_main
from bazbii_plan.errors import ConfigError
from bazbii_plan.gates import MetricsConfig, Scope, duration_seconds, format_duration, rollback_signals
from bazbii_plan.record import parse_time
from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config
from bazbii_plan.stackfile import fill_secret_placeholders, read_stack_file

from .evaluate import evaluate_signals, unmeasured
from .prometheus import PrometheusClient
from .rollback import RollbackFailed, RollbackPlan, record_rollback, run_rollback
from .triggers import DataTrigger, MigrationJournal, ReplicaConsistency, refuse_password
from .verdict import FAIL, INCONCLUSIVE, PASS, UNWINDOWED, SignalResult, overall

EXIT_OK, EXIT_BREACH, EXIT_BAD_INPUT = 0, 1, 2
REPO_ROOT = Path(__file__).resolve().parent.parent
STATUS_STYLE = {PASS: "green", FAIL: "bold red", INCONCLUSIVE: "yellow"}


@dataclass
class WatchSetup:
    stack: str
    config: StackConfig
    track: str
    step: str
    previous: Optional[str]
    scope: Scope
    min_samples: int
    duration: float
    window: float
    since: datetime
    metrics: MetricsConfig
    data_triggers: list[DataTrigger] = field(default_factory=list)


def load_offline_config(path: Path) -> StackConfig:
    """The validated stack config of a stack file; secrets are never needed here (placeholders)."""
    values, secret_keys, _others = read_stack_file(path)
    fill_secret_placeholders(values, secret_keys, SECRET_KEYS)
    return load_stack_config(values, secret_keys)


def watched_scope(config: StackConfig, track: str) -> Scope:
    """What the step just applied moved: what the next step's rollback-trigger gate measures, else its own gate's scope.

    The next step's gate is used only when its signals are the rollback triggers (``signals`` omitted): a gate
    with its own signals (e.g. "no requests reached server1") measures something else.
    """
    steps = config.plan.tracks[track].steps
    index = config.plan.tracks[track].index(config.current[track])
    following = steps[index + 1] if index + 1 < len(steps) else None
    if following is not None and following.criteria is not None and following.criteria.signals is None:
        return following.criteria.scope
    own = steps[index].criteria
    return own.scope if own is not None else Scope()


def next_soak_seconds(config: StackConfig, track: str) -> Optional[float]:
    """The soak the next step's gate requires (how long to watch by default)."""
    steps = config.plan.tracks[track].steps
    index = config.plan.tracks[track].index(config.current[track])
    following = steps[index + 1] if index + 1 < len(steps) else None
    if following is None or following.criteria is None or following.criteria.soak_seconds() <= 0:
        return None
    return float(following.criteria.soak_seconds())


def parse_scope(text: str) -> Scope:
    """``service``, ``canary``, ``pool=server2``, ``server=server3`` -> Scope (ValueError otherwise)."""
    kind, _, name = text.partition("=")
    try:
        return Scope(kind=kind, name=name)
    except ValidationError:
        raise ValueError(f"--scope {text!r}: use service, canary, pool=NAME or server=NAME") from None


def setup_from_args(args: argparse.Namespace, now: datetime) -> WatchSetup:
    problems: list[str] = []
    config = load_offline_config(args.config or REPO_ROOT / f"Pulumi.{args.stack}.yaml")
    if args.track not in config.plan.tracks:
        raise ConfigError([f"--track {args.track}: tracks are {list(config.plan.tracks)}"])
    metrics = config.metrics
    if args.metrics:
        metrics = metrics.model_copy(update={"endpoint": args.metrics})
    if metrics.endpoint is None:
        problems.append("bazbii:metrics.endpoint is not set; give --metrics URL")

    def seconds(option: str, text: Optional[str]) -> Optional[float]:
        if text is None:
            return None
        try:
            return float(duration_seconds(text))
        except ValueError as exc:
            problems.append(f"{option}: {exc}")
            return None

    duration = seconds("--duration", args.duration)
    if duration is None and not args.duration:
        duration = next_soak_seconds(config, args.track)
    scope = watched_scope(config, args.track)
    if args.scope:
        try:
            scope = parse_scope(args.scope)
        except ValueError as exc:
            problems.append(str(exc))
    if duration is None and not args.duration:
        problems.append(f"--duration: the {args.track} track's next step has no soak; say how long to watch (e.g. 1h)")
    window = seconds("--window", args.window) or 300.0
    since = now
    if args.since:
        try:
            since = parse_time(args.since)
        except ValueError:
            problems.append(f"--since {args.since!r}: use an ISO time such as 2026-05-01T12:00:00Z")
    triggers: list[DataTrigger] = []
    for option, value in (("--primary-dsn", args.primary_dsn), ("--replica-dsn", args.replica_dsn),
                          ("--journal-dsn", args.journal_dsn)):
        if value:
            try:
                refuse_password(option, value)
            except ValueError as exc:
                problems.append(str(exc))
    if bool(args.primary_dsn) != bool(args.replica_dsn):
        problems.append("--primary-dsn and --replica-dsn go together (the replica consistency trigger)")
    if problems:
        raise ConfigError(problems)
    if args.primary_dsn:
        triggers.append(replica_consistency(args.primary_dsn, args.replica_dsn))
    if args.journal_dsn:
        triggers.append(migration_journal(args.journal_dsn))
    return WatchSetup(
        stack=args.stack, config=config, track=args.track, step=config.current[args.track],
        previous=config.previous_step(args.track), scope=scope,
        min_samples=args.min_samples if args.min_samples is not None else 100,
        duration=duration or 0.0, window=window, since=since, metrics=metrics, data_triggers=triggers,
    )


# The data triggers run the database tools (bazbii_db); this command is where they are wired in, so that
# neither package's library modules import the other's (triggers.py takes the checks as arguments).
def replica_consistency(primary_dsn: str, replica_dsn: str) -> ReplicaConsistency:
    return ReplicaConsistency(partial(check_consistency, primary_dsn, replica_dsn, attempts=2, catchup_timeout=10.0),
                              f"{redact_dsn(primary_dsn)} vs {redact_dsn(replica_dsn)}")


def migration_journal(dsn: str) -> MigrationJournal:
    def entries() -> list:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            return Journal(conn).entries()

    return MigrationJournal(entries, redact_dsn(dsn))


def evaluate_triggers(setup: WatchSetup, client: PrometheusClient, now: datetime) -> list[SignalResult]:
    """One round: the rollback triggers of bazbii:rollback over the window, then the data triggers."""
    window = min(setup.window, max(0.0, (now - setup.since).total_seconds()))
    signals = rollback_signals(setup.config.state().rollback)
    if window < 1:
        results = unmeasured(signals, setup.scope, "the step was applied less than 1 s ago")
    else:
        results = evaluate_signals(client, setup.metrics, signals, setup.scope, window_seconds=window, now=now,
                                   min_samples=setup.min_samples)
    return results + [trigger.run() for trigger in setup.data_triggers]


def render(setup: WatchSetup, results: list[SignalResult], elapsed: float, rounds: int) -> Group:
    table = Table(title=(f"watch {setup.stack}: {setup.track} at {setup.step!r} "
                         f"({format_duration(elapsed)} of {format_duration(setup.duration)}, round {rounds})"))
    for column in ("trigger", "scope", "value", "threshold", "window", "samples", "status"):
        table.add_column(column)
    for result in results:
        table.add_row(Text(result.name), Text(result.scope), result.shown_value(), result.threshold(),
                      format_duration(result.window_seconds) if result.kind not in UNWINDOWED else "-",
                      f"{result.samples:.0f}" if result.samples is not None else "-",
                      f"[{STATUS_STYLE[result.status]}]{result.status}[/]")
    notes = [r for r in results if r.reason]
    reasons = Table.grid()
    for result in notes:
        reasons.add_row(Text(f"{result.name}: {result.reason}", style="dim"))
    return Group(table, reasons)


def watch(setup: WatchSetup, args: argparse.Namespace, console: Console,
          clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), summary: Optional[dict] = None) -> int:
    """Watch until the duration is over or a trigger breaches; ``summary`` (for --json) gets the outcome."""
    start = clock()
    results: list[SignalResult] = []
    healthy_rounds = rounds = 0
    with PrometheusClient(setup.metrics.endpoint, timeout=setup.metrics.timeout_seconds) as client, \
            Live(console=console, auto_refresh=False, transient=not console.is_terminal) as live:
        while True:
            now = clock()
            results = evaluate_triggers(setup, client, now)
            rounds += 1
            live.update(render(setup, results, (now - start).total_seconds(), rounds), refresh=True)
            status = overall(results)
            if not console.is_terminal:  # logs get one line per round instead of the live table
                console.print(f"round {rounds} ({format_duration((now - start).total_seconds())}): {status}; "
                              + "; ".join(f"{r.name} {r.shown_value()} {r.status}"
                                          + (f" ({r.reason})" if r.reason and r.status != PASS else "")
                                          for r in results),
                              highlight=False, markup=False)
            if status == FAIL:
                break
            healthy_rounds += status == PASS
            if (clock() - start).total_seconds() + args.interval > setup.duration:
                break
            time.sleep(args.interval)
    for result in results:
        console.print(f"  {result.line()}", highlight=False, markup=False)
    if summary is not None:
        outcome = {FAIL: "breach", PASS: "healthy" if healthy_rounds else "not-verified"}.get(overall(results),
                                                                                           "not-verified")
        summary.update(track=setup.track, step=setup.step, previous=setup.previous, rounds=rounds,
                       healthy_rounds=healthy_rounds, outcome=outcome, results=[asdict(r) for r in results])
    if overall(results) == FAIL:
        return _roll_back(setup, args, console, [r for r in results if r.status == FAIL], clock())
    if healthy_rounds == 0 or overall(results) != PASS:
        console.print(f"[yellow]NOT VERIFIED[/]: {setup.track} at {setup.step!r} was not measured healthy "
                      f"({healthy_rounds} of {rounds} rounds conclusive and healthy, last round {overall(results)}); "
                      "nothing was rolled back", highlight=False)
        return EXIT_BREACH
    console.print(f"[green]HEALTHY[/]: {setup.track} at {setup.step!r} for {format_duration(setup.duration)} "
                  f"({rounds} rounds)", highlight=False)
    return EXIT_OK


def _roll_back(setup: WatchSetup, args: argparse.Namespace, console: Console, breaches: list[SignalResult],
               now: datetime) -> int:
    reasons = [r.line() for r in breaches]
    track = setup.config.plan.tracks[setup.track]
    step = track.steps[track.index(setup.step)]
    if setup.previous is None or not step.reversible:
        why = "it is the first step" if setup.previous is None else "the plan marks it irreversible by config"
        console.print(f"[bold red]BREACH[/] on {setup.track} at {setup.step!r}, but it cannot be rolled back by "
                      f"config ({why}): {step.rollback}", highlight=False)
        return EXIT_BREACH
    plan = RollbackPlan(stack=setup.stack, work_dir=args.work_dir, track=setup.track, track_key=track.key,
                        from_step=setup.step, to_step=setup.previous, policy_pack=args.policy_pack)
    console.print(f"[bold red]BREACH[/]: rolling {setup.track} back one step, {setup.step} -> {setup.previous}",
                  highlight=False)
    details = {"breaches": [r.__dict__ for r in breaches]}
    if args.dry_run:
        for command in plan.commands():
            console.print(f"  would run: {command}", highlight=False)
        record_rollback(args.log_file, plan, reasons, now, dry_run=True, outcome="dry-run", details=details)
        return EXIT_BREACH
    try:
        run_rollback(plan, on_output=lambda line: console.print(line.rstrip("\n"), highlight=False, markup=False))
    except RollbackFailed as exc:
        record_rollback(args.log_file, plan, reasons, now, dry_run=False, outcome=f"failed: {exc}", details=details)
        console.print(f"[bold red]ROLLBACK FAILED[/]: {exc}", highlight=False)
        return EXIT_BREACH
    record_rollback(args.log_file, plan, reasons, now, dry_run=False, outcome="rolled back", details=details)
    console.print(f"rolled back: bazbii:{track.key} = {setup.previous} (recorded in {args.log_file})", highlight=False)
    return EXIT_BREACH


def _parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m bazbii_analysis.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="prod", help="stack name; reads Pulumi.<stack>.yaml (default: prod)")
    parser.add_argument("--config", type=Path, help="stack file (default: Pulumi.<stack>.yaml)")
    parser.add_argument("--track", default="infra", help="the track whose step was just applied (default: infra)")
    parser.add_argument("--metrics", help="Prometheus HTTP API URL (default: bazbii:metrics.endpoint)")
    parser.add_argument("--interval", type=positive_seconds, default=10.0, metavar="SECONDS",
                        help="time between evaluations, in seconds (default %(default)g)")
    parser.add_argument("--duration", help="how long to watch, a duration with its unit, e.g. 30m or 24h "
                        "(default: the next step's soak)")
    parser.add_argument("--window", help="sliding window of each evaluation, a duration with its unit, e.g. 90s or 5m "
                        "(default 5m)")
    parser.add_argument("--since", help="when the step was applied, an ISO time such as 2026-05-01T12:00:00Z "
                        "(default: now)")
    parser.add_argument("--scope", help="what to measure: service, canary, pool=NAME or server=NAME "
                        "(default: what the step moved, from the plan's criteria)")
    parser.add_argument("--min-samples", type=int, help="requests a window needs to be conclusive (default 100)")
    parser.add_argument("--primary-dsn", help="replica consistency trigger: primary (no password; use ~/.pgpass)")
    parser.add_argument("--replica-dsn", help="replica consistency trigger: replica (no password)")
    parser.add_argument("--journal-dsn", help="migration journal trigger: database holding bazbii_migrations (no password)")
    parser.add_argument("--policy-pack", type=Path, default=Path("policies"), help="policy pack for the rollback's pulumi up")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT, help="Pulumi project directory")
    parser.add_argument("--log-file", type=Path, default=Path("rollbacks.jsonl"), help="JSON line per rollback")
    parser.add_argument("--dry-run", action="store_true", help="print the rollback commands instead of running them")
    return parser


def main(argv: Optional[list[str]] = None, console: Optional[Console] = None) -> int:
    args = _parser().parse_args(argv)
    console = console or Console(highlight=False)
    if not console.is_terminal:
        console.width = 160  # logs and CI: one line per trigger
    try:
        setup = setup_from_args(args, datetime.now(timezone.utc))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.json:
        return watch(setup, args, console)
    # --json: the rounds go to stderr, and stdout gets one document with the outcome and the last round
    summary: dict = {}
    code = watch(setup, args, Console(stderr=True, highlight=False), summary=summary)
    emit(True, dict(summary, exit=code), "")
    return code


if __name__ == "__main__":
    run_main(main)
