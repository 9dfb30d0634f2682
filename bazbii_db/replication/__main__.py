"""Operator CLI: ``python -m bazbii_db.replication gate|check|switchover|verify-streaming|drop-slot|replica-script|retire-script``.

Follows the CLI convention of :mod:`bazbii_db.cli` (``--json`` before or after the subcommand). Connection strings come from
the environment or from a file (``--<role>-dsn-file PATH``, which wins), never
from arguments; nothing printed contains a password.

  BAZBII_PRIMARY_DSN          gate, check, verify-streaming, drop-slot
  BAZBII_REPLICA_DSN          check and gate --check-consistency (required), gate (optional: also ask the replica)
  BAZBII_OLD_PRIMARY_DSN      switchover
  BAZBII_NEW_PRIMARY_DSN      switchover
  BAZBII_PGBOUNCER_ADMIN_DSN  switchover (user listed in admin_users, dbname=pgbouncer)

Exit status: 0 passed/done, 1 gate/check/switchover failed (report on stdout, one line on
stderr), 2 usage or configuration error (one line on stderr), 128 + N: the switchover was stopped by
signal N (SIGINT, SIGTERM, SIGHUP) before pg_promote, aborted the way a failure does (un-fenced,
RESUMEd, old primary serving); a signal after pg_promote lets it finish the window (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bazbii_db.cli import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliParser, emit, exit_code_stopped, fail,
                           non_negative_seconds, positive_seconds, run_guarded, run_main)
from bazbii_db.dsn import DsnError, read_dsn
from bazbii_db.stopping import StopRequest, stop_on_signals
from bazbii_plan.facts import (DEFAULT_LONG_TRANSACTION_SECONDS, DEFAULT_LONG_TRANSACTION_WAIT_SECONDS,
                               DEFAULT_MAX_LAG_BYTES, DEFAULT_PAUSE_TIMEOUT_SECONDS, pg_paths)

from .consistency import check_consistency
from .errors import ReplicationError, UsageError
from .gate import GateConfig, run_lag_gate
from .replica import ReplicaNotStreaming, drop_replication_slot, replica_setup_script, verify_streaming
from .retire import retire_primary_script
from .switchover import SwitchoverConfig, SwitchoverError, planned_switchover

PG = pg_paths()  # the servers' default PostgreSQL layout (Debian/PGDG), for the options' defaults

DSN_ROLES = {  # role -> environment variable
    "primary": "BAZBII_PRIMARY_DSN",
    "replica": "BAZBII_REPLICA_DSN",
    "old-primary": "BAZBII_OLD_PRIMARY_DSN",
    "new-primary": "BAZBII_NEW_PRIMARY_DSN",
    "pgbouncer-admin": "BAZBII_PGBOUNCER_ADMIN_DSN",
}


def _optional_dsn(args, role: str) -> str | None:
    """The role's DSN from its file or environment variable; None when neither is given."""
    env = DSN_ROLES[role]
    path = getattr(args, f"{role.replace('-', '_')}_dsn_file")
    if path is None and not os.environ.get(env):
        return None
    return read_dsn(env=env, file=path, what=f"{role} connection string")


def _dsn(args, role: str) -> str:
    """The role's DSN, which must be given."""
    dsn = _optional_dsn(args, role)
    if dsn is None:
        raise UsageError(f"set {DSN_ROLES[role]} in the environment or give --{role}-dsn-file "
                         "(a libpq connection string)")
    return dsn


def cmd_gate(args) -> int:
    cfg = GateConfig(max_lag_bytes=args.max_lag_bytes, window_seconds=args.window, timeout_seconds=args.timeout)
    primary = _dsn(args, "primary")
    # The replica's DSN: required by the consistency check; optional for the gate alone (it then asks the replica too).
    checked = _dsn(args, "replica") if args.check_consistency else None
    replica = checked if checked is not None else _optional_dsn(args, "replica")
    report = run_lag_gate(primary, args.replica, replica_dsn=replica, config=cfg)
    payload = {"passed": report.passed, "gate": report.to_dict(), "consistency": None}
    text = report.to_text()
    failure = None if report.passed else f"lag gate failed for replica {args.replica!r}: {report.reason}"
    if report.passed and checked is not None:
        check = check_consistency(primary, checked, catchup_timeout=args.timeout)
        payload.update(passed=check.passed, consistency=check.to_dict())
        text += "\n" + check.to_text()
        if not check.passed:
            differing = [d.table for d in check.differing + check.unverified]
            failure = (f"consistency check failed: {check.error or 'tables differ: ' + ', '.join(differing)}")
    emit(args.json, payload, text)
    if failure:
        fail(failure)
        return EXIT_FAILED
    return EXIT_OK


