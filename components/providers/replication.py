"""Replication lag gate and planned switchover as Pulumi resources.

Thin ``pulumi.dynamic`` providers over :mod:`bazbii_db.replication` (all database work lives
there, with no Pulumi import). The PostgresCluster component wires them at the plan's steps:

* :class:`ReplicaLagGate` after the replica is built (Phase 1): create/update run the lag gate
  (maximum replay lag over a window under a threshold, failing closed when the replica is down or
  not streaming) and, when asked, the per-table consistency check. A gate that does not pass fails
  the update with the report; nothing downstream of it runs.
* :class:`PlannedSwitchover` in the last phase: create performs PAUSE -> fence -> catch-up ->
  promote -> ini rewrite + RELOAD -> RESUME once. Re-running it after success (or after a failure
  past promotion) rolls forward idempotently; it never promotes twice.
* Retirement of the old primary is a pulumi-command ``remote.Command`` step (it has to run on the
  old server's host): the script comes from
  :func:`bazbii_db.replication.retire.retire_primary_script` (fast stop, systemd disable, Debian
  ``start.conf`` = disabled, data directory kept for ``pg_rewind``). The component owns that step;
  :func:`retired_primary_command` below is a ready-made equivalent.

Where it runs. The providers execute inside the ``pulumi up`` process. The DSNs must be reachable
from there (the component uses the replication user, allowed from the declared servers only), and
**the PgBouncer ini must be a local file**: ``pgbouncer_ini_path`` is rewritten in place with an
atomic rename. So the switchover update is run *on the pooler host* (where ``pulumi up`` can reach
the admin console on 127.0.0.1 and the database servers over the private network). Running it
from a laptop through an SSH-forwarded admin port does not work for the ini rewrite: the
pre-check stops with "not found on this machine" before anything changes.

Secrets: every DSN input is wrapped in ``Output.secret``; outputs hold only ``host:port/db as
user`` targets, LSNs, timings and report text that never contains a password.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult

GATE_INPUTS = ("slot", "max_lag_bytes", "window_seconds", "timeout_seconds", "check_consistency")
GATE_OUTPUTS = ("passed", "measured_max_lag_bytes", "checked_lsn", "tables_compared", "tables_differing",
                "primary_target", "replica_target", "report")
SWITCHOVER_TARGET = ("database_alias", "new_host", "new_port", "pgbouncer_ini_path")
SWITCHOVER_OUTPUTS = ("completed", "already_done", "promoted", "fenced_lsn", "replica_replay_lsn", "window_ms",
                      "steps_ms", "old_primary_state", "old_primary_target", "new_primary_target", "report")


def _target(dsn: Any) -> str:
    from bazbii_db.replication._conn import dsn_target

    return dsn_target(str(dsn))


def _number(news: dict, key: str, failures: list[CheckFailure], *, positive: bool = True) -> None:
    value = news.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        failures.append(CheckFailure(key, f"{key} must be a number"))
    elif positive and value <= 0:
        failures.append(CheckFailure(key, f"{key} must be positive"))


# --------------------------------------------------------------------------- lag gate
def run_gate(props: dict[str, Any]) -> dict[str, Any]:
    """The provider's create/update body: gate (+ consistency check); raises with the report on failure."""
    from bazbii_db.replication import GateConfig, check_consistency, run_lag_gate

    primary_dsn, replica_dsn = str(props["primary_dsn"]), str(props["replica_dsn"])
    config = GateConfig(max_lag_bytes=int(props["max_lag_bytes"]), window_seconds=float(props["window_seconds"]),
                        timeout_seconds=float(props["timeout_seconds"]))
    gate = run_lag_gate(primary_dsn, str(props["slot"]), replica_dsn=replica_dsn, config=config)
    outs: dict[str, Any] = {key: props.get(key) for key in GATE_INPUTS}
    outs.update({
        "passed": gate.passed,
        "measured_max_lag_bytes": gate.max_lag_bytes_observed,
        "checked_lsn": gate.checked_lsn,
        "tables_compared": 0,
        "tables_differing": [],
        "primary_target": _target(primary_dsn),
        "replica_target": _target(replica_dsn),
        "report": gate.to_text(),
    })
    if not gate.passed:
        raise RuntimeError(gate.to_text())
    if props.get("check_consistency"):
        check = check_consistency(primary_dsn, replica_dsn, catchup_timeout=float(props["timeout_seconds"]))
        outs["tables_compared"] = check.tables_compared
        outs["tables_differing"] = [d.table for d in check.differing + check.unverified]
        outs["report"] = gate.to_text() + "\n" + check.to_text()
        if check.checked_lsn:
            outs["checked_lsn"] = check.checked_lsn
        if not check.passed:
            outs["passed"] = False
            raise RuntimeError(gate.to_text() + "\n" + check.to_text())
    return outs


