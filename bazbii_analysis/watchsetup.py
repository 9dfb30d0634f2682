"""What one run of ``watch`` watches, decided from the stack and the stack file on ``main``.

The step is the one the stack **applied** (its ``appliedRecord`` output): by default the step the last
update moved (the track whose step was applied last), applied at the record's time. The step is watched
for its *watch period*, the soak the next step's gate requires (``--period`` for a step whose next step
sets none), and one run watches at most ``--duration`` of it: a scheduled run picks up where the previous
one ended, and a run after the period has nothing to watch. Without the stack (``--since``), the stack
file's steps are taken as applied at that time.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Optional

import psycopg
from pydantic import ValidationError

from bazbii_db.migrations.journal import Journal
from bazbii_db.replication import check_consistency, redact_dsn
from bazbii_plan.errors import ConfigError
from bazbii_plan.gates import MetricsConfig, Scope, duration_seconds
from bazbii_plan.models import StackState
from bazbii_plan.record import parse_time
from bazbii_plan.stackconfig import SECRET_KEYS, StackConfig, load_stack_config
from bazbii_plan.stackfile import fill_secret_placeholders, read_stack_file

from .stackaccess import StackUnreadable, read_stack
from .triggers import DataTrigger, MigrationJournal, ReplicaConsistency, refuse_password

DEFAULT_PERIOD = "1h"
DEFAULT_WINDOW_SECONDS = 300.0


@dataclass
class WatchSetup:
    stack: str
    config: StackConfig  # the stack file's, at the steps the stack applied
    stack_file: str  # its path in the repository (what a rollback commit edits)
    track: str
    step: str
    previous: Optional[str]
    scope: Scope
    min_samples: int
    since: datetime  # when the step was applied
    ends: datetime  # when its watch period ends
    duration: float  # how long this run watches (seconds; 0: the period is over)
    window: float
    metrics: MetricsConfig
    servers: dict[str, Any] = field(default_factory=dict)  # bazbii:servers as applied (a metrics SSH route's server)
    ssh_key: Optional[str] = field(default=None, repr=False)
    data_triggers: list[DataTrigger] = field(default_factory=list)
    main_step: Optional[str] = None  # what the stack file names for the track, when it is not the applied step


def load_offline_config(path: Path) -> StackConfig:
    """The validated stack config of a stack file; secrets are never needed here (placeholders)."""
    values, secret_keys, _others = read_stack_file(path)
    fill_secret_placeholders(values, secret_keys, SECRET_KEYS)
    return load_stack_config(values, secret_keys)


def _following(config: StackConfig, track: str):
    steps = config.plan.tracks[track].steps
    index = config.plan.tracks[track].index(config.current[track])
    return steps[index + 1] if index + 1 < len(steps) else None


def watched_scope(config: StackConfig, track: str) -> Scope:
    """What the step just applied moved: what the next step's rollback-trigger gate measures, else its own
    gate's scope, else the whole service.

    A gate is used only when its signals are the rollback triggers (``signals`` omitted): a gate with its own
    signals measures something else. gateway-off-server1's own gate counts the requests that still reach
    server1, which by design get none once it is applied; watching that scope would be silent for the whole
    period. After it, the service is what carries the step's risk.

    A scope naming what no longer takes requests once the step is applied measures nothing either: api-2.0's
    own gate measures the canary before promoting it, and after it there is no canary.
    """
    state = config.state()
    following = _following(config, track)
    if following is not None and following.criteria is not None and following.criteria.signals is None \
            and takes_requests(following.criteria.scope, state):
        return following.criteria.scope
    steps = config.plan.tracks[track].steps
    own = steps[config.plan.tracks[track].index(config.current[track])].criteria
    if own is not None and own.signals is None and takes_requests(own.scope, state):
        return own.scope
    return Scope()


def takes_requests(scope: Scope, state: StackState) -> bool:
    """Whether what ``scope`` names serves requests in ``state``: a canary or a pool at weight 0 (or gone)
    does not, so its series stay empty; the service and a server scope (its exporters) are taken as they are."""
    if scope.kind == "canary":
        return state.app.canary is not None and state.app.canary.weight > 0
    if scope.kind == "pool":
        pool = state.traffic.pools.get(scope.name)
        return pool is not None and pool.weight > 0
    return True


def next_soak_seconds(config: StackConfig, track: str) -> Optional[float]:
    """The soak the next step's gate requires (the step's watch period by default)."""
    following = _following(config, track)
    if following is None or following.criteria is None or following.criteria.soak_seconds() <= 0:
        return None
    return float(following.criteria.soak_seconds())


def parse_scope(text: str) -> Scope:
    """``service``, ``canary``, ``pool=server2``, ``server=server3`` -> Scope (ValueError otherwise)."""
    kind, _, name = text.partition("=")
    try:
        return Scope.model_validate({"kind": kind, "name": name})
    except ValidationError:
        raise ValueError(f"--scope {text!r}: use service, canary, pool=NAME or server=NAME") from None


def _applied_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"--applied-record {path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([f"--applied-record {path}: not JSON: {exc}"]) from None
    if not isinstance(record, dict) or not isinstance(record.get("steps"), dict):
        raise ConfigError([f"--applied-record {path}: not an applied record (`pulumi stack output appliedRecord --json`)"])
    return record


def _last_moved(record: dict) -> Optional[str]:
    """The track whose current step was applied last (the one the last update moved)."""
    times = {track: when for track, text in (record.get("since") or {}).items() if (when := parse_time(text))}
    return max(times, key=times.__getitem__) if times else None


# The data triggers run the database tools (bazbii_db); the watch command is where they are wired in, so that
# neither package's library modules import the other's (triggers.py takes the checks as arguments).
def replica_consistency(primary_dsn: str, replica_dsn: str) -> ReplicaConsistency:
    return ReplicaConsistency(partial(check_consistency, primary_dsn, replica_dsn, attempts=2, catchup_timeout=10.0),
                              f"{redact_dsn(primary_dsn)} vs {redact_dsn(replica_dsn)}")


def migration_journal(dsn: str) -> MigrationJournal:
    def entries() -> list:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            return Journal(conn).entries()

    return MigrationJournal(entries, redact_dsn(dsn))


def setup_from_args(args: argparse.Namespace, now: datetime) -> WatchSetup:
    problems: list[str] = []
    stack_file = f"Pulumi.{args.stack.rsplit('/', 1)[-1]}.yaml"
    file_config = load_offline_config(args.config or args.repo / stack_file)
    metrics = file_config.metrics
    if args.metrics:  # a URL given here is read directly
        metrics = metrics.model_copy(update={"endpoint": args.metrics, "ssh": None})
    if metrics.endpoint is None:
        problems.append("bazbii:metrics.endpoint is not set; give --metrics URL")
    ssh_key: Optional[str] = None
    if args.ssh_key is not None:
        try:
            ssh_key = args.ssh_key.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--ssh-key {args.ssh_key}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    if args.track is not None and args.track not in file_config.plan.tracks:
        problems.append(f"--track {args.track}: tracks are {list(file_config.plan.tracks)}")
    since: Optional[datetime] = None
    if args.since:
        try:
            since = parse_time(args.since)
        except ValueError:
            problems.append(f"--since {args.since!r}: use an ISO time such as 2026-05-01T12:00:00Z")

    def seconds(option: str, text: Optional[str]) -> Optional[float]:
        if text is None:
            return None
        try:
            return float(duration_seconds(text))
        except ValueError as exc:
            problems.append(f"{option}: {exc}")
            return None

    limit = seconds("--duration", args.duration)
    fallback_period = seconds("--period", args.period or DEFAULT_PERIOD) or 0.0
    window = seconds("--window", args.window) or DEFAULT_WINDOW_SECONDS
    scope: Optional[Scope] = None
    if args.scope:
        try:
            scope = parse_scope(args.scope)
        except ValueError as exc:
            problems.append(str(exc))
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

    # What the stack applied, and the key to read the metrics with: from the stack unless given here.
    record = _applied_record(args.applied_record) if args.applied_record is not None else None
    need_key = metrics.ssh is not None and ssh_key is None
    needs_record = since is None and record is None
    if needs_record or need_key:
        try:
            view = read_stack(args.stack, args.repo, with_key=need_key)
        except StackUnreadable as exc:
            raise ConfigError([f"{exc} (or give --applied-record FILE or --since TIME, and --ssh-key FILE)"]) from None
        ssh_key = view.ssh_key if need_key else ssh_key
        record = view.applied_record if needs_record else record
        if needs_record and record is None:
            raise ConfigError([f"stack {args.stack} has no appliedRecord output (never updated by this program); "
                               "give --since TIME"])
    track = args.track or (_last_moved(record) if record else None) or "infra"
    config = file_config
    if record is not None:
        try:
            config = file_config.with_steps(**{t: s for t, s in record["steps"].items() if t in file_config.plan.tracks})
        except KeyError as exc:
            raise ConfigError([f"the applied record names a step the stack file's plan does not have: {exc.args[0]}"]) from None
        if since is None:
            since = parse_time((record.get("since") or {}).get(track))
            if since is None:
                raise ConfigError([f"the applied record has no time for track {track!r}; give --since TIME"])
    triggers: list[DataTrigger] = []
    if args.primary_dsn:
        triggers.append(replica_consistency(args.primary_dsn, args.replica_dsn))
    if args.journal_dsn:
        triggers.append(migration_journal(args.journal_dsn))

    if since is None:  # given, or read from the applied record, which is required without it
        raise ConfigError(["no time the step was applied: give --since TIME"])
    ends = since + timedelta(seconds=next_soak_seconds(config, track) or fallback_period)
    remaining = max(0.0, (ends - now).total_seconds())
    main_step = file_config.current[track]
    return WatchSetup(
        stack=args.stack, config=config, stack_file=stack_file, track=track, step=config.current[track],
        previous=config.previous_step(track), scope=scope or watched_scope(config, track),
        min_samples=args.min_samples if args.min_samples is not None else 100,
        since=since, ends=ends, duration=min(remaining, limit) if limit is not None else remaining,
        window=window, metrics=metrics, servers=config.state().to_config()["servers"], ssh_key=ssh_key,
        data_triggers=triggers, main_step=main_step if main_step != config.current[track] else None,
    )
