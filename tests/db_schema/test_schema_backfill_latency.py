"""The latency-aware throttle against real PostgreSQL: the probe measures real waits, and the
backfill runs its batches less of the time when the application's latency rises, more when it falls.

Latency is driven for real: a session takes and releases an ACCESS EXCLUSIVE lock on the table the
probe (standing in for the application's point read) queries, so every probe in a contended
stretch waits behind it. Every wait is a bounded poll on the throttle's live state, so a loaded
machine makes the test slower, not flaky.
"""

from __future__ import annotations

import io
import threading
import time

import psycopg
import pytest
from rich.console import Console

from bazbii_db.migrations import BackfillError
from bazbii_db.migrations.backfill import Backfill, BackfillStopped
from bazbii_db.migrations.errors import MigrationStopped
from bazbii_db.migrations.probe import PoolerProbe
from bazbii_db.migrations.throttle import BREACH, CLEAN, MIN_DUTY, LatencyBudget

from .conftest import apply_all, execute, fetch, runner, write_migration
from .test_schema_backfill import counters_db, hits_histogram, hits_spec, quiet

pytestmark = pytest.mark.timeout(120)

APP_READ = "SELECT id FROM app_hot WHERE id = 1"


def app_table(dsn: str) -> None:
    execute(dsn, "CREATE TABLE app_hot (id int PRIMARY KEY)")
    execute(dsn, "INSERT INTO app_hot VALUES (1)")


class Contention:
    """Holds ACCESS EXCLUSIVE on app_hot for ``hold_s`` out of every ``hold_s + gap_s`` while on."""

    def __init__(self, dsn: str, hold_s: float = 0.12, gap_s: float = 0.03):
        self.dsn, self.hold_s, self.gap_s = dsn, hold_s, gap_s
        self.on = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn) as conn:
            while not self.done.is_set():
                if not self.on.wait(0.02):
                    continue
                conn.execute("LOCK TABLE app_hot IN ACCESS EXCLUSIVE MODE")
                time.sleep(self.hold_s)
                conn.commit()
                time.sleep(self.gap_s)

    def __enter__(self) -> "Contention":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(10)


def run_until_stopped(backfill: Backfill, box: dict) -> None:
    """Thread body: the run must end by ``stop`` (BackfillStopped), not by finishing or failing."""
    try:
        backfill.run()
        box["error"] = "the backfill finished before the test stopped it"
    except BackfillStopped as stopped:
        box["result"] = stopped.result
    except Exception as exc:  # reported by the test, not lost in the thread
        box["error"] = repr(exc)