class ReplicaLagGateProvider(ResourceProvider):
    def check(self, _olds: dict, news: dict) -> CheckResult:
        from bazbii_db.replication.replica import validate_slot_name

        failures: list[CheckFailure] = []
        try:
            validate_slot_name(str(news.get("slot")))
        except ValueError as exc:
            failures.append(CheckFailure("slot", str(exc)))
        for key in ("max_lag_bytes", "window_seconds", "timeout_seconds"):
            _number(news, key, failures)
        if not failures and float(news["window_seconds"]) >= float(news["timeout_seconds"]):
            failures.append(CheckFailure("timeout_seconds", "timeout_seconds must be longer than window_seconds"))
        return CheckResult(news, failures)

    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=f"lag-gate-{props['slot']}", outs=run_gate(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in GATE_INPUTS if olds.get(k) != news.get(k)]
        for key, out_key in (("primary_dsn", "primary_target"), ("replica_dsn", "replica_target")):
            if news.get(key) is not None and _target(news[key]) != olds.get(out_key):
                changed.append(key)
        # A gate that failed last time is run again on every update until it passes.
        if not olds.get("passed"):
            changed.append("passed")
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=run_gate(news))

    def delete(self, _id: str, _props: dict) -> None:
        # A gate is a check, not a thing: removing it changes nothing on the servers.
        return None


class ReplicaLagGate(pulumi.dynamic.Resource, module="bazbii", name="ReplicaLagGate"):
    """Fails the update unless the replica streams with max replay lag < ``max_lag_bytes`` over
    ``window_seconds`` (bounded by ``timeout_seconds``), and, with ``check_consistency``, unless every
    table's row count and checksum match the primary's at a known LSN."""

    passed: pulumi.Output[bool]
    measured_max_lag_bytes: pulumi.Output[Optional[int]]
    checked_lsn: pulumi.Output[Optional[str]]
    tables_compared: pulumi.Output[int]
    tables_differing: pulumi.Output[list]
    report: pulumi.Output[str]

    def __init__(self, name: str, *, primary_dsn: pulumi.Input[str], replica_dsn: pulumi.Input[str], slot: str,
                 max_lag_bytes: int = 1024 * 1024, window_seconds: float = 1.0, timeout_seconds: float = 30.0,
                 check_consistency: bool = False, opts: Optional[pulumi.ResourceOptions] = None):
        props: dict[str, Any] = {
            "primary_dsn": pulumi.Output.secret(primary_dsn),
            "replica_dsn": pulumi.Output.secret(replica_dsn),
            "slot": slot,
            "max_lag_bytes": max_lag_bytes,
            "window_seconds": window_seconds,
            "timeout_seconds": timeout_seconds,
            "check_consistency": check_consistency,
        }
        props.update({key: None for key in GATE_OUTPUTS})
        super().__init__(ReplicaLagGateProvider(), name, props, opts)


# --------------------------------------------------------------------------- switchover
def run_switchover(props: dict[str, Any]) -> dict[str, Any]:
    """The provider's create body. Raises with the report (no secrets) when it does not complete."""
    from pathlib import Path

    from bazbii_db.replication import SwitchoverConfig, SwitchoverError, planned_switchover

    ini = str(props["pgbouncer_ini_path"])
    if not Path(ini).is_file():
        raise RuntimeError(f"{ini} not found on this machine: the switchover rewrites PgBouncer's ini locally, so "
                           "run this update on the pooler host (nothing was changed)")
    config = SwitchoverConfig(database_alias=str(props["database_alias"]), pgbouncer_ini_path=ini,
                              new_host=str(props["new_host"]), new_port=int(props["new_port"]),
                              pause_timeout=float(props["pause_timeout_seconds"]),
                              max_lag_bytes=int(props["max_lag_bytes"]))
    try:
        report = planned_switchover(str(props["old_primary_dsn"]), str(props["new_primary_dsn"]),
                                    str(props["pgbouncer_admin_dsn"]), config)
    except SwitchoverError as exc:
        raise RuntimeError(exc.report.to_text()) from None
    outs: dict[str, Any] = {key: props.get(key) for key in SWITCHOVER_TARGET + ("pause_timeout_seconds",
                                                                                "max_lag_bytes")}
    outs.update({
        "completed": report.completed,
        "already_done": report.already_done,
        "promoted": report.promoted,
        "fenced_lsn": report.fenced_lsn,
        "replica_replay_lsn": report.replica_replay_lsn,
        "window_ms": report.window_ms,
        "steps_ms": dict(report.steps_ms),
        "old_primary_state": report.old_primary_state,
        "old_primary_target": _target(props["old_primary_dsn"]),
        "new_primary_target": _target(props["new_primary_dsn"]),
        "report": report.to_text(),
    })
    return outs


