"""Streaming verification, lag measurement and the lag gate against real servers."""

from __future__ import annotations

import time

import pytest

from .repl_helpers import ensure_replica_streaming, execute, su
from bazbii_db.replication import (GateConfig, LagGateFailed, ReplicaNotStreaming, require_lag_gate,
                                   run_lag_gate, sample_lag, verify_streaming)
from bazbii_db.replication._conn import connect

pytestmark = pytest.mark.timeout(60)


def test_replica_streams_and_gate_passes(shared_topo):
    status = verify_streaming(shared_topo.primary.dsn(), shared_topo.slot, timeout=10)
    assert status.streaming and status.state == "streaming"
    report = run_lag_gate(shared_topo.primary.dsn(), shared_topo.slot, replica_dsn=shared_topo.replica.dsn(),
                          config=GateConfig(timeout_seconds=10))
    assert report.passed, report.to_text()
    # The whole default window (1 s) was sampled before passing: max over a window, not one reading.
    assert report.window_seconds == 1.0 and report.max_lag_bytes_threshold == 1024 * 1024
    assert report.elapsed_seconds >= 1.0 and report.samples >= 5
    assert report.max_lag_bytes_observed is not None and report.max_lag_bytes_observed < 1024 * 1024
    assert report.checked_lsn and "/" in report.checked_lsn
    assert "postgres-test-password" not in report.to_text()


def test_lag_in_bytes_is_zero_when_idle_while_replay_timestamp_age_grows(shared_topo):
    execute(su(shared_topo), "INSERT INTO accounts (id) VALUES (100000) ON CONFLICT DO NOTHING")
    time.sleep(1.2)
    with connect(shared_topo.primary.dsn()) as conn:
        sample = sample_lag(conn, shared_topo.slot)
    age = execute(su(shared_topo, "replica"),
                  "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())")[0][0]
    assert sample.streaming and sample.replay_bytes == 0
    # The timestamp age is not lag: it grows with primary idleness while the replica is fully caught up.
    assert float(age) > 1.0


def test_gate_fails_on_lag_over_threshold_then_passes_after_catch_up(shared_topo):
    replica_su = su(shared_topo, "replica")
    execute(replica_su, "SELECT pg_wal_replay_pause()")
    try:
        execute(su(shared_topo), "CREATE TABLE IF NOT EXISTS bulk (id int, pad text)")
        execute(su(shared_topo), "INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
        report = run_lag_gate(shared_topo.primary.dsn(), shared_topo.slot,
                              config=GateConfig(max_lag_bytes=1024 * 1024, window_seconds=0.5, timeout_seconds=1.5))
        assert not report.passed
        assert "replay lag" in report.last_detail and report.max_lag_bytes_observed >= 1024 * 1024
        # Asking the replica too reports the paused replay in words.
        report = run_lag_gate(shared_topo.primary.dsn(), shared_topo.slot, replica_dsn=shared_topo.replica.dsn(),
                              config=GateConfig(max_lag_bytes=1 << 40, window_seconds=0.3, timeout_seconds=1.0))
        assert not report.passed and "paused" in report.last_detail
    finally:
        execute(replica_su, "SELECT pg_wal_replay_resume()")
    report = run_lag_gate(shared_topo.primary.dsn(), shared_topo.slot,
                          config=GateConfig(window_seconds=0.5, timeout_seconds=10))
    assert report.passed, report.to_text()
    execute(su(shared_topo), "DROP TABLE bulk")


def test_gate_fails_closed_with_replica_stopped(shared_topo):
    shared_topo.replica.stop()
    try:
        started = time.monotonic()
        report = run_lag_gate(shared_topo.primary.dsn(), shared_topo.slot,
                              config=GateConfig(window_seconds=0.5, timeout_seconds=1.5))
        assert time.monotonic() - started < 5  # bounded
        assert not report.passed
        assert "no streaming walsender" in report.last_detail and shared_topo.slot in report.last_detail
        with pytest.raises(LagGateFailed, match="FAILED"):
            require_lag_gate(shared_topo.primary.dsn(), shared_topo.slot,
                             config=GateConfig(window_seconds=0.2, timeout_seconds=0.6))
        with pytest.raises(ReplicaNotStreaming, match="not streaming"):
            verify_streaming(shared_topo.primary.dsn(), shared_topo.slot, timeout=0.5)
        # Unknown replica name: also closed, with a different explanation.
        report = run_lag_gate(shared_topo.primary.dsn(), "no_such_slot",
                              config=GateConfig(window_seconds=0.2, timeout_seconds=0.5))
        assert not report.passed and "never attached" in report.last_detail
    finally:
        ensure_replica_streaming(shared_topo)


def test_gate_fails_closed_when_primary_unreachable(shared_topo):
    dsn = shared_topo.primary.dsn().replace(f"port={shared_topo.primary.port}", "port=1")
    report = run_lag_gate(dsn, shared_topo.slot, config=GateConfig(window_seconds=0.2, timeout_seconds=1.0))
    assert not report.passed and "cannot connect" in report.last_detail
    assert "postgres-test-password" not in report.to_text()