def wait_for(what: str, cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(0.02)


def test_probe_measures_real_waits_and_counts_a_stall(db):
    app_table(db)
    probe = PoolerProbe(db, APP_READ, interval_ms=10, keep_s=5.0, min_samples=5)
    probe.start()
    try:
        t0 = time.monotonic()
        wait_for("the probe has a reading", lambda: probe.read(t0) is not None, 10)
        quiet_ms = probe.read(t0)
        with psycopg.connect(db) as holder:
            holder.execute("LOCK TABLE app_hot IN ACCESS EXCLUSIVE MODE")
            locked_at = time.monotonic()
            time.sleep(0.4)
            # the probe is stuck behind the lock: its reading is the stall so far, not "no data"
            stalled = probe.read(locked_at)
            # and counted as every probe it should have sent meanwhile, all slower than a 100 ms budget
            slow, total = probe.count_slow(locked_at, 100.0)
            holder.commit()
        assert stalled is not None and stalled >= 300, (quiet_ms, stalled)
        assert slow >= 30 and total - slow <= 1, (slow, total)  # 400 ms at 10 ms; at most one probe before the lock
        wait_for("the probe recorded the finished wait", lambda: (probe.read(locked_at) or 0) >= 350, 10)
        assert quiet_ms < stalled
    finally:
        probe.close()
    # closed: its server session ends (the backend exits a moment after the client disconnects)
    assert probe.backend_pid
    wait_for("the probe's session ended",
             lambda: not fetch(db, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (probe.backend_pid,)), 5)


def test_a_write_probe_times_commits(db):
    """A backfill's WAL slows the application's commits: a probe may be a write without RETURNING."""
    app_table(db)
    probe = PoolerProbe(db, "UPDATE app_hot SET id = id WHERE id = 1", interval_ms=5, keep_s=5.0, min_samples=5)
    probe.start()
    try:
        t0 = time.monotonic()
        wait_for("the write probe has a reading", lambda: probe.read(t0) is not None, 10)
        assert probe.error is None
        with psycopg.connect(db) as holder:  # a row lock held elsewhere: the probe's UPDATE waits
            holder.execute("SELECT id FROM app_hot WHERE id = 1 FOR UPDATE")
            locked_at = time.monotonic()
            time.sleep(0.3)
            holder.commit()
        wait_for("the write probe recorded the wait", lambda: (probe.read(locked_at) or 0) >= 250, 10)
    finally:
        probe.close()


def test_the_duty_falls_while_the_applications_latency_is_over_budget_and_rises_after(db):
    counters_db(db, n=300_000, step=1)
    app_table(db)
    budget = LatencyBudget(budget_ms=50.0, baseline_s=0.5, probe_query=APP_READ, window_s=0.3, start_duty=0.2,
                           increase=0.1)
    stop = threading.Event()
    backfill = Backfill(db, "m", hits_spec(batch_size=100), "c",
                        quiet(latency=budget, stop=stop, max_batch_size=1000, lock_wait_threshold_ms=None))
    box: dict = {}
    worker = threading.Thread(target=run_until_stopped, args=(backfill, box), daemon=True)
    duty = lambda: backfill.throttle.duty if backfill.throttle and backfill.throttle.budget_ms else 0.0  # noqa: E731
    with Contention(db) as contention:
        worker.start()
        try:
            # quiet: latency is far under budget, clean windows raise the duty
            wait_for("the duty rises while latency is low", lambda: duty() >= 0.5)
            # contended: the app's read waits up to 120 ms behind the lock, over the 50 ms budget
            contention.on.set()
            wait_for("the duty falls to its floor", lambda: duty() == MIN_DUTY)
            assert backfill.throttle.usage > 1.0
            pause = backfill.throttle.setting.pause_ms
            # quiet again: it rises again
            contention.on.clear()
            wait_for("the duty rises again", lambda: duty() >= 0.1, 60)
        finally:
            stop.set()
            worker.join(60)
    assert "error" not in box, box["error"]
    result = box["result"]
    assert result.stopped and result.latency_budget_ms == {"probe": 50.0}
    assert pause > 100  # at the floor a batch (sized to run 5 ms) is followed by about 200 times its own time
    verdicts = [step.verdict for step in result.control_log]
    first_breach = verdicts.index(BREACH)
    assert CLEAN in verdicts[:first_breach] and CLEAN in verdicts[first_breach:]
    assert max(step.usage for step in result.control_log) > 1.0
    assert max(result.batch_hold_ms) < 50  # each batch sized to run about chunk_ms (5 ms)
    # stopped cleanly: the checkpoint is kept and a rerun finishes exactly once per row
    assert fetch(db, "SELECT finished_at IS NULL FROM bazbii_migrations.backfill_checkpoint") == [(True,)]
    rest = Backfill(db, "m", hits_spec(batch_size=5000), "c", quiet()).run()
    assert rest.resumed_from_key is not None and rest.total_rows_changed == 300_000
    assert hits_histogram(db) == [(1, 300_000)]


def test_default_budget_is_the_baseline_times_one_and_a_half_at_least_one_ms_over_it_and_progress_shows_it(db):
    counters_db(db, n=3000)
    out = io.StringIO()
    budget = LatencyBudget(baseline_s=0.5, window_s=0.1)
    result = Backfill(db, "m", hits_spec(batch_size=100), "c",
                      quiet(latency=budget, max_batch_size=100, console=Console(file=out, force_terminal=False,
                                                                                width=300), progress_interval_s=0.2)
                      ).run()
    (baseline,) = result.latency_baseline_ms.values()
    assert baseline > 0 and result.latency_budget_ms["probe"] == pytest.approx(max(1.5 * baseline, baseline + 1.0))
    assert result.max_budget_usage is not None and result.control_log  # 30 batches at 5 % of the time: windows
    text = out.getvalue()
    assert "latency baseline" in text and "% of budget" in text and "of the time" in text, text
    assert hits_histogram(db) == [(1, 3000)]
    tty = io.StringIO()
    Backfill(db, "m", hits_spec(name="bar", batch_size=100), "c",
             quiet(latency=budget, max_batch_size=100, console=Console(file=tty, force_terminal=True, width=300))).run()
    bars = [line for line in tty.getvalue().splitlines() if "━" in line]
    assert bars and any("% of budget" in line for line in bars)  # the budget in use beside the bar
    with pytest.raises(BackfillError, match=r"min_batch_size \(500\) must be at least 1 and at most max_batch_size"):
        Backfill(db, "m", hits_spec(name="bounds"), "c", quiet(latency=budget, min_batch_size=500,
                                                               max_batch_size=100)).run()


def test_latency_settings_that_cannot_work_fail_before_any_row_changes(db):
    counters_db(db, n=500)
    with pytest.raises(BackfillError, match=r"backfill hits: latency probe: .*nope"):
        Backfill(db, "m", hits_spec(), "c", quiet(latency=LatencyBudget(probe_query="SELECT * FROM nope"))).run()
    with pytest.raises(BackfillError, match="target_batch_ms and a latency budget"):
        Backfill(db, "m", hits_spec(name="h2", target_batch_ms=20), "c", quiet(latency=LatencyBudget())).run()
    with pytest.raises(BackfillError, match="latency.probe is false and no other latency source"):
        Backfill(db, "m", hits_spec(name="h3"), "c", quiet(latency=LatencyBudget(probe=False))).run()
    assert hits_histogram(db) == [(0, 500)]


def test_the_migration_toml_latency_table_reaches_the_backfill(db, small_dir):
    import shutil

    shutil.rmtree(small_dir / "0002_add_category")
    apply_all(db, small_dir, "0001_init")
    write_migration(small_dir, "0007_counters",
                    '[[backfill]]\nname = "hits"\ntable = "counters"\nset = { hits = "hits + 1" }\nbatch_size = 100\n'
                    '[backfill.latency]\nbudget_ratio = 3.0\nfloor_ms = 0\nbaseline_s = 0.3\nwindow_s = 0.2\n',
                    expand="CREATE TABLE IF NOT EXISTS counters (id bigint PRIMARY KEY, hits integer NOT NULL "
                           "DEFAULT 0);\n")
    runner(db, small_dir).apply("0007_counters", "expand")
    execute(db, "INSERT INTO counters (id) SELECT g FROM generate_series(1, 3000) g")
    fill = runner(db, small_dir).apply("0007_counters", "migrate").backfills[0]
    (baseline,) = fill.latency_baseline_ms.values()
    assert fill.latency_budget_ms["probe"] == pytest.approx(3.0 * baseline)
    assert fill.rows_changed == 3000 and hits_histogram(db) == [(1, 3000)]


def test_probe_through_a_transaction_pooling_pgbouncer(db):
    """The probe goes through the pooler the application uses (``probe_dsn``): no server-side
    prepared statements, which a transaction pooler hands to other server connections."""
    from psycopg.conninfo import conninfo_to_dict

    from testsupport.localcluster import LocalPgBouncer, make_workdir, remove_workdir

    app_table(db)
    params = conninfo_to_dict(db)
    workdir = make_workdir("bazbii-backfill-bouncer-")
    bouncer = LocalPgBouncer.create(workdir, {params["user"]: params["password"]},
                                    {"app": f"host=127.0.0.1 port={params['port']} dbname={params['dbname']}"},
                                    server_round_robin="1", min_pool_size="3")
    bouncer.start()
    try:
        pooled = bouncer.dsn("app", params["user"], params["password"])
        # open several server connections, so round-robin hands the probe a different one each time
        conns = [psycopg.connect(pooled) for _ in range(3)]
        for c in conns:
            c.execute("SELECT pg_sleep(0.05)")
        for c in conns:
            c.commit()
            c.close()
        probe = PoolerProbe(pooled, APP_READ, interval_ms=5, keep_s=5.0, min_samples=30)
        # (keep_s spans the outage below; min_samples keeps a reading from counting as recovered early)
        probe.start()
        try:
            t0 = time.monotonic()
            wait_for("30 probes through PgBouncer", lambda: probe.read(t0) is not None, 20)
            assert probe.error is None
            assert len(fetch(db, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")) >= 2
            # the pooler goes away: the probe reads as stalled (not "no data"), then recovers
            bouncer.stop()
            down = time.monotonic()
            wait_for("the probe notices", lambda: probe.disconnected is not None, 10)
            wait_for("the stall grows", lambda: (probe.read(down) or 0) >= 500, 10)
            bouncer.start()
            up = time.monotonic()
            wait_for("probes succeed again", lambda: probe.disconnected is None and probe.read(up) is not None
                     and probe.read(up) < 500, 20)
            assert probe.error is None
        finally:
            probe.close()
    finally:
        bouncer.stop()
        remove_workdir(workdir)


def test_a_stopped_backfill_is_not_a_finished_step(db, small_dir):
    import shutil

    shutil.rmtree(small_dir / "0002_add_category")
    apply_all(db, small_dir, "0001_init")
    write_migration(small_dir, "0007_counters",
                    '[[backfill]]\nname = "hits"\ntable = "counters"\nset = { hits = "hits + 1" }\nbatch_size = 100\n',
                    expand="CREATE TABLE IF NOT EXISTS counters (id bigint PRIMARY KEY, hits integer NOT NULL "
                           "DEFAULT 0);\n")
    runner(db, small_dir).apply("0007_counters", "expand")
    execute(db, "INSERT INTO counters (id) SELECT g FROM generate_series(1, 1000) g")
    stop = threading.Event()
    stop.set()
    with pytest.raises(MigrationStopped, match="stopped by a stop request before backfill"):  # before the unit
        runner(db, small_dir, backfill=quiet(stop=stop)).apply("0007_counters", "migrate")
    assert fetch(db, "SELECT status FROM bazbii_migrations.journal WHERE migration_id = '0007_counters' "
                     "AND step = 'migrate'") != [("applied",)]
    assert runner(db, small_dir, backfill=quiet()).apply("0007_counters", "migrate").backfills[0].rows_changed == 1000
    assert hits_histogram(db) == [(1, 1000)]


def test_a_stop_request_during_the_latency_baseline_ends_the_run_at_once(db):
    counters_db(db, n=500)
    stop = threading.Event()
    backfill = Backfill(db, "m", hits_spec(), "c", quiet(latency=LatencyBudget(baseline_s=30), stop=stop))
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(BackfillStopped, match="stopped by a stop request after 0 keys") as exc:
        backfill.run()
    assert time.monotonic() - started < 10  # not the 30 s baseline
    assert exc.value.result.batches == 0 and hits_histogram(db) == [(0, 500)]
