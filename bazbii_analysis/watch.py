"""Watch the step the stack applied, unattended, and roll it back one step through git on a breach.

    python -m bazbii_analysis.watch                          # the step the last update moved, for its soak
    python -m bazbii_analysis.watch --duration 14m --interval 60 --max-inconclusive 5   # one scheduled run
    python -m bazbii_analysis.watch --track release --rollback pull-request --dry-run

It runs where no laptop stays open: the scheduled workflow ``.github/workflows/watch.yml`` starts a run
every 15 minutes, each watching up to ``--duration`` of the step's watch period (the soak the next step's
gate requires; ``--period`` when it sets none). What is watched comes from the stack's ``appliedRecord``
(which step, applied when) and the stack file on ``main`` (the plan, ``bazbii:rollback``,
``bazbii:metrics``, read over SSH when ``bazbii:metrics.ssh`` says so; see watchsetup.py).

Every ``--interval`` seconds it re-evaluates the rollback triggers of ``bazbii:rollback`` (error ratio,
p95 against 2x its target) over the last ``--window`` (never reaching back before the step was applied),
scoped to what the step moved, plus the data-consistency triggers given (replica consistency, migration
journal; these need the databases reachable from where it runs).

* **Breach** (a trigger fails): the previous step is written into the stack file of ``main`` as a commit
  (``--rollback commit``, then the apply workflow ``--apply-workflow`` is dispatched: it applies ``main``)
  or as a pull request (``--rollback pull-request``); ``main`` always names what is applied. An alert issue
  says why. Nothing is rolled back when ``main`` no longer names the watched step, when the step is
  irreversible or the first one, or when the step was itself reached by a rollback (the last change of its
  pointer on ``main`` moved it back): those alert instead.
* **Silence**: ``--max-inconclusive`` (K) consecutive rounds that cannot tell (metrics unreachable, too few
  requests), or a run that ends without one conclusive round, raise an alert.

Alerts are a GitHub issue (a comment on the open one with the same title) when the job's
``GITHUB_REPOSITORY`` and ``GITHUB_TOKEN`` are set, and always the output and the exit status.

Exit status: 0 healthy, or nothing to watch; 1 breach (rolled back, or not: see the output); 2 bad
arguments or config; 3 silence alert.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bazbii_plan.cli import CliParser, emit, positive_seconds, run_main
from bazbii_plan.errors import ConfigError
from bazbii_plan.gates import format_duration, rollback_signals

from .evaluate import evaluate_signals, unmeasured
from .github import GitHub, GitHubError
from .gitrollback import GitFailed, GitRecord, RollbackRefused, StepRollback
from .prometheus import PrometheusClient
from .reach import metrics_client
from .verdict import FAIL, INCONCLUSIVE, PASS, UNWINDOWED, SignalResult, overall
from .watchsetup import DEFAULT_PERIOD, WatchSetup, setup_from_args

EXIT_OK, EXIT_BREACH, EXIT_BAD_INPUT, EXIT_SILENT = 0, 1, 2, 3
REPO_ROOT = Path(__file__).resolve().parent.parent
STATUS_STYLE = {PASS: "green", FAIL: "bold red", INCONCLUSIVE: "yellow"}
DEFAULT_MAX_INCONCLUSIVE = 3


@dataclass
class Alerts:
    """Where the watch says what needs a person: a GitHub issue when it knows the repository, and the output."""

    github: Optional[GitHub]
    console: Console
    dry_run: bool = False

    def raise_alert(self, title: str, body: str) -> None:
        self.console.print(f"[bold]ALERT[/]: {title}", highlight=False)
        if self.github is None or self.dry_run:
            self.console.print("  (no GitHub issue: GITHUB_REPOSITORY/GITHUB_TOKEN not set)" if self.github is None
                               else "  (dry run: no GitHub issue)", highlight=False)
            return
        try:
            self.console.print(f"  alert issue: {self.github.alert(title, body)}", highlight=False)
        except GitHubError as exc:
            self.console.print(f"  [red]could not raise the alert on GitHub[/]: {exc}", highlight=False)


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


def render(setup: WatchSetup, results: list[SignalResult], rounds: int, now: datetime) -> Group:
    table = Table(title=(f"watch {setup.stack}: {setup.track} at {setup.step!r} "
                         f"(applied {format_duration((now - setup.since).total_seconds())} ago, watched until "
                         f"{setup.ends:%Y-%m-%d %H:%M}Z, round {rounds})"))
    for column in ("trigger", "scope", "value", "threshold", "window", "samples", "status"):
        table.add_column(column)
    for result in results:
        table.add_row(Text(result.name), Text(result.scope), result.shown_value(), result.threshold(),
                      format_duration(result.window_seconds) if result.kind not in UNWINDOWED else "-",
                      f"{result.samples:.0f}" if result.samples is not None else "-",
                      f"[{STATUS_STYLE[result.status]}]{result.status}[/]")
    reasons = Table.grid()
    for result in results:
        if result.reason:
            reasons.add_row(Text(f"{result.name}: {result.reason}", style="dim"))
    return Group(table, reasons)


def _round_line(rounds: int, status: str, results: list[SignalResult]) -> str:
    return (f"round {rounds}: {status}; "
            + "; ".join(f"{r.name} {r.shown_value()} {r.status}"
                        + (f" ({r.reason})" if r.reason and r.status != PASS else "") for r in results))


def watch(setup: WatchSetup, args: argparse.Namespace, console: Console, alerts: Alerts,
          clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
          sleep: Callable[[float], None] = time.sleep, summary: Optional[dict] = None) -> int:
    """One run: until the watch period or ``--duration`` is over, a trigger breaches or K rounds cannot tell.
    ``summary`` (for --json) gets the outcome: nothing-to-watch, healthy, silent or breach."""
    where = f"{setup.track} at {setup.step!r}"
    summary = {} if summary is None else summary
    summary.update(track=setup.track, step=setup.step, previous=setup.previous, since=setup.since.isoformat(),
                   watchedUntil=setup.ends.isoformat(), rounds=0, healthyRounds=0, outcome="nothing-to-watch",
                   results=[])
    if setup.main_step:
        console.print(f"note: main names {setup.track} step {setup.main_step!r}, not applied yet; watching what the "
                      f"stack applied, {setup.step!r}", highlight=False)
    if setup.duration <= 0:
        console.print(f"nothing to watch: {where} was applied at {setup.since:%Y-%m-%d %H:%M:%S}Z and its watch period "
                      f"ended at {setup.ends:%Y-%m-%d %H:%M:%S}Z", highlight=False)
        return EXIT_OK
    start = clock()
    results: list[SignalResult] = []
    rounds = healthy = silent = 0
    with metrics_client(setup.metrics, setup.servers, setup.ssh_key) as client, \
            Live(console=console, auto_refresh=False, transient=not console.is_terminal) as live:
        while True:
            now = clock()
            results = evaluate_triggers(setup, client, now)
            rounds += 1
            status = overall(results)
            live.update(render(setup, results, rounds, now), refresh=True)
            if not console.is_terminal:  # logs get one line per round instead of the live table
                console.print(_round_line(rounds, status, results), highlight=False, markup=False)
            if status == FAIL:
                break
            healthy += status == PASS
            silent = silent + 1 if status == INCONCLUSIVE else 0
            if silent >= args.max_inconclusive:
                break
            if (clock() - start).total_seconds() + args.interval > setup.duration:
                break
            sleep(args.interval)
    for result in results:
        console.print(f"  {result.line()}", highlight=False, markup=False)
    silenced = silent >= args.max_inconclusive or healthy == 0
    summary.update(rounds=rounds, healthyRounds=healthy, results=[asdict(r) for r in results],
                   outcome="breach" if overall(results) == FAIL else ("silent" if silenced else "healthy"))
    if overall(results) == FAIL:
        return _breach(setup, args, console, alerts, [r for r in results if r.status == FAIL], clock())
    if silenced:
        why = (f"{silent} consecutive rounds could not tell (--max-inconclusive {args.max_inconclusive})"
               if silent >= args.max_inconclusive else f"none of its {rounds} rounds could tell")
        alerts.raise_alert(
            f"bazbii watch: metrics silent for {where}",
            f"The watch of {where} (stack {setup.stack}) cannot measure it: {why}. Nothing was rolled back; "
            f"a breach would go unseen until the metrics answer again.\n\n"
            + "\n".join(f"    {r.line()}" for r in results if r.status == INCONCLUSIVE)
            + f"\n\nMetrics: {client.where}")
        console.print(f"[yellow]SILENT[/]: {where}: {why}; nothing was rolled back", highlight=False)
        return EXIT_SILENT
    console.print(f"[green]HEALTHY[/]: {where} for {format_duration((clock() - start).total_seconds())} "
                  f"({rounds} rounds, {healthy} conclusive and healthy)", highlight=False)
    return EXIT_OK


def _breach(setup: WatchSetup, args: argparse.Namespace, console: Console, alerts: Alerts,
            breaches: list[SignalResult], now: datetime) -> int:
    where = f"{setup.track} at {setup.step!r}"
    reasons = tuple(r.line() for r in breaches)
    track = setup.config.plan.tracks[setup.track]
    step = track.steps[track.index(setup.step)]
    listed = "\n".join(f"    {reason}" for reason in reasons)

    def not_rolled_back(why: str) -> int:
        console.print(f"[bold red]BREACH[/] on {where}, not rolled back: {why}", highlight=False)
        alerts.raise_alert(f"bazbii watch: breach at {where}, not rolled back",
                           f"The rollback triggers fail for {where} (stack {setup.stack}):\n\n{listed}\n\n"
                           f"Nothing was rolled back: {why}")
        return EXIT_BREACH

    if setup.previous is None or not step.reversible:
        return not_rolled_back("it is the first step of its track" if setup.previous is None
                               else f"the plan marks it irreversible by config ({step.rollback})")
    rollback = StepRollback(stack_file=setup.stack_file, track=setup.track, key=f"bazbii:{track.key}",
                            from_step=setup.step, to_step=setup.previous, reasons=reasons)
    record = GitRecord(args.repo, remote=args.remote, branch=args.branch)
    console.print(f"[bold red]BREACH[/]: rolling {setup.track} back one step through git, "
                  f"{setup.step} -> {setup.previous}", highlight=False)
    try:
        head = record.fetch()
        change = record.last_change(head, setup.stack_file, rollback.key)
        names = track.names()
        if change and change[0] in names and names.index(change[0]) > names.index(setup.step):
            return not_rolled_back(f"{setup.step!r} was itself reached by a rollback ({rollback.key} "
                                   f"{change[0]} -> {change[1]} on {args.branch}); a person decides the next step")
        commit = record.commit_rollback(head, rollback)
    except RollbackRefused as exc:
        return not_rolled_back(str(exc))
    except GitFailed as exc:
        return not_rolled_back(f"the rollback commit could not be made: {exc}")
    branch = args.branch if args.rollback == "commit" else \
        f"rollback/{setup.track}-{setup.previous}-{now:%Y%m%d%H%M%S}"
    if args.dry_run:
        console.print(f"dry run: would push {commit[:12]} to {args.remote} {branch}:\n{rollback.message()}",
                      highlight=False, markup=False)
        return EXIT_BREACH
    try:
        record.push(commit, branch)
    except GitFailed as exc:
        return not_rolled_back(f"pushing the rollback commit to {branch} failed ({exc}); the next run checks again")
    follow = ""
    github = alerts.github
    try:
        if args.rollback == "commit":
            follow = f"{args.apply_workflow} applies main"
            if github is not None:
                github.dispatch_workflow(args.apply_workflow, args.branch)
                follow = f"{args.apply_workflow} was dispatched on {args.branch} to apply it"
        elif github is not None:
            follow = f"pull request {github.open_pull_request(branch, args.branch, rollback.title(), rollback.message())}"
        else:
            follow = f"open a pull request from {branch}"
    except GitHubError as exc:
        follow = f"the rollback is on {branch}, but {exc}"
    console.print(f"rolled back in git: {rollback.key} = {setup.previous} on {branch} ({commit[:12]}); {follow}",
                  highlight=False)
    alerts.raise_alert(f"bazbii watch: rolled back {setup.track} {setup.step} -> {setup.previous}",
                       f"{rollback.message()}\nCommit {commit} on {branch}; {follow}.")
    return EXIT_BREACH


def _parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m bazbii_analysis.watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="prod", help="the stack (with Pulumi Cloud: ORG/bazbii/prod)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT,
                        help="git clone of the repository whose main names what is applied (default: this one)")
    parser.add_argument("--config", type=Path, help="stack file to read (default: <repo>/Pulumi.<stack>.yaml)")
    parser.add_argument("--track", help="the track to watch (default: the one the last update moved)")
    parser.add_argument("--applied-record", type=Path, metavar="FILE",
                        help="the stack's appliedRecord output as JSON (default: read from the stack with pulumi)")
    parser.add_argument("--since", help="when the step was applied, an ISO time such as 2026-05-01T12:00:00Z "
                        "(instead of the applied record; the stack file's steps are then taken as applied)")
    parser.add_argument("--metrics", help="read this Prometheus HTTP API URL directly (default: bazbii:metrics)")
    parser.add_argument("--ssh-key", type=Path, metavar="FILE",
                        help="key for bazbii:metrics.ssh (default: bazbii:sshPrivateKey from the stack's config)")
    parser.add_argument("--interval", type=positive_seconds, default=10.0, metavar="SECONDS",
                        help="time between evaluations, in seconds (default %(default)g)")
    parser.add_argument("--duration", help="how long this run watches at most, a duration with its unit, e.g. 14m "
                        "(default: the rest of the step's watch period)")
    parser.add_argument("--period", help="watch period of a step whose next step sets no soak, a duration with its "
                        f"unit (default {DEFAULT_PERIOD})")
    parser.add_argument("--window", help="sliding window of each evaluation, a duration with its unit, e.g. 90s or 5m "
                        "(default 5m)")
    parser.add_argument("--scope", help="what to measure: service, canary, pool=NAME or server=NAME "
                        "(default: what the step moved, from the plan's criteria)")
    parser.add_argument("--min-samples", type=int, help="requests a window needs to be conclusive (default 100)")
    parser.add_argument("--max-inconclusive", type=int, default=DEFAULT_MAX_INCONCLUSIVE, metavar="K",
                        help=f"alert after K consecutive rounds that cannot tell (default {DEFAULT_MAX_INCONCLUSIVE})")
    parser.add_argument("--rollback", choices=("commit", "pull-request"), default="commit",
                        help="a breach commits the previous step to main (default), or opens a pull request")
    parser.add_argument("--remote", default="origin", help="git remote of the repository (default origin)")
    parser.add_argument("--branch", default="main", help="the branch that names what is applied (default main)")
    parser.add_argument("--apply-workflow", default="up.yml", help="workflow dispatched after a rollback commit")
    parser.add_argument("--github-repo", help="OWNER/NAME for alerts and pull requests (default $GITHUB_REPOSITORY)")
    parser.add_argument("--primary-dsn", help="replica consistency trigger: primary (no password; use ~/.pgpass)")
    parser.add_argument("--replica-dsn", help="replica consistency trigger: replica (no password)")
    parser.add_argument("--journal-dsn", help="migration journal trigger: database holding bazbii_migrations (no password)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be committed, change nothing")
    return parser



def main(argv: Optional[list[str]] = None, console: Optional[Console] = None,
         clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> int:
    args = _parser().parse_args(argv)
    console = console or Console(highlight=False)
    if not console.is_terminal:
        console.width = 160  # logs and CI: one line per trigger
    bad = []
    if args.max_inconclusive < 1:
        bad.append("--max-inconclusive: must be at least 1")
    else:
        try:
            setup = setup_from_args(args, clock())
        except ConfigError as exc:
            bad += exc.problems
    if bad:  # else setup was made
        for line in bad:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.json:
        alerts = Alerts(GitHub.from_environment(args.github_repo), console, dry_run=args.dry_run)
        return watch(setup, args, console, alerts, clock)
    # --json: the rounds, the rollback and the alerts go to stderr; stdout gets one document with the outcome
    console = Console(stderr=True, highlight=False, width=160)
    summary: dict = {}
    alerts = Alerts(GitHub.from_environment(args.github_repo), console, dry_run=args.dry_run)
    code = watch(setup, args, console, alerts, clock, summary=summary)
    emit(True, dict(summary, exit=code), "")
    return code


if __name__ == "__main__":
    run_main(main)
