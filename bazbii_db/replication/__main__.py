"""Operator CLI: ``python -m bazbii_db.replication gate|check|switchover|verify-streaming|drop-slot|replica-script|retire-script``.

Connection strings come from environment variables only (never arguments, so
they stay out of shell history and ``ps``); nothing printed contains a password.

  BAZBII_PRIMARY_DSN          gate, check, verify-streaming, drop-slot
  BAZBII_REPLICA_DSN          check (required), gate (optional: also ask the replica)
  BAZBII_OLD_PRIMARY_DSN      switchover
  BAZBII_NEW_PRIMARY_DSN      switchover
  BAZBII_PGBOUNCER_ADMIN_DSN  switchover (user listed in admin_users, dbname=pgbouncer)

Exit status: 0 passed/done, 1 gate/check/switchover failed (report printed), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .consistency import check_consistency
from .gate import GateConfig, run_lag_gate
from .replica import ReplicaNotStreaming, drop_replication_slot, replica_setup_script, verify_streaming
from .retire import retire_primary_script
from .switchover import SwitchoverConfig, SwitchoverError, planned_switchover
from ._conn import ConnectionFailed


class UsageError(Exception):
    pass


def _env(name: str, required: bool = True) -> str | None:
    value = os.environ.get(name)
    if required and not value:
        raise UsageError(f"set {name} in the environment (a libpq connection string)")
    return value or None


def _emit(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        print(text)


def cmd_gate(args) -> int:
    cfg = GateConfig(max_lag_bytes=args.max_lag_bytes, window_seconds=args.window, timeout_seconds=args.timeout)
    report = run_lag_gate(_env("BAZBII_PRIMARY_DSN"), args.replica, replica_dsn=_env("BAZBII_REPLICA_DSN", False),
                          config=cfg)
    _emit(args, report.to_dict(), report.to_text())
    return 0 if report.passed else 1


def cmd_check(args) -> int:
    report = check_consistency(_env("BAZBII_PRIMARY_DSN"), _env("BAZBII_REPLICA_DSN"), tables=args.table or None,
                               schemas=args.schema or None, attempts=args.attempts,
                               catchup_timeout=args.catchup_timeout)
    _emit(args, report.to_dict(), report.to_text())
    return 0 if report.passed else 1


def cmd_switchover(args) -> int:
    cfg = SwitchoverConfig(database_alias=args.alias, pgbouncer_ini_path=args.ini, new_host=args.new_host,
                           new_port=args.new_port, new_dbname=args.new_dbname, pause_timeout=args.pause_timeout,
                           max_lag_bytes=args.max_lag_bytes, catchup_timeout=args.catchup_timeout)
    try:
        report = planned_switchover(_env("BAZBII_OLD_PRIMARY_DSN"), _env("BAZBII_NEW_PRIMARY_DSN"),
                                    _env("BAZBII_PGBOUNCER_ADMIN_DSN"), cfg)
    except SwitchoverError as exc:
        _emit(args, exc.report.to_dict(), exc.report.to_text())
        return 1
    _emit(args, report.to_dict(), report.to_text())
    return 0


def cmd_verify(args) -> int:
    try:
        status = verify_streaming(_env("BAZBII_PRIMARY_DSN"), args.replica, timeout=args.timeout)
    except ReplicaNotStreaming as exc:
        _emit(args, exc.status.to_dict(), str(exc))
        return 1
    _emit(args, status.to_dict(), f"replica {status.replica!r} streaming, replay lag {status.replay_bytes} bytes")
    return 0


def cmd_drop_slot(args) -> int:
    dropped = drop_replication_slot(_env("BAZBII_PRIMARY_DSN"), args.slot, only_if_inactive=not args.force)
    print(f"slot {args.slot!r} {'dropped' if dropped else 'did not exist'}")
    return 0


def cmd_replica_script(args) -> int:
    sys.stdout.write(replica_setup_script(primary_host=args.primary_host, primary_port=args.primary_port,
                                          replication_user=args.user, slot=args.slot, datadir=args.datadir,
                                          passfile=args.passfile, pg_bin=args.pg_bin,
                                          start_command=args.start_command))
    return 0


def cmd_retire_script(args) -> int:
    sys.stdout.write(retire_primary_script(systemd_unit=args.systemd_unit, datadir=args.datadir,
                                           debian_start_conf=args.start_conf, pg_bin=args.pg_bin))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bazbii_db.replication", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gate", help="replication lag gate (max over a window under a threshold)")
    p.add_argument("--replica", required=True, help="slot name or application_name of the replica")
    p.add_argument("--max-lag-bytes", type=int, default=1024 * 1024)
    p.add_argument("--window", type=float, default=1.0, help="seconds")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("check", help="row counts + checksums, primary vs replica, at a known LSN")
    p.add_argument("--table", action="append", help="schema.table (repeatable); default all logged tables")
    p.add_argument("--schema", action="append")
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--catchup-timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("switchover", help="planned switchover through PgBouncer")
    p.add_argument("--ini", required=True, help="path of the pgbouncer.ini PgBouncer was started with")
    p.add_argument("--alias", required=True, help="[databases] entry to move")
    p.add_argument("--new-host", required=True)
    p.add_argument("--new-port", type=int, default=5432)
    p.add_argument("--new-dbname")
    p.add_argument("--pause-timeout", type=float, default=5.0)
    p.add_argument("--max-lag-bytes", type=int, default=1024 * 1024)
    p.add_argument("--catchup-timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_switchover)

    p = sub.add_parser("verify-streaming", help="wait until pg_stat_replication shows the replica streaming")
    p.add_argument("--replica", required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("drop-slot", help="drop a retired replica's slot")
    p.add_argument("--slot", required=True)
    p.add_argument("--force", action="store_true", help="drop even if active")
    p.set_defaults(func=cmd_drop_slot)

    p = sub.add_parser("replica-script", help="print the replica setup script (password from env at run time)")
    p.add_argument("--primary-host", required=True)
    p.add_argument("--primary-port", type=int, default=5432)
    p.add_argument("--user", required=True, help="replication role")
    p.add_argument("--slot", required=True)
    p.add_argument("--datadir", default="/var/lib/postgresql/15/main")
    p.add_argument("--passfile", default="/var/lib/postgresql/.pgpass_replication")
    p.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    p.add_argument("--start-command")
    p.set_defaults(func=cmd_replica_script)

    p = sub.add_parser("retire-script", help="print the old-primary retirement script")
    p.add_argument("--systemd-unit", default="postgresql@15-main")
    p.add_argument("--datadir")
    p.add_argument("--start-conf", default="/etc/postgresql/15/main/start.conf")
    p.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin")
    p.set_defaults(func=cmd_retire_script)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except (UsageError, ConnectionFailed, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