class PlannedSwitchoverProvider(ResourceProvider):
    def check(self, _olds: dict, news: dict) -> CheckResult:
        import re

        failures: list[CheckFailure] = []
        for key in ("pause_timeout_seconds", "max_lag_bytes", "new_port"):
            _number(news, key, failures)
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(news.get("database_alias", ""))):
            failures.append(CheckFailure("database_alias", "database_alias must be a plain PgBouncer database name"))
        if not str(news.get("pgbouncer_ini_path", "")).startswith("/"):
            failures.append(CheckFailure("pgbouncer_ini_path", "pgbouncer_ini_path must be an absolute path"))
        return CheckResult(news, failures)

    def create(self, props: dict) -> CreateResult:
        outs = run_switchover(props)
        return CreateResult(id_=f"switchover-{props['database_alias']}-to-{props['new_host']}-{props['new_port']}",
                            outs=outs)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        # Only a different target means another switchover; tuning knobs or rotated passwords do not.
        replaces = [k for k in SWITCHOVER_TARGET if str(olds.get(k)) != str(news.get(k))]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict, _news: dict) -> UpdateResult:
        # Unreachable in practice (diff never reports an in-place change); keep the recorded result.
        return UpdateResult(outs=olds)

    def delete(self, _id: str, _props: dict) -> None:
        # A switchover is an event that happened, not a thing that exists: the promoted server cannot be
        # un-promoted by forgetting this record. Moving back is a new switchover in the other direction
        # (a new resource whose target is the old server, after re-attaching it with pg_rewind).
        return None


class PlannedSwitchover(pulumi.dynamic.Resource, module="bazbii", name="PlannedSwitchover"):
    """Makes ``new_primary`` the primary behind PgBouncer with zero failed transactions (once)."""

    completed: pulumi.Output[bool]
    promoted: pulumi.Output[bool]
    fenced_lsn: pulumi.Output[Optional[str]]
    window_ms: pulumi.Output[Optional[float]]
    steps_ms: pulumi.Output[dict]
    report: pulumi.Output[str]

    def __init__(self, name: str, *, old_primary_dsn: pulumi.Input[str], new_primary_dsn: pulumi.Input[str],
                 pgbouncer_admin_dsn: pulumi.Input[str], pgbouncer_ini_path: str, database_alias: str,
                 new_host: str, new_port: int, pause_timeout_seconds: float = 5.0,
                 max_lag_bytes: int = 1024 * 1024, opts: Optional[pulumi.ResourceOptions] = None):
        props: dict[str, Any] = {
            "old_primary_dsn": pulumi.Output.secret(old_primary_dsn),
            "new_primary_dsn": pulumi.Output.secret(new_primary_dsn),
            "pgbouncer_admin_dsn": pulumi.Output.secret(pgbouncer_admin_dsn),
            "pgbouncer_ini_path": pgbouncer_ini_path,
            "database_alias": database_alias,
            "new_host": new_host,
            "new_port": new_port,
            "pause_timeout_seconds": pause_timeout_seconds,
            "max_lag_bytes": max_lag_bytes,
        }
        props.update({key: None for key in SWITCHOVER_OUTPUTS})
        super().__init__(PlannedSwitchoverProvider(), name, props, opts)


# --------------------------------------------------------------------------- retirement
def retired_primary_command(name: str, *, connection: Any, systemd_unit: str = "postgresql@15-main",
                            debian_start_conf: Optional[str] = "/etc/postgresql/15/main/start.conf",
                            opts: Optional[pulumi.ResourceOptions] = None):
    """Retirement as a pulumi-command step on the old primary's host (stop, disable, keep data for pg_rewind).

    Depend it on the :class:`PlannedSwitchover`. Slot cleanup on the new primary is
    ``python -m bazbii_db.replication drop-slot`` / :func:`bazbii_db.replication.drop_replication_slot`.
    """
    from pulumi_command import remote

    from bazbii_db.replication.retire import retire_primary_script

    text = retire_primary_script(systemd_unit=systemd_unit, debian_start_conf=debian_start_conf)
    return remote.Command(name, connection=connection, create=f"sudo -n bash -c {_sh_quote(text)}",
                          triggers=[systemd_unit], opts=opts)


def _sh_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