def cmd_check(args) -> int:
    report = check_consistency(_dsn(args, "primary"), _dsn(args, "replica"), tables=args.table or None,
                               schemas=args.schema or None, attempts=args.attempts,
                               catchup_timeout=args.catchup_timeout)
    emit(args.json, report.to_dict(), report.to_text())
    if not report.passed:
        differing = [d.table for d in report.differing + report.unverified]
        fail(f"consistency check failed: {report.error or 'tables differ: ' + ', '.join(differing)}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_switchover(args) -> int:
    cfg = SwitchoverConfig(database_alias=args.alias, pgbouncer_ini_path=args.ini, new_host=args.new_host,
                           new_port=args.new_port, new_dbname=args.new_dbname, pause_timeout=args.pause_timeout,
                           long_transaction_seconds=args.long_transaction_seconds,
                           long_transaction_wait=args.long_transaction_wait,
                           max_lag_bytes=args.max_lag_bytes, catchup_timeout=args.catchup_timeout)
    old, new, admin = _dsn(args, "old-primary"), _dsn(args, "new-primary"), _dsn(args, "pgbouncer-admin")
    stop = StopRequest()
    try:
        with stop_on_signals(stop, again="ignore",
                             first="stopping the switchover at its next safe point (before pg_promote it aborts: "
                                   "un-fence, RESUME; after it, it finishes the window)"):
            report = planned_switchover(old, new, admin, cfg, stop=stop)
    except SwitchoverError as exc:
        report = exc.report
        emit(args.json, report.to_dict(), report.to_text())
        if report.aborted and report.stopped_by:
            fail(f"switchover stopped by {report.stopped_by} at {report.stage}, old primary "
                 f"{report.old_primary_state}: {report.error}. Nothing is lost; run the same command again to "
                 "switch over")
            return exit_code_stopped(stop.signum)
        verdict = "aborted, old primary serving" if report.aborted else "FAILED after promotion"
        fail(f"switchover {verdict} at {report.stage}: {report.error}")
        return EXIT_FAILED
    emit(args.json, report.to_dict(), report.to_text())
    return EXIT_OK


def cmd_verify(args) -> int:
    try:
        status = verify_streaming(_dsn(args, "primary"), args.replica, timeout=args.timeout)
    except ReplicaNotStreaming as exc:
        emit(args.json, exc.status.to_dict(), str(exc))
        fail(str(exc))
        return EXIT_FAILED
    emit(args.json, status.to_dict(), f"replica {status.replica!r} streaming, replay lag {status.replay_bytes} bytes")
    return EXIT_OK


def cmd_drop_slot(args) -> int:
    dropped = drop_replication_slot(_dsn(args, "primary"), args.slot, only_if_inactive=not args.force)
    emit(args.json, {"slot": args.slot, "dropped": dropped},
         f"slot {args.slot!r} {'dropped' if dropped else 'did not exist'}")
    return EXIT_OK


def cmd_replica_script(args) -> int:
    script = replica_setup_script(primary_host=args.primary_host, primary_port=args.primary_port,
                                  replication_user=args.user, slot=args.slot, datadir=args.datadir,
                                  passfile=args.passfile, pg_bin=args.pg_bin, start_command=args.start_command)
    _emit_script(args, script)
    return EXIT_OK


def _emit_script(args, script: str) -> None:
    """A printed script: its text, or with --json one document holding it."""
    if args.json:
        emit(True, {"script": script}, script)
    else:
        sys.stdout.write(script)


def cmd_retire_script(args) -> int:
    _emit_script(args, retire_primary_script(systemd_unit=args.systemd_unit, datadir=args.datadir,
                                             debian_start_conf=args.start_conf, pg_bin=args.pg_bin))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m bazbii_db.replication", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step on stderr")
    for role, env in DSN_ROLES.items():
        parser.add_argument(f"--{role}-dsn-file", metavar="PATH", help=f"file holding the DSN (instead of ${env})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser)

    p = sub.add_parser("gate", help="replication lag gate (max over a window under a threshold)")
    p.add_argument("--replica", required=True, help="slot name or application_name of the replica")
    p.add_argument("--max-lag-bytes", type=int, default=DEFAULT_MAX_LAG_BYTES,
                   help="largest replay lag that passes, in bytes of WAL (default %(default)s)")
    p.add_argument("--window", type=positive_seconds, default=1.0, metavar="SECONDS",
                   help="the lag must stay under the threshold for this long, in seconds (default %(default)g)")
    p.add_argument("--timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
                   help="give up after this long, in seconds (default %(default)g)")
    p.add_argument("--check-consistency", action="store_true",
                   help="after the gate passed, compare row counts and checksums at a known LSN")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("check", help="row counts + checksums, primary vs replica, at a known LSN")
    p.add_argument("--table", action="append", help="schema.table (repeatable); default all logged tables")
    p.add_argument("--schema", action="append", help="only tables of this schema (repeatable); default all")
    p.add_argument("--attempts", type=int, default=3,
                   help="tries of a table whose checksums differ, as the replica catches up (default %(default)s)")
    p.add_argument("--catchup-timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
                   help="longest wait for the replica to replay the primary's LSN, in seconds (default %(default)g)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("switchover", help="planned switchover through PgBouncer (run on the pooler host)")
    p.add_argument("--ini", required=True, help="path of the pgbouncer.ini PgBouncer was started with")
    p.add_argument("--alias", required=True, help="[databases] entry to move")
    p.add_argument("--new-host", required=True, help="address of the new primary, as PgBouncer reaches it")
    p.add_argument("--new-port", type=int, default=5432, help="its port (default %(default)s)")
    p.add_argument("--new-dbname", help="database name on the new primary (default: keep the entry's)")
    p.add_argument("--pause-timeout", type=positive_seconds, default=DEFAULT_PAUSE_TIMEOUT_SECONDS, metavar="SECONDS",
                   help="longest PAUSE waits for in-flight transactions before it RESUMEs and aborts, in seconds "
                        "(default %(default)g): what a transaction begun right before PAUSE can cost every client")
    p.add_argument("--long-transaction-seconds", type=positive_seconds, default=DEFAULT_LONG_TRANSACTION_SECONDS,
                   metavar="SECONDS",
                   help="right before PAUSE, transactions open on the old primary longer than this many seconds "
                        "are waited out without pausing (default %(default)g)")
    p.add_argument("--long-transaction-wait", type=non_negative_seconds, metavar="SECONDS",
                   default=DEFAULT_LONG_TRANSACTION_WAIT_SECONDS,
                   help="how long to wait for them, unpaused, before aborting with their sessions named, in "
                        "seconds (default %(default)g; 0: abort at once)")
    p.add_argument("--max-lag-bytes", type=int, default=DEFAULT_MAX_LAG_BYTES,
                   help="refuse or abort when the replica is this many bytes of WAL behind (default %(default)s)")
    p.add_argument("--catchup-timeout", type=positive_seconds, default=3.0, metavar="SECONDS",
                   help="longest wait inside the window for the replica to replay the fenced LSN, in seconds "
                        "(default %(default)g)")
    p.set_defaults(func=cmd_switchover)

    p = sub.add_parser("verify-streaming", help="wait until pg_stat_replication shows the replica streaming")
    p.add_argument("--replica", required=True, help="slot name or application_name of the replica")
    p.add_argument("--timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
                   help="give up after this long, in seconds (default %(default)g)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("drop-slot", help="drop a retired replica's slot")
    p.add_argument("--slot", required=True, help="the replication slot's name")
    p.add_argument("--force", action="store_true", help="drop even if active")
    p.set_defaults(func=cmd_drop_slot)

    p = sub.add_parser("replica-script", help="print the replica setup script (password from env at run time)")
    p.add_argument("--primary-host", required=True, help="address of the primary, as the replica reaches it")
    p.add_argument("--primary-port", type=int, default=5432, help="its port (default %(default)s)")
    p.add_argument("--user", required=True, help="replication role")
    p.add_argument("--slot", required=True, help="the replication slot the replica streams from")
    p.add_argument("--datadir", default=PG.datadir,
                   help="the replica's data directory (default %(default)s)")
    p.add_argument("--passfile", default=PG.passfile,
                   help="the passfile the script writes the replication password to (default %(default)s)")
    p.add_argument("--pg-bin", default=PG.bin,
                   help="directory of PostgreSQL's programs (default %(default)s)")
    p.add_argument("--start-command",
                   help="a shell command the script runs to start the replica at the end (default: none, not started)")
    p.set_defaults(func=cmd_replica_script)

    p = sub.add_parser("retire-script", help="print the old-primary retirement script")
    p.add_argument("--systemd-unit", default=PG.unit,
                   help="the old primary's systemd unit (default %(default)s)")
    p.add_argument("--datadir",
                   help="the old primary's data directory, stopped with pg_ctl when it has no systemd unit")
    p.add_argument("--start-conf", default=PG.start_conf,
                   help="the Debian start.conf set to 'disabled' (default %(default)s)")
    p.add_argument("--pg-bin", default=PG.bin,
                   help="directory of PostgreSQL's programs (default %(default)s)")
    p.set_defaults(func=cmd_retire_script)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    return run_guarded(lambda: args.func(args), [
        ((UsageError, DsnError, ValueError), EXIT_USAGE, lambda exc: f"error: {exc}"),
        ((ReplicationError,), EXIT_FAILED, lambda exc: f"{args.command} failed: {exc}"),
    ])


if __name__ == "__main__":
    run_main(main)
