"""Command line: ``python -m bazbii_db.migrations {apply,down,status,lint,checksum} ...``

Follows the CLI convention of :mod:`bazbii_db.cli`: the connection string is read from an
environment variable (``--dsn-env VAR``) or a file (``--dsn-file PATH``), never from the command
line, and passwords never appear in output; ``--json`` prints exactly one JSON document.

Exit codes: 0 ok; 1 analysis found errors, contract refused, runner lock or lock-timeout budget
exhausted, or any other migration failure (one line on stderr says which); 2 usage or metadata error;
128 + N: ``apply`` was stopped by signal N (130 SIGINT, 143 SIGTERM) at a safe point: after the
backfill's batch in flight, or after the statement in flight. One line on stderr says where; running
the same command again resumes (the journal and the backfill checkpoint, shown by ``status``). A
second signal stops at once: the batch in flight then commits or rolls back together with its
checkpoint, so nothing is lost or done twice.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import asdict
from functools import partial
from typing import Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from bazbii_analysis.latency import PrometheusLatency  # the CLI wires the sources in: the throttle imports none

from bazbii_db.migrations.backfill import BackfillConfig, ReplicaLagProbe
from bazbii_db.migrations.throttle import LatencyBudget, LatencyConfigError
from bazbii_db.cli import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliParser, emit, exit_code_stopped, fail, run_guarded,
                           run_main)
from bazbii_db.dsn import DsnError, read_dsn, redact
from bazbii_db.migrations.errors import LockRetryExhausted, MigrationError, MigrationStopped, RunnerLockTimeout
from bazbii_db.migrations.versions import ContractRefused
from bazbii_db.migrations.executor import DdlConfig
from bazbii_db.migrations.runner import MigrationRunner, RunnerConfig
from bazbii_db.migrations.spec import MigrationSpecError, default_migrations_dir, list_migrations, load_migration
from bazbii_db.migrations.errors import IrreversibleStage, StageOrderError
from bazbii_db.migrations.lint import lint_migration
from bazbii_db.sql_safety import STAGES, SqlSafetyError, format_findings, has_errors
from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV, ShadowServer, TargetSchema, judged_by
from bazbii_db.sql_safety.timeouts import RUNNER_LOCK_TIMEOUT_MS
from bazbii_db.stopping import StopRequest, stop_on_signals

STOPPING = ("stopping after the batch (or statement) in flight; send it again to stop at once (the batch in "
            "flight then commits or rolls back together with its checkpoint: nothing is lost or done twice)")


def _dsn(args, env_attr: str = "dsn_env", file_attr: str = "dsn_file") -> str | None:
    env, path = getattr(args, env_attr, None), getattr(args, file_attr, None)
    if env and path:
        raise DsnError(f"give only one of --{env_attr.replace('_', '-')} and --{file_attr.replace('_', '-')}")
    if not env and not path:
        return None
    return read_dsn(env=env, file=path)


def _target_dsn(args, needed_by: str) -> str:
    """The target's connection string, which ``needed_by`` cannot do without."""
    dsn = _dsn(args)
    if dsn is None:
        raise DsnError(f"{needed_by} needs the target's connection string (--dsn-env or --dsn-file)")
    return dsn


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m bazbii_db.migrations", description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--migrations-dir", default=None, help="default: $BAZBII_MIGRATIONS_DIR or ./migrations")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser)

    def add_dsn(p, required=True):
        g = p.add_mutually_exclusive_group(required=required)
        g.add_argument("--dsn-env", metavar="VAR", help="environment variable holding the libpq connection string")
        g.add_argument("--dsn-file", metavar="PATH", help="file holding the libpq connection string")

    def add_shadow(p, target_help: str):
        g = p.add_mutually_exclusive_group()
        g.add_argument("--shadow-dsn-env", metavar="VAR",
                       help=f"a PostgreSQL server for shadow runs (default: ${SHADOW_DSN_ENV} when set); each run "
                            "creates and drops its own scratch database there")
        g.add_argument("--shadow-dsn-file", metavar="PATH", help="the same, read from a file")
        g.add_argument("--no-shadow", action="store_true", help=f"static rules only, even with ${SHADOW_DSN_ENV} set")
        p.add_argument("--shadow-from-target", action="store_true", help=target_help)

    down = sub.add_parser("down", allow_abbrev=False, help="run one stage's down step (<stage>.down.sql)")
    add_dsn(down)
    down.add_argument("--migration", required=True, help="migration id (its directory's name)")
    down.add_argument("--stage", required=True, choices=STAGES, help="the stage whose down step to run")
    add_shadow(down, "base the shadow run on a schema-only dump of the target (--dsn-env), not on the migrations")

    apply = sub.add_parser("apply", allow_abbrev=False, help="apply one stage of one migration")
    add_dsn(apply)
    apply.add_argument("--migration", required=True, help="migration id (its directory's name)")
    apply.add_argument("--stage", required=True, choices=STAGES, help="the stage to apply")
    apply.add_argument("--app-version", action="append", default=[], metavar="VERSION_OR_IMAGE",
                       help="a running application version or image reference (repeat for each)")
    apply.add_argument("--lock-timeout-ms", type=int, default=RUNNER_LOCK_TIMEOUT_MS,
                       help="lock_timeout of each DDL statement, in ms (default %(default)s)")
    apply.add_argument("--statement-timeout-ms", type=int, default=600_000,
                       help="statement_timeout of each DDL statement, in ms (default %(default)s)")
    apply.add_argument("--ddl-max-attempts", type=int, default=10,
                       help="tries of a DDL statement that hits lock_timeout (default %(default)s)")
    apply.add_argument("--lock-wait-s", type=float, default=60.0,
                       help="how long to wait for another runner, in seconds (default %(default)g)")
    apply.add_argument("--batch-size", type=int, default=None,
                       help="backfill batch size, in rows (default: the migration's spec)")
    apply.add_argument("--pause-ms", type=int, default=None,
                       help="backfill sleep between batches, in ms (default: the migration's spec)")
    apply.add_argument("--target-batch-ms", type=int, default=None,
                       help="adapt the batch size so a batch holds its locks about this long, in ms")
    apply.add_argument("--replica-dsn-env", action="append", default=[], metavar="VAR",
                       help="environment variable with a replica's connection string (lag throttle)")
    apply.add_argument("--replica-dsn-file", action="append", default=[], metavar="PATH",
                       help="file with a replica's connection string (lag throttle)")
    apply.add_argument("--max-lag-s", type=float, default=5.0,
                       help="pause the backfill while a replica is more than this many seconds behind (default %(default)g)")
    apply.add_argument("--lock-wait-threshold-ms", type=int, default=200,
                       help="pause the backfill while another session waits on a lock longer than this, in ms "
                            "(default %(default)s)")
    apply.add_argument("--progress-interval-s", type=float, default=10.0,
                       help="seconds between progress lines when stderr is not a terminal (default %(default)g)")
    apply.add_argument("--latency-budget-ratio", type=float, default=None,
                       help="latency-aware throttle: hold the application's p99 under RATIO x the baseline "
                            "measured before the first batch (overrides the migration's latency table)")
    apply.add_argument("--probe-dsn-env", metavar="VAR", default=None,
                       help="environment variable with the pooler DSN the application uses (the latency probe)")
    apply.add_argument("--prometheus-url", default=None,
                       help="Prometheus HTTP API where the migration's latency.prometheus_query is read")
    apply.add_argument("--expected-checksum", default=os.environ.get("BAZBII_EXPECTED_CHECKSUM"),
                       help="refuse to run unless the stage's files give this checksum "
                            "(default: $BAZBII_EXPECTED_CHECKSUM)")
    add_shadow(apply, "base the shadow run on a schema-only dump of the target (--dsn-env), not on the migrations")

    status = sub.add_parser("status", allow_abbrev=False, help="show the journal")
    add_dsn(status)

    lint = sub.add_parser("lint", aliases=["analyse"], allow_abbrev=False,
                          help="judge migrations: the static rules, and a shadow run when a shadow server is given")
    lint.add_argument("--migration", action="append", default=[], help="migration id, repeatable (default: all)")
    lint.add_argument("--stage", choices=STAGES, help="only this stage (and its down step); default: every stage")
    lint.add_argument("--raw", action="store_true",
                      help="analyse as raw SQL not run by this runner (requires SET lock_timeout in files)")
    add_shadow(lint, "base the shadow run on a schema-only dump of the database in --dsn-env/--dsn-file (read "
                     "only; needs --migration and --stage: the stages before it are applied there)")
    add_dsn(lint, required=False)
    lint.add_argument("--require-shadow", action="store_true",
                      help="exit 1 unless a shadow run judged every migration (CI with a PostgreSQL service)")

    checksum = sub.add_parser("checksum", allow_abbrev=False, help="print a stage's checksum")
    checksum.add_argument("--migration", required=True, help="migration id (its directory's name)")
    checksum.add_argument("--stage", required=True, choices=STAGES, help="the stage whose files to checksum")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    out = Console()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=err.is_terminal)])
    migrations_dir = args.migrations_dir or default_migrations_dir()
    dsns: list[str] = []  # every DSN read, so that any message can be scrubbed of their passwords

    def secret_free(exc: BaseException) -> str:
        return redact(str(exc), *dsns)

    return run_guarded(lambda: _run(args, out, err, migrations_dir, dsns), [
        ((SqlSafetyError,), EXIT_FAILED, str),
        ((DsnError, MigrationSpecError, LatencyConfigError, ValueError), EXIT_USAGE, lambda exc: f"error: {secret_free(exc)}"),
        ((ContractRefused,), EXIT_FAILED, lambda exc: f"contract refused, nothing changed: {secret_free(exc)}"),
        ((IrreversibleStage, StageOrderError), EXIT_FAILED, lambda exc: f"down step refused, nothing changed: {secret_free(exc)}"),
        ((RunnerLockTimeout, LockRetryExhausted, MigrationError), EXIT_FAILED,
         lambda exc: f"error: {secret_free(exc)}"),
    ])


