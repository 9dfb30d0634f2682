"""The replication lag gate: pass only after a whole window of good readings.

Lag readings are bursty (one sample can be 0 bytes between two 200 KB bursts),
so a single reading says little. The gate samples every ``poll_interval`` and
passes only when every reading over a trailing window of ``window_seconds`` is
streaming and under ``max_lag_bytes`` — i.e. the *maximum over the window* is
under the threshold. It fails closed: a replica that is down, not streaming,
paused, unreachable, or a primary that cannot be read resets the window, and
when ``timeout_seconds`` runs out the gate fails with a report saying why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import psycopg

from bazbii_plan.facts import DEFAULT_MAX_LAG_BYTES

from ._conn import ConnectionFailed, connect, dsn_target, scrub
from .errors import ReplicationError
from .lag import LagSample, replica_side_status, sample_lag

DEFAULT_WINDOW_SECONDS = 1.0
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass
class GateConfig:
    max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    poll_interval: float = 0.01
    min_samples: int = 5  # a window is only trusted with at least this many readings

    def __post_init__(self) -> None:
        if self.max_lag_bytes <= 0:
            raise ValueError("max_lag_bytes must be positive")
        if self.window_seconds < 0 or self.timeout_seconds <= 0:
            raise ValueError("window_seconds must be >= 0 and timeout_seconds > 0")
        if self.window_seconds >= self.timeout_seconds:
            raise ValueError("timeout_seconds must be longer than window_seconds or the gate can never pass")


@dataclass
class GateReport:
    passed: bool
    replica: str
    reason: str
    max_lag_bytes_threshold: int
    window_seconds: float
    # Over the passing window when passed, over every streaming reading otherwise.
    max_lag_bytes_observed: int | None
    max_replay_lag_ms: float | None
    replay_lag_null_samples: int
    samples: int
    failed_samples: int
    elapsed_seconds: float
    checked_lsn: str | None          # the primary's WAL position at the last reading
    last_state: str | None
    last_detail: str
    target: str = ""                 # host:port/db of the primary (never the password)
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"lag gate {verdict} for replica {self.replica!r} of {self.target}: {self.reason}",
            f"  threshold: max replay lag < {self.max_lag_bytes_threshold} bytes over {self.window_seconds:g} s",
            f"  observed max: {self.max_lag_bytes_observed} bytes; replay_lag max "
            f"{'n/a' if self.max_replay_lag_ms is None else f'{self.max_replay_lag_ms:.1f} ms'} "
            f"({self.replay_lag_null_samples} NULL readings: caught up)",
            f"  readings: {self.samples} ({self.failed_samples} failed) in {self.elapsed_seconds:.2f} s; "
            f"primary LSN {self.checked_lsn}; last walsender state {self.last_state}",
        ]
        if self.failure_reasons:
            lines.append("  failures: " + "; ".join(f"{n}x {r}" for r, n in self.failure_reasons.items()))
        return "\n".join(lines)


class LagGateFailed(ReplicationError):
    def __init__(self, report: GateReport):
        super().__init__(report.to_text())
        self.report = report


def run_lag_gate(primary_dsn: str, replica: str, *, replica_dsn: str | None = None,
                 config: GateConfig | None = None) -> GateReport:
    """Run the gate against ``replica`` (slot name or application_name); never raises for a failing gate.

    With ``replica_dsn`` the replica is also asked directly (in recovery, WAL receiver
    streaming, replay not paused) at every reading.
    """
    cfg = config or GateConfig()
    start = time.monotonic()
    deadline = start + cfg.timeout_seconds
    target = dsn_target(primary_dsn)
    primary: psycopg.Connection | None = None
    replica_conn: psycopg.Connection | None = None

    samples = failed = nulls = 0
    overall_max: int | None = None
    overall_replay_lag: float | None = None
    window_start: float | None = None
    window_max = 0
    window_replay_lag: float | None = None
    window_samples = 0
    reasons: dict[str, int] = {}
    last: LagSample | None = None
    last_detail = ""

    def fail(reason: str) -> None:
        nonlocal failed, window_start, last_detail
        failed += 1
        window_start = None
        reasons[reason] = reasons.get(reason, 0) + 1
        last_detail = reason

    def report(passed: bool, reason: str) -> GateReport:
        # A pass reports the passing window; a failure reports everything that streamed.
        replay_lag = window_replay_lag if passed else overall_replay_lag
        return GateReport(
            passed=passed, replica=replica, reason=reason, max_lag_bytes_threshold=cfg.max_lag_bytes,
            window_seconds=cfg.window_seconds,
            max_lag_bytes_observed=window_max if passed else overall_max,
            max_replay_lag_ms=None if replay_lag is None else 1000 * replay_lag,
            replay_lag_null_samples=nulls, samples=samples, failed_samples=failed,
            elapsed_seconds=time.monotonic() - start, checked_lsn=last.current_lsn if last else None,
            last_state=last.state if last else None, last_detail=last_detail, target=target,
            failure_reasons=dict(reasons),
        )

    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                if samples == 0 or (failed and window_start is None):
                    why = f"no passing window within {cfg.timeout_seconds:g} s; last failure: {last_detail or 'none'}"
                else:
                    why = (f"timed out after {cfg.timeout_seconds:g} s before a full {cfg.window_seconds:g} s window "
                           f"under {cfg.max_lag_bytes} bytes; last failure: {last_detail or 'none'}")
                return report(False, why)
            try:
                if primary is None:
                    primary = connect(primary_dsn, connect_timeout=min(5.0, max(1.0, deadline - now)),
                                      application_name="bazbii-lag-gate")
                if replica_dsn and replica_conn is None:
                    replica_conn = connect(replica_dsn, connect_timeout=min(5.0, max(1.0, deadline - now)),
                                           application_name="bazbii-lag-gate")
                sample = sample_lag(primary, replica)
                replica_detail = ""
                if replica_conn is not None:
                    side = replica_side_status(replica_conn)
                    if not side.healthy:
                        replica_detail = f"replica says: {side.detail}"
            except ConnectionFailed as exc:
                samples += 1
                fail(str(exc))
                _close(primary)
                _close(replica_conn)
                primary = replica_conn = None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue
            except psycopg.Error as exc:
                samples += 1
                fail(f"query failed: {scrub(str(exc).strip(), primary_dsn, replica_dsn or '')}")
                _close(primary)
                _close(replica_conn)
                primary = replica_conn = None
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                continue

            samples += 1
            last = sample
            if sample.replay_lag_s is None and sample.streaming:
                nulls += 1
            if not sample.streaming:
                fail(sample.detail)
            elif replica_detail:
                fail(replica_detail)
            else:
                lag_bytes = sample.replay_bytes or 0
                overall_max = lag_bytes if overall_max is None else max(overall_max, lag_bytes)
                if sample.replay_lag_s is not None:
                    overall_replay_lag = max(overall_replay_lag or 0.0, sample.replay_lag_s)
                if lag_bytes >= cfg.max_lag_bytes:
                    fail(f"replay lag {lag_bytes} bytes >= threshold {cfg.max_lag_bytes}")
                else:
                    if window_start is None:
                        window_start, window_max, window_samples, window_replay_lag = sample.at, 0, 0, None
                    window_max = max(window_max, lag_bytes)
                    window_samples += 1
                    if sample.replay_lag_s is not None:
                        window_replay_lag = max(window_replay_lag or 0.0, sample.replay_lag_s)
                    if sample.at - window_start >= cfg.window_seconds and window_samples >= cfg.min_samples:
                        return report(True, f"max replay lag {window_max} bytes over {sample.at - window_start:.2f} s "
                                            f"({window_samples} readings) < {cfg.max_lag_bytes}")
            time.sleep(cfg.poll_interval)
    finally:
        _close(primary)
        _close(replica_conn)


def require_lag_gate(primary_dsn: str, replica: str, *, replica_dsn: str | None = None,
                     config: GateConfig | None = None) -> GateReport:
    """Like :func:`run_lag_gate` but raises :class:`LagGateFailed` (with the report) when it does not pass."""
    result = run_lag_gate(primary_dsn, replica, replica_dsn=replica_dsn, config=config)
    if not result.passed:
        raise LagGateFailed(result)
    return result


def _close(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:
            pass
    return None
