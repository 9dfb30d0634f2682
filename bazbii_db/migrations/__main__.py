"""Command line: ``python -m bazbii_db.migrations {apply,down,status,analyse,checksum} ...``

Follows the CLI convention of :mod:`bazbii_db.cli`: the connection string is read from an
environment variable (``--dsn-env VAR``) or a file (``--dsn-file PATH``), never from the command
line, and passwords never appear in output; ``--json`` prints exactly one JSON document.

Exit codes: 0 ok; 1 analysis found errors, contract refused, runner lock or lock-timeout budget
exhausted, or any other migration failure (one line on stderr says which); 2 usage or metadata error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from functools import partial

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from bazbii_analysis.latency import PrometheusLatency  # the CLI wires the sources in: the throttle imports none

from bazbii_db.migrations.backfill import BackfillConfig, ReplicaLagProbe
from bazbii_db.migrations.throttle import LatencyBudget, LatencyConfigError
from bazbii_db.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliParser, emit, run_guarded
from bazbii_db.dsn import DsnError, read_dsn, redact
from bazbii_db.migrations.errors import LockRetryExhausted, MigrationError, RunnerLockTimeout
from bazbii_db.migrations.versions import ContractRefused
from bazbii_db.migrations.executor import DdlConfig
from bazbii_db.migrations.runner import MigrationRunner, RunnerConfig
from bazbii_db.migrations.spec import MigrationSpecError, default_migrations_dir, list_migrations, load_migration
from bazbii_db.migrations.errors import IrreversibleStage, StageOrderError
from bazbii_db.migrations.lint import analyse_migration_dir
from bazbii_db.sql_safety import STAGES, SqlSafetyError, format_findings, has_errors
from bazbii_db.sql_safety.timeouts import RUNNER_LOCK_TIMEOUT_MS


def _dsn(args, env_attr: str = "dsn_env", file_attr: str = "dsn_file") -> str | None:
    env, path = getattr(args, env_attr, None), getattr(args, file_attr, None)
    if env and path:
        raise DsnError(f"give only one of --{env_attr.replace('_', '-')} and --{file_attr.replace('_', '-')}")
    if not env and not path:
        return None
    return read_dsn(env=env, file=path)




def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m bazbii_db.migrations", description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--migrations-dir", default=None, help="default: $BAZBII_MIGRATIONS_DIR or ./migrations")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON document on stdout")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser)

    def add_dsn(p, required=True):
        g = p.add_mutually_exclusive_group(required=required)
        g.add_argument("--dsn-env", metavar="VAR", help="environment variable holding the libpq connection string")
        g.add_argument("--dsn-file", metavar="PATH", help="file holding the libpq connection string")

    down = sub.add_parser("down", allow_abbrev=False, help="run one stage's down step (<stage>.down.sql)")
    add_dsn(down)
    down.add_argument("--migration", required=True)
    down.add_argument("--stage", required=True, choices=STAGES)

    apply = sub.add_parser("apply", allow_abbrev=False, help="apply one stage of one migration")
    add_dsn(apply)
    apply.add_argument("--migration", required=True)
    apply.add_argument("--stage", required=True, choices=STAGES)
    apply.add_argument("--app-version", action="append", default=[], metavar="VERSION_OR_IMAGE",
                       help="a running application version or image reference (repeat for each)")
    apply.add_argument("--lock-timeout-ms", type=int, default=RUNNER_LOCK_TIMEOUT_MS)
    apply.add_argument("--statement-timeout-ms", type=int, default=600_000)
    apply.add_argument("--ddl-max-attempts", type=int, default=10)
    apply.add_argument("--lock-wait-s", type=float, default=60.0, help="how long to wait for another runner")
    apply.add_argument("--batch-size", type=int, default=None)
    apply.add_argument("--pause-ms", type=int, default=None)
    apply.add_argument("--target-batch-ms", type=int, default=None)
    apply.add_argument("--replica-dsn-env", action="append", default=[], metavar="VAR",
                       help="environment variable with a replica's connection string (lag throttle)")
    apply.add_argument("--replica-dsn-file", action="append", default=[], metavar="PATH",
                       help="file with a replica's connection string (lag throttle)")
    apply.add_argument("--max-lag-s", type=float, default=5.0)
    apply.add_argument("--lock-wait-threshold-ms", type=int, default=200)
    apply.add_argument("--progress-interval-s", type=float, default=10.0)
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

    status = sub.add_parser("status", allow_abbrev=False, help="show the journal")
    add_dsn(status)

    analyse = sub.add_parser("analyse", allow_abbrev=False, help="analyse migrations offline (no database)")
    analyse.add_argument("--migration", action="append", default=[], help="default: all")
    analyse.add_argument("--raw", action="store_true",
                         help="analyse as raw SQL not run by this runner (requires SET lock_timeout in files)")

    checksum = sub.add_parser("checksum", allow_abbrev=False, help="print a stage's checksum")
    checksum.add_argument("--migration", required=True)
    checksum.add_argument("--stage", required=True, choices=STAGES)
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


def _run(args, out: Console, err: Console, migrations_dir, dsns: list[str]) -> int:
    if args.command == "analyse":
        ids = args.migration or list_migrations(migrations_dir)
        failed = False
        for mig in ids:
            result = analyse_migration_dir(f"{migrations_dir}/{mig}", runner_sets_timeouts=not args.raw)
            for stage, findings in result.items():
                if findings:
                    out.print(format_findings(findings), markup=False, highlight=False, soft_wrap=True)
                failed |= has_errors(findings)
        out.print("analysis: errors found, nothing may run" if failed else f"analysis: {len(ids)} migration(s) ok")
        return EXIT_FAILED if failed else EXIT_OK
    if args.command == "checksum":
        out.print(load_migration(f"{migrations_dir}/{args.migration}").checksum(args.stage))
        return 0
    dsn = _dsn(args)
    dsns.append(dsn)
    if args.command == "status":
        runner = MigrationRunner(dsn, migrations_dir)
        header = ("migration", "step", "status", "units", "checksum", "started", "duration ms", "app versions")
        rows = [(e.migration_id, e.step, e.status, str(e.units_done), e.checksum[:12], str(e.started_at)[:19],
                 str(e.duration_ms if e.duration_ms is not None else ""), ", ".join(e.app_versions))
                for e in runner.status()]
        if out.is_terminal:
            table = Table(*header)
            for row in rows:
                table.add_row(*row)
            out.print(table)
        else:  # plain, one line per step, for logs and scripts
            for row in [header, *rows]:
                out.print("\t".join(row), markup=False, highlight=False, soft_wrap=True)
        return 0
    if args.command == "down":
        result = MigrationRunner(dsn, migrations_dir).revert(args.migration, args.stage)
        emit(args.json, {"migration_id": result.migration_id, "stage": result.stage, "status": result.status,
                         "units_run": result.units_run, "duration_s": result.duration_s},
             f"{result.migration_id}/{result.stage}: {result.status} (down step statements run "
             f"{result.units_run}, {result.duration_s:.2f}s)")
        return EXIT_OK
    if args.expected_checksum:
        actual = load_migration(f"{migrations_dir}/{args.migration}").checksum(args.stage)
        if actual != args.expected_checksum:
            raise MigrationSpecError(f"{args.migration}/{args.stage}: the files give checksum {actual[:12]}, "
                                     f"expected {args.expected_checksum[:12]}; nothing was run")
    replicas = [read_dsn(env=v) for v in args.replica_dsn_env] + [read_dsn(file=f) for f in args.replica_dsn_file]
    dsns.extend(replicas)
    backfill = BackfillConfig(batch_size=args.batch_size, pause_ms=args.pause_ms,
                              target_batch_ms=args.target_batch_ms,
                              lag_probe=ReplicaLagProbe(replicas) if replicas else None, max_lag_s=args.max_lag_s,
                              lock_wait_threshold_ms=args.lock_wait_threshold_ms,
                              progress_interval_s=args.progress_interval_s, console=err,
                              latency=(LatencyBudget(budget_ratio=args.latency_budget_ratio)
                                       if args.latency_budget_ratio is not None else None),
                              probe_dsn=read_dsn(env=args.probe_dsn_env) if args.probe_dsn_env else None,
                              prometheus=(partial(PrometheusLatency.connect, args.prometheus_url)
                                          if args.prometheus_url else None))
    ddl = DdlConfig(lock_timeout_ms=args.lock_timeout_ms, statement_timeout_ms=args.statement_timeout_ms,
                    max_attempts=args.ddl_max_attempts)
    config = RunnerConfig(ddl=ddl, runner_lock_wait_s=args.lock_wait_s, backfill=backfill)
    result = MigrationRunner(dsn, migrations_dir, config).apply(args.migration, args.stage, args.app_version)
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
    payload = {key: getattr(result, key) for key in (
        "migration_id", "stage", "status", "checksum", "units_run", "units_skipped", "duration_s",
        "waited_for_lock_s", "ddl_attempts", "lock_timeouts", "repaired_indexes")}
    payload["backfills"] = [asdict(b) for b in result.backfills]
    payload["reverted"] = list(result.reverted)
    payload["warnings"] = [w.format() for w in result.warnings]
    emit(args.json, payload, "\n".join(lines))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