def _print_rows(out: Console, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        return
    if out.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    else:  # plain, one line per row, for logs and scripts
        for row in [header, *rows]:
            out.print("\t".join(row), markup=False, highlight=False, soft_wrap=True)


def _run(args, out: Console, err: Console, migrations_dir, dsns: list[str]) -> int:
    if args.command in ("lint", "analyse"):
        return _lint(args, out, migrations_dir, dsns)
    if args.command == "checksum":
        checksum = load_migration(f"{migrations_dir}/{args.migration}").checksum(args.stage)
        emit(args.json, {"migration_id": args.migration, "stage": args.stage, "checksum": checksum}, checksum)
        return EXIT_OK
    dsn = _target_dsn(args, args.command)  # argparse already requires it for these commands
    dsns.append(dsn)
    if args.command == "status":
        runner = MigrationRunner(dsn, migrations_dir)
        header = ("migration", "step", "status", "units", "checksum", "started", "duration ms", "app versions")
        entries = runner.status()
        checkpoints = runner.checkpoints()
        if args.json:
            emit(True, {"journal": [asdict(e) for e in entries], "checkpoints": [asdict(c) for c in checkpoints]}, "")
            return EXIT_OK
        rows = [(e.migration_id, e.step, e.status, str(e.units_done), e.checksum[:12], str(e.started_at)[:19],
                 str(e.duration_ms if e.duration_ms is not None else ""), ", ".join(e.app_versions))
                for e in entries]
        _print_rows(out, header, rows)
        # Where each backfill is: the key every batch up to is committed, and why a step last stopped.
        checkpoint_header = ("backfill", "table", "at key", "of key", "rows changed", "batches", "updated", "finished")
        _print_rows(out, checkpoint_header, [
            (f"{c.migration_id}/{c.name}", c.table_name, str(c.last_key), str(c.upper_key), str(c.rows_changed),
             str(c.batches), str(c.updated_at)[:19], str(c.finished_at)[:19] if c.finished_at else "no")
            for c in checkpoints])
        for e in entries:
            if e.status != "applied" and e.last_error:
                out.print(f"{e.migration_id}/{e.step} {e.status}: {e.last_error}", markup=False, highlight=False,
                          soft_wrap=True)
        return 0
    shadow = _shadow(args, dsns)
    if args.command == "down":
        config = RunnerConfig(shadow=shadow, shadow_from_target=args.shadow_from_target)
        result = MigrationRunner(dsn, migrations_dir, config).revert(args.migration, args.stage)
        emit(args.json, {"migration_id": result.migration_id, "stage": result.stage, "status": result.status,
                         "units_run": result.units_run, "duration_s": result.duration_s, "judged_by": result.judged_by},
             f"{result.migration_id}/{result.stage}: {result.status} (down step statements run "
             f"{result.units_run}, {result.duration_s:.2f}s)\nSQL judged by: {result.judged_by}")
        return EXIT_OK
    if args.expected_checksum:
        actual = load_migration(f"{migrations_dir}/{args.migration}").checksum(args.stage)
        if actual != args.expected_checksum:
            raise MigrationSpecError(f"{args.migration}/{args.stage}: the files give checksum {actual[:12]}, "
                                     f"expected {args.expected_checksum[:12]}; nothing was run")
    replicas = [read_dsn(env=v) for v in args.replica_dsn_env] + [read_dsn(file=f) for f in args.replica_dsn_file]
    dsns.extend(replicas)
    stop = StopRequest()
    backfill = BackfillConfig(batch_size=args.batch_size, pause_ms=args.pause_ms,
                              target_batch_ms=args.target_batch_ms,
                              lag_probe=ReplicaLagProbe(replicas) if replicas else None, max_lag_s=args.max_lag_s,
                              lock_wait_threshold_ms=args.lock_wait_threshold_ms,
                              progress_interval_s=args.progress_interval_s, console=err,
                              latency=(LatencyBudget(budget_ratio=args.latency_budget_ratio)
                                       if args.latency_budget_ratio is not None else None),
                              probe_dsn=read_dsn(env=args.probe_dsn_env) if args.probe_dsn_env else None,
                              prometheus=(partial(PrometheusLatency.connect, args.prometheus_url)
                                          if args.prometheus_url else None), stop=stop)
    ddl = DdlConfig(lock_timeout_ms=args.lock_timeout_ms, statement_timeout_ms=args.statement_timeout_ms,
                    max_attempts=args.ddl_max_attempts)
    config = RunnerConfig(ddl=ddl, runner_lock_wait_s=args.lock_wait_s, backfill=backfill, shadow=shadow,
                          shadow_from_target=args.shadow_from_target)
    try:
        with stop_on_signals(stop, first=STOPPING, again="exit"):
            result = MigrationRunner(dsn, migrations_dir, config).apply(args.migration, args.stage, args.app_version)
    except MigrationStopped as exc:
        fail(f"{args.migration}/{args.stage} STOPPED: {redact(str(exc), *dsns)}. To resume, run the same command "
             "again; `status` shows the journal and the backfill checkpoints")
        return exit_code_stopped(stop.signum)
    for w in result.warnings:
        err.print(w.format(), markup=False, highlight=False, soft_wrap=True)
    lines = [f"{result.migration_id}/{result.stage}: {result.status} (units run {result.units_run}, "
             f"skipped {result.units_skipped}, ddl attempts {result.ddl_attempts}, lock timeouts "
             f"{result.lock_timeouts}, repaired indexes {result.repaired_indexes or 'none'}, "
             f"{result.duration_s:.2f}s)"]
    lines += [f"  backfill {b.name}: {b.rows_changed} rows changed, {b.batches} batches, "
              f"{b.rows_per_s:,.0f} rows/s, resumed from key {b.resumed_from_key}, "
              f"max batch lock hold {b.max_batch_hold_ms:.1f} ms" for b in result.backfills]
    if result.reverted:
        lines.append(f"  reverted first through their down steps: {', '.join(result.reverted)}")
    lines.append(f"  SQL judged by: {result.judged_by}")
    payload = {key: getattr(result, key) for key in (
        "migration_id", "stage", "status", "checksum", "units_run", "units_skipped", "duration_s",
        "waited_for_lock_s", "ddl_attempts", "lock_timeouts", "repaired_indexes")}
    payload["backfills"] = [asdict(b) for b in result.backfills]
    payload["reverted"] = list(result.reverted)
    payload["warnings"] = [w.format() for w in result.warnings]
    payload["judged_by"] = result.judged_by
    emit(args.json, payload, "\n".join(lines))
    return EXIT_OK


def _shadow(args, dsns: list[str]) -> ShadowServer | None:
    """The shadow server: --shadow-dsn-env/--shadow-dsn-file, else $BAZBII_SHADOW_DSN, unless --no-shadow."""
    if getattr(args, "no_shadow", False):
        if args.shadow_from_target:
            raise DsnError("--shadow-from-target needs a shadow server, not --no-shadow")
        return None
    if args.shadow_dsn_env or args.shadow_dsn_file:
        dsn = read_dsn(env=args.shadow_dsn_env, file=args.shadow_dsn_file, what="shadow server connection string")
    else:
        dsn = os.environ.get(SHADOW_DSN_ENV, "").strip()
    if not dsn:
        if args.shadow_from_target:
            raise DsnError(f"--shadow-from-target needs a shadow server (--shadow-dsn-env VAR or ${SHADOW_DSN_ENV})")
        return None
    dsns.append(dsn)
    settings = {} if args.command == "lint" or not hasattr(args, "lock_timeout_ms") else dict(
        lock_timeout_ms=args.lock_timeout_ms, statement_timeout_ms=args.statement_timeout_ms)
    return ShadowServer(dsn, **settings)


def _lint(args, out: Console, migrations_dir, dsns: list[str]) -> int:
    shadow = _shadow(args, dsns)
    target = None
    if args.shadow_from_target:
        if not (args.migration and len(args.migration) == 1 and args.stage):
            raise DsnError("--shadow-from-target judges one stage against the target's schema: give one --migration "
                           "and --stage")
        target_dsn = _target_dsn(args, "--shadow-from-target")
        dsns.append(target_dsn)
        target = TargetSchema(target_dsn)
    ids = args.migration or list_migrations(migrations_dir)
    stages = (args.stage,) if args.stage else STAGES
    failed = unjudged = False
    report = []
    for mig in ids:
        lint = lint_migration(f"{migrations_dir}/{mig}", runner_sets_timeouts=not args.raw, shadow=shadow,
                              target=target, stages=stages)
        findings = [f for stage in stages for f in lint.findings[stage]]
        failed |= has_errors(findings)
        unjudged |= lint.run is None or not lint.run.ok
        report.append({"migration": mig, "judged_by": lint.judged_by,
                       "findings": [f.format() for f in findings], "errors": has_errors(findings)})
        if not args.json:
            if findings:
                out.print(format_findings(findings), markup=False, highlight=False, soft_wrap=True)
            if shadow is not None:  # each run says what it cost, or why it could not run
                out.print(f"{mig}: judged by {lint.judged_by}", markup=False, highlight=False, soft_wrap=True)
    if shadow is None and not args.json:
        out.print(f"judged by {report[0]['judged_by'] if report else judged_by(None)}", markup=False, highlight=False,
                  soft_wrap=True)
    missing_shadow = args.require_shadow and unjudged
    verdict = ("analysis: errors found, nothing may run" if failed else
               "analysis: a shadow run was required but did not judge every migration" if missing_shadow else
               f"analysis: {len(ids)} migration(s) ok")
    if args.json:
        emit(True, {"migrations": report, "failed": failed, "shadow_required_but_missing": missing_shadow}, verdict)
    else:
        out.print(verdict)
    return EXIT_FAILED if failed or missing_shadow else EXIT_OK


if __name__ == "__main__":
    run_main(main)
