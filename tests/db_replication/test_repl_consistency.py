"""Consistency check: counts + checksums at a known LSN, catching a row changed on one side only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .repl_helpers import execute, su
from testsupport.replication_topology import WriteLoad
from bazbii_db.replication import check_consistency, parse_lsn

pytestmark = pytest.mark.timeout(90)

MARKER_OLD = "consistency-marker-AAAAAAAA"
MARKER_NEW = "consistency-marker-BBBBBBBB"


def _make_markers(topo) -> None:
    execute(su(topo), "CREATE TABLE IF NOT EXISTS markers (id int PRIMARY KEY, note text NOT NULL)")
    execute(su(topo), "INSERT INTO markers SELECT g, %s || ':' || g || ';' FROM generate_series(1, 200) g ON CONFLICT DO NOTHING",
            (MARKER_OLD,))


def test_check_passes_at_a_known_lsn(shared_topo):
    _make_markers(shared_topo)
    execute(su(shared_topo), "CREATE UNLOGGED TABLE IF NOT EXISTS scratch (x int)")
    report = check_consistency(su(shared_topo), su(shared_topo, "replica"))
    assert report.passed, report.to_text()
    assert {"public.accounts", "public.ledger", "public.markers"} <= set(report.equal)
    assert report.tables_compared >= 3 and not report.differing and not report.unverified
    assert "public.scratch" in report.skipped_unlogged
    # The replica had replayed at least up to the LSN the primary's snapshot was bound to.
    assert parse_lsn(report.replica_replay_lsn) >= parse_lsn(report.checked_lsn)
    assert "postgres-test-password" not in report.to_text()


def test_check_under_concurrent_writes_reports_no_false_difference(shared_topo):
    _make_markers(shared_topo)
    load = WriteLoad(shared_topo.app_dsn(), threads=2, max_seconds=20).start()
    try:
        load.wait_acked(50)
        report = check_consistency(su(shared_topo), su(shared_topo, "replica"), attempts=3)
    finally:
        load.stop()
    assert not report.differing, report.to_text()
    assert "public.markers" in report.equal  # quiet tables are verified while others are being written
    # Tables written during every attempt are reported as unverified, never silently passed.
    assert report.passed == (not report.unverified)


def test_check_catches_a_row_changed_on_the_replica_only(fresh_topo):
    topo = fresh_topo
    _make_markers(topo)
    # Set hint bits/visibility now: later reads on the primary must not log a full-page image
    # (wal_log_hints=on) that the replica would replay over the page this test alters.
    execute(su(topo), "VACUUM (FREEZE) markers")
    execute(su(topo), "CHECKPOINT")
    deadline = time.monotonic() + 10
    target = execute(su(topo), "SELECT pg_current_wal_lsn()::text")[0][0]
    while execute(su(topo, "replica"), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))[0][0] is False:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    execute(su(topo, "replica"), "CHECKPOINT")  # restartpoint: a restart will not replay the rows again
    relpath = execute(su(topo, "replica"), "SELECT pg_relation_filepath('markers')")[0][0]
    topo.replica.stop()
    datafile = Path(topo.replica.datadir) / relpath
    blob = datafile.read_bytes()
    needle = (MARKER_OLD + ":17;").encode()
    assert blob.count(needle) == 1
    # Flip one row's bytes on disk: the kind of silent divergence the check exists to catch.
    datafile.write_bytes(blob.replace(needle, (MARKER_NEW + ":17;").encode()))
    topo.replica.start()
    assert execute(su(topo, "replica"), "SELECT note FROM markers WHERE id = 17")[0][0] == MARKER_NEW + ":17;"

    report = check_consistency(su(topo), su(topo, "replica"), attempts=2)
    assert not report.passed
    assert [d.table for d in report.differing] == ["public.markers"], report.to_text()
    diff = report.differing[0]
    assert diff.primary_rows == diff.replica_rows == 200 and diff.primary_checksum != diff.replica_checksum
    assert "public.accounts" in report.equal and "DIFFERS public.markers" in report.to_text()
    # Restricting to one table works and still finds it.
    only = check_consistency(su(topo), su(topo, "replica"), tables=["public.markers"], attempts=2)
    assert [d.table for d in only.differing] == ["public.markers"] and only.tables_compared == 1


def test_check_reports_missing_table(shared_topo):
    report = check_consistency(su(shared_topo), su(shared_topo, "replica"), tables=["public.nope"])
    assert not report.passed and report.differing[0].status == "missing_on_primary"


def test_a_table_the_replica_has_not_replayed_yet_is_waited_for_not_missing(shared_topo):
    # Replay paused: the replica lags behind a table created on the primary, as it may right after a migration.
    execute(su(shared_topo, "replica"), "SELECT pg_wal_replay_pause()")
    try:
        execute(su(shared_topo), "CREATE TABLE IF NOT EXISTS lagging (id int PRIMARY KEY)")
        execute(su(shared_topo), "INSERT INTO lagging SELECT generate_series(1, 50) ON CONFLICT DO NOTHING")
        paused = check_consistency(su(shared_topo), su(shared_topo, "replica"), catchup_timeout=0.5)
        assert not paused.passed and paused.error.startswith("replica did not replay past "), paused.to_text()
        assert not paused.differing  # lag is not an inconsistency
    finally:
        execute(su(shared_topo, "replica"), "SELECT pg_wal_replay_resume()")
    report = check_consistency(su(shared_topo), su(shared_topo, "replica"))
    assert report.passed and "public.lagging" in report.equal, report.to_text()
