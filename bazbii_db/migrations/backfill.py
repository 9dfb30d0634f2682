"""Batched backfill for the migrate stage.

Rows are changed in primary-key ranges, ``WHERE key > lo AND key <= hi``, one short
transaction per batch. ``hi`` is found with an index scan (``ORDER BY key OFFSET n-1 LIMIT 1``)
so every batch holds about ``batch_size`` rows even when keys have gaps. Deliberately not a
CTE + ``UPDATE ... FROM`` join: past a few thousand rows per batch its plan flips to a merge
join that rescans the index from the start every batch.

Exactly once across crashes: the batch's change and the checkpoint row
(``bazbii_migrations.backfill_checkpoint``) are updated in the same transaction. After
``kill -9`` either both committed or neither did, and a rerun resumes at the checkpoint's
``last_key``. The key range's upper end is fixed when the backfill first starts; rows inserted
later are written by the new application version (or a dual-write trigger).

Throttling, checked at most every ``probe_interval_s`` between batches:
* replica replay lag: the maximum over a sliding window of samples must stay under
  ``max_lag_s`` (one good sample after a spike is not enough to resume);
* lock waits: while any other session has been waiting on a lock for more than
  ``lock_wait_threshold_ms``, the backfill pauses;
* our own batches run with ``lock_timeout``: a batch that hits a row lock held by the
  application is rolled back and retried (smaller, after a jittered backoff).
Optionally ``target_batch_ms`` adapts the batch size so each batch holds its row locks for
about that long.

Latency budget (``latency``, see ``throttle.py``): the share of the time batches run adapts to hold
the application's p99 (a probe through the same pooler, and Prometheus where wired) within a budget,
by default 1.5x the baseline measured before the first batch but at least 1 ms over it. It replaces
``target_batch_ms`` (its batches are sized to run ``chunk_ms`` instead).

Setting ``stop`` ends the run cleanly after the current batch with :class:`BackfillStopped` (an
error, so that no caller takes a stopped backfill for a finished one); the checkpoint is kept and a
rerun resumes there. The waits between batches (the pause, a throttle) end as soon as it is set; a
batch in flight is never interrupted (it commits with its checkpoint), so the stop comes within one
batch. The CLI sets it on SIGINT/SIGTERM (``bazbii_db.stopping``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import psycopg
from psycopg import errors, sql
from rich.console import Console

from bazbii_db.migrations.dsn import redact, with_params
from bazbii_db.migrations.dualwrite import BACKFILL_GUC, table_ident
from bazbii_db.migrations.errors import BackfillError, BackfillThrottled, MigrationStopped
from bazbii_db.migrations.executor import backoff_delay, configure_session
from bazbii_db.migrations.journal import checkpoint_table
from bazbii_db.migrations.progress import BackfillProgress
from bazbii_db.migrations.spec import BackfillSpec
from bazbii_db.migrations.probe import PoolerProbe
from bazbii_db.migrations.throttle import LatencyBudget, LatencyProbeFailed, LatencySource, LatencyThrottle, Setting
from bazbii_db.rows import fetch_row, one_row, one_value
from bazbii_db.stopping import stop_reason

log = logging.getLogger("bazbii_db.migrations")


# --------------------------------------------------------------------------------------
# Lag probes
# --------------------------------------------------------------------------------------
class LagProbe(Protocol):
    def sample(self) -> float:
        """Current replication lag in seconds (max over replicas)."""

    def close(self) -> None: ...


REPLICA_LAG_SQL = """
SELECT CASE
         WHEN NOT pg_is_in_recovery() THEN 0
         WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
       END::float8
"""


class ReplicaLagProbe:
    """Lag measured on each replica: time since the last replayed commit while WAL is pending replay."""

    def __init__(self, dsns: list[str], application_name: str = "bazbii-migrate lag probe"):
        self.dsns = list(dsns)
        self.application_name = application_name
        self.conns: list[psycopg.Connection | None] = [None] * len(self.dsns)

    def sample(self) -> float:
        worst = 0.0
        for i, dsn in enumerate(self.dsns):
            try:
                conn = self.conns[i]
                if conn is None or conn.closed:
                    conn = self.conns[i] = psycopg.connect(with_params(dsn, application_name=self.application_name),
                                                           autocommit=True)
                worst = max(worst, float(one_value(conn, REPLICA_LAG_SQL)))
            except psycopg.OperationalError as exc:
                # An unreachable replica is not "no lag": report it as infinitely behind.
                log.warning("lag probe: replica unreachable: %s", redact(str(exc), dsn))
                self.conns[i] = None
                worst = float("inf")
        return worst

    def close(self) -> None:
        for conn in self.conns:
            if conn is not None and not conn.closed:
                conn.close()


class PrimaryLagProbe:
    """Lag from the primary's pg_stat_replication.replay_lag (max over standbys)."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def sample(self) -> float:
        return float(one_value(
            self.conn, "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication"))

    def close(self) -> None:
        pass


class LagWindow:
    """Maximum of the samples taken in the last ``window_s`` seconds."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, lag: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.samples.append((now, lag))
        while self.samples and self.samples[0][0] < now - self.window_s:
            self.samples.popleft()
        return self.max()

    def max(self) -> float:
        return max((lag for _, lag in self.samples), default=0.0)


# --------------------------------------------------------------------------------------
# Backfill
# --------------------------------------------------------------------------------------
class BackfillStopped(MigrationStopped, BackfillError):
    """``BackfillConfig.stop`` was set: the run ended before the last key, its checkpoint kept."""

    def __init__(self, message: str, result: "BackfillResult"):
        super().__init__(message)
        self.result = result


@dataclass
class BackfillConfig:
    batch_size: int | None = None  # overrides the spec's batch_size
    pause_ms: int | None = None  # overrides the spec's pause_ms
    target_batch_ms: int | None = None  # overrides the spec's target_batch_ms (adaptive sizing)
    min_batch_size: int = 50
    max_batch_size: int = 50_000
    lock_timeout_ms: int = 1000
    statement_timeout_ms: int = 120_000
    max_lock_retries: int = 20
    retry_base_s: float = 0.1
    retry_max_s: float = 2.0
    lag_probe: LagProbe | None = None
    max_lag_s: float = 5.0
    lag_window_s: float = 5.0
    lock_wait_threshold_ms: int | None = 200  # None: do not throttle on other sessions' lock waits
    probe_interval_s: float = 0.25
    throttle_sleep_s: float = 0.25
    max_throttle_s: float = 600.0
    # Batches commit without waiting for their WAL flush. Safe for exactly-once: a batch and its
    # checkpoint commit together, so a server crash loses both and the rerun redoes that batch.
    synchronous_commit: bool = False
    progress_interval_s: float = 10.0
    console: Console | None = None  # for progress output (default: stderr)
    latency: LatencyBudget | None = None  # overrides the spec's latency table (latency-aware throttle)
    latency_sources: tuple[LatencySource, ...] = ()  # more sources besides the probe and Prometheus
    probe_dsn: str | None = None  # the pooler the application uses, when the backfill's own DSN is not it
    # reads latency.prometheus_query: (PromQL, read interval s) -> a source; the CLI's --prometheus-url gives
    # bazbii_analysis.latency.PrometheusLatency.connect bound to that endpoint
    prometheus: Callable[[str, float], LatencySource] | None = None
    stop: threading.Event | None = None  # set to stop after the current batch: BackfillStopped, checkpoint kept

    def __post_init__(self) -> None:
        # a table of settings (TOML, provider inputs) or true becomes a LatencyBudget, validated there
        if self.latency is not None and not isinstance(self.latency, LatencyBudget):
            self.latency = LatencyBudget.from_mapping(self.latency, "latency")


@dataclass
class BackfillResult:
    name: str
    rows_changed: int = 0
    keys_done: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    already_done: bool = False
    resumed_from_key: int | None = None
    upper_key: int | None = None
    total_rows_changed: int = 0
    lock_timeouts: int = 0
    throttle_events: list[tuple[str, float]] = field(default_factory=list)
    batch_hold_ms: list[float] = field(default_factory=list)
    final_batch_size: int = 0
    final_pause_ms: float = 0.0
    stopped: bool = False  # ended by config.stop before the last key
    last_key: int | None = None  # the checkpoint's key when the run ended: every key up to it is done
    latency_baseline_ms: dict[str, float] = field(default_factory=dict)
    latency_budget_ms: dict[str, float] = field(default_factory=dict)
    max_budget_usage: float | None = None  # worst reading / budget seen while running
    control_log: list = field(default_factory=list)  # throttle.ControlStep, one per latency decision

    @property
    def rows_per_s(self) -> float:
        return self.keys_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def max_batch_hold_ms(self) -> float:
        return max(self.batch_hold_ms, default=0.0)


def _split(name: str) -> tuple[str | None, str]:
    parts = name.split(".")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _expr(text: str) -> sql.SQL:
    # The statement is executed with parameters, so a literal % in an expression must be doubled.
    return sql.SQL(text.replace("%", "%%"))


def batch_statement(spec: BackfillSpec) -> sql.Composed:
    """The per-batch DML, with two parameters: (lo, hi]."""
    key = sql.Identifier(spec.key)
    cond = sql.SQL("{key} > %s AND {key} <= %s").format(key=key)
    if spec.where:
        cond = sql.SQL("{} AND ({})").format(cond, _expr(spec.where))
    if spec.kind == "update":
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = ({})").format(sql.Identifier(col), _expr(expr)) for col, expr in spec.set.items())
        return sql.SQL("UPDATE {table} SET {assign} WHERE {cond}").format(
            table=table_ident(spec.table), assign=assignments, cond=cond)
    if spec.target is None:  # BackfillSpec.from_toml refuses a copy without one
        raise BackfillError(f"backfill {spec.name}: kind='copy' needs a target")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.columns)
    exprs = sql.SQL(", ").join(sql.SQL("({})").format(_expr(e)) for e in spec.columns.values())
    query = sql.SQL("INSERT INTO {target} ({cols}) SELECT {exprs} FROM {table} WHERE {cond}").format(
        target=table_ident(spec.target), cols=cols, exprs=exprs, table=table_ident(spec.table), cond=cond)
    if spec.conflict:
        query = sql.SQL("{} ON CONFLICT ({}) DO NOTHING").format(
            query, sql.SQL(", ").join(sql.Identifier(c) for c in spec.conflict))
    return query


class Backfill:
    def __init__(self, dsn: str, migration_id: str, spec: BackfillSpec, spec_checksum: str,
                 config: BackfillConfig | None = None, application_name: str = "bazbii-migrate backfill",
                 exclude_pids: tuple[int, ...] = ()):
        self.dsn = dsn
        self.migration_id = migration_id
        self.spec = spec
        self.spec_checksum = spec_checksum
        self.config = config or BackfillConfig()
        self.application_name = application_name
        self.exclude_pids = list(exclude_pids)
        self.rng = random.Random()
        self.window = LagWindow(self.config.lag_window_s)
        self._last_probe = 0.0
        self.throttle: LatencyThrottle | None = None  # live while run() is, for progress and tests

    # --- setup --------------------------------------------------------------------------
    def _check_table(self, conn: psycopg.Connection) -> None:
        schema, name = _split(self.spec.table)
        regname = sql.Identifier(*(p for p in (schema, name) if p)).as_string(conn)
        row = conn.execute(
            """
            SELECT format_type(a.atttypid, NULL),
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indkey[0] = a.attnum
                                                    AND i.indisvalid)
              FROM pg_attribute a
             WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
            """, (regname, self.spec.key)).fetchone()
        conn.rollback()
        if row is None:
            raise BackfillError(f"backfill {self.spec.name}: table {self.spec.table} or key column "
                                f"{self.spec.key} does not exist")
        if row[0] not in ("smallint", "integer", "bigint"):
            raise BackfillError(f"backfill {self.spec.name}: key {self.spec.key} is {row[0]}; range batches "
                                "need an integer key")
        if not row[1]:
            raise BackfillError(f"backfill {self.spec.name}: no valid index leads with {self.spec.key}; each "
                                "batch would scan the whole table")

    def _load_checkpoint(self, conn: psycopg.Connection) -> tuple[int, int, int, bool, bool]:
        """(last_key, upper_key, total_rows_changed, finished, resumed)."""
        cp = checkpoint_table()
        row = conn.execute(
            sql.SQL("SELECT spec_checksum, last_key, upper_key, rows_changed, finished_at IS NOT NULL FROM {} "
                    "WHERE migration_id = %s AND name = %s").format(cp),
            (self.migration_id, self.spec.name)).fetchone()
        if row is not None:
            conn.rollback()
            if row[0] != self.spec_checksum:
                raise BackfillError(f"backfill {self.spec.name}: its definition changed after it started "
                                    f"(checkpoint at key {row[1]}); restore the original spec")
            return row[1], row[2], row[3], row[4], True
        key = sql.Identifier(self.spec.key)
        lo, hi = one_row(conn, sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(
            k=key, t=table_ident(self.spec.table)))
        last, upper = (lo - 1, hi) if lo is not None else (0, 0)
        conn.execute(sql.SQL("INSERT INTO {} (migration_id, name, spec_checksum, table_name, last_key, upper_key) "
                             "VALUES (%s, %s, %s, %s, %s, %s)").format(cp),
                     (self.migration_id, self.spec.name, self.spec_checksum, self.spec.table, last, upper))
        conn.commit()
        return last, upper, 0, False, False

    def _sleep(self, seconds: float) -> bool:
        """Sleep between batches, ending early when a stop is requested; True if it was."""
        stop = self.config.stop
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)

    # --- throttling ---------------------------------------------------------------------
    def _lock_waiters(self, monitor: psycopg.Connection, threshold_ms: int) -> int:
        return one_value(
            monitor,
            """
            SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND pid <> ALL (%s::int[]) AND pid <> pg_backend_pid()
               AND now() - query_start > make_interval(secs => %s)
            """, (self.exclude_pids, threshold_ms / 1000.0))

    def _throttle_reasons(self, monitor: psycopg.Connection) -> list[str]:
        cfg = self.config
        reasons = []
        if cfg.lag_probe is not None:
            worst = self.window.add(cfg.lag_probe.sample())
            if worst > cfg.max_lag_s:
                reasons.append(f"replica lag {worst:.1f}s over the last {cfg.lag_window_s:g}s > {cfg.max_lag_s:g}s")
        if cfg.lock_wait_threshold_ms is not None:
            waiters = self._lock_waiters(monitor, cfg.lock_wait_threshold_ms)
            if waiters:
                reasons.append(f"{waiters} session(s) waiting on locks for more than {cfg.lock_wait_threshold_ms}ms")
        return reasons

    def _wait_if_throttled(self, monitor: psycopg.Connection, result: BackfillResult,
                           progress: BackfillProgress) -> None:
        cfg = self.config
        now = time.monotonic()
        if now - self._last_probe < cfg.probe_interval_s:
            return
        self._last_probe = now
        started = None
        reasons = self._throttle_reasons(monitor)
        while reasons:
            if started is None:
                started = time.monotonic()
                progress.note("paused: " + "; ".join(reasons))
            waited = time.monotonic() - started
            if waited > cfg.max_throttle_s:
                result.throttle_events.append(("; ".join(reasons), waited))
                raise BackfillThrottled(f"backfill {self.spec.name}: throttled for more than {cfg.max_throttle_s:g}s "
                                        f"({'; '.join(reasons)}); the checkpoint is kept, rerun to resume")
            if self._sleep(cfg.throttle_sleep_s):
                return  # stopping: the loop ends before the next batch
            last_reasons = reasons
            reasons = self._throttle_reasons(monitor)
            if not reasons:
                waited = time.monotonic() - started
                result.throttle_events.append(("; ".join(last_reasons), waited))
                progress.note(f"resumed after {waited:.1f}s")
        self._last_probe = time.monotonic()

    # --- latency budget ---------------------------------------------------------------
    def _latency_throttle(self, batch_size: int, pause_s: float, target_ms: int | None) -> LatencyThrottle | None:
        cfg, spec = self.config, self.spec
        budget = cfg.latency if cfg.latency is not None else spec.latency
        if budget is None:
            return None
        if not 1 <= cfg.min_batch_size <= cfg.max_batch_size:
            raise BackfillError(f"backfill {spec.name}: min_batch_size ({cfg.min_batch_size}) must be at least 1 and "
                                f"at most max_batch_size ({cfg.max_batch_size})")
        if target_ms:
            raise BackfillError(f"backfill {spec.name}: target_batch_ms and a latency budget both adapt the batch "
                                "size; drop target_batch_ms (latency.chunk_ms sizes each batch)")
        sources: list[LatencySource] = []
        if budget.probe:
            sources.append(PoolerProbe(cfg.probe_dsn or self.dsn, budget.probe_query,
                                       keep_s=max(budget.window_s, budget.baseline_s) + 5))
        if budget.prometheus_query and cfg.prometheus is not None:
            sources.append(cfg.prometheus(budget.prometheus_query, budget.prometheus_interval_s))
        elif budget.prometheus_query:
            log.info("backfill %s: latency.prometheus_query needs a Prometheus endpoint (CLI --prometheus-url); "
                     "only %s are measured", spec.name,
                     "the probe and the given sources" if budget.probe else "the given sources")
        sources.extend(cfg.latency_sources)
        if not sources:
            raise BackfillError(f"backfill {spec.name}: latency.probe is false and no other latency source is "
                                "configured; the budget would have nothing to measure")
        return LatencyThrottle(budget, sources, Setting(batch_size, pause_s * 1000.0), cfg.min_batch_size,
                               cfg.max_batch_size)

    def _start_latency_throttle(self, throttle: LatencyThrottle, progress: BackfillProgress) -> None:
        """Start the sources and measure the baseline before the first batch."""
        try:
            for source in throttle.sources:
                source.start()
                pid = getattr(source, "backend_pid", None)  # optional: a source with its own session
                if pid:
                    self.exclude_pids.append(pid)  # our probe waiting is not an app session waiting
            progress.note(f"measuring the latency baseline for {throttle.budget.baseline_s:g}s")
            throttle.measure_baseline(sleep=self._sleep)  # a stop request ends it: the loop then stops
        except psycopg.Error as exc:
            dsns = [self.dsn] + ([self.config.probe_dsn] if self.config.probe_dsn else [])
            raise BackfillError(f"backfill {self.spec.name}: latency probe: "
                                f"{redact(str(exc).strip(), *dsns)}") from None
        except LatencyProbeFailed as exc:
            raise BackfillError(f"backfill {self.spec.name}: {exc}") from None
        progress.note("latency baseline " + ", ".join(f"{k} {v:.2f} ms" for k, v in throttle.baseline_ms.items())
                      + "; budget " + ", ".join(f"{k} {v:.2f} ms" for k, v in throttle.budget_ms.items()))
        progress.set_status(throttle.status())

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> BackfillResult:
        cfg, spec = self.config, self.spec
        result = BackfillResult(name=spec.name)
        batch_size = max(1, cfg.batch_size or spec.batch_size)
        pause_s = (cfg.pause_ms if cfg.pause_ms is not None else spec.pause_ms) / 1000.0
        target_ms = cfg.target_batch_ms if cfg.target_batch_ms is not None else spec.target_batch_ms
        throttle = self.throttle = self._latency_throttle(batch_size, pause_s, target_ms)
        try:
            self._run(result, batch_size, pause_s, target_ms, throttle)
            if result.stopped:
                raise BackfillStopped(f"backfill {spec.name}: stopped by {stop_reason(cfg.stop)} after "
                                      f"{result.keys_done:,} keys of this run, checkpoint at key {result.last_key} of "
                                      f"{result.upper_key}; the checkpoint is kept, rerun to resume", result)
            return result
        finally:
            if throttle is not None:
                throttle.close()
                result.latency_baseline_ms = dict(throttle.baseline_ms)
                result.latency_budget_ms = dict(throttle.budget_ms)
                result.max_budget_usage = throttle.max_usage if throttle.usage is not None else None
                result.control_log = list(throttle.log)

    def _run(self, result: BackfillResult, batch_size: int, pause_s: float, target_ms: int | None,
             throttle: LatencyThrottle | None) -> BackfillResult:
        cfg, spec = self.config, self.spec
        dsn = with_params(self.dsn, application_name=self.application_name)
        started = time.monotonic()
        with psycopg.connect(dsn) as conn, psycopg.connect(dsn, autocommit=True) as monitor:
            configure_session(conn, cfg.lock_timeout_ms, cfg.statement_timeout_ms)
            conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '60s', false), "
                         "set_config(%s, 'on', false), set_config('synchronous_commit', %s, false)",
                         (BACKFILL_GUC, "on" if cfg.synchronous_commit else "off"))
            conn.commit()
            self.exclude_pids += [conn.info.backend_pid, monitor.info.backend_pid]
            self._check_table(conn)
            last, upper, total_changed, finished, resumed = self._load_checkpoint(conn)
            result.upper_key = upper
            result.last_key = last
            result.total_rows_changed = total_changed
            if finished:
                result.already_done = True
                return result
            if resumed:
                result.resumed_from_key = last
                log.info("backfill %s: resuming after key %s (upper %s)", spec.name, last, upper)
            key = sql.Identifier(spec.key)
            table = table_ident(spec.table)
            total = one_value(conn, sql.SQL("SELECT count(*) FROM {t} WHERE {k} > %s AND {k} <= %s").format(
                t=table, k=key), (last, upper))
            conn.rollback()
            next_hi = sql.SQL("SELECT {k} FROM {t} WHERE {k} > %s AND {k} <= %s ORDER BY {k} OFFSET %s LIMIT 1").format(
                k=key, t=table)
            # The batch's change and its checkpoint are one statement (a data-modifying WITH, not a
            # join: the change itself is the plain key-range statement), sent together with COMMIT
            # in one round trip.
            step = sql.SQL(
                "WITH batch AS ({dml} RETURNING 1) "
                "UPDATE {cp} SET last_key = %s, rows_changed = rows_changed + (SELECT count(*) FROM batch), "
                "keys_done = keys_done + %s, batches = batches + 1, updated_at = now() "
                "WHERE migration_id = %s AND name = %s RETURNING (SELECT count(*) FROM batch)"
            ).format(dml=batch_statement(spec), cp=checkpoint_table())
            label = f"backfill {self.migration_id}/{spec.name}"
            with BackfillProgress(label, total, console=cfg.console, interval_s=cfg.progress_interval_s) as progress:
                if throttle is not None:
                    t_baseline = time.monotonic()
                    self._start_latency_throttle(throttle, progress)
                    started += time.monotonic() - t_baseline  # the baseline is not backfill time
                    batch_size, pause_s = throttle.setting.batch_size, throttle.setting.pause_ms / 1000.0
                retries = 0
                while last < upper:
                    if cfg.stop is not None and cfg.stop.is_set():
                        result.stopped = True
                        progress.outcome = f"stopped by {stop_reason(cfg.stop)} after key {last} of {upper}"
                        progress.note(f"{progress.outcome}; the checkpoint is kept, rerun to resume")
                        break
                    self._wait_if_throttled(monitor, result, progress)
                    try:
                        row = conn.execute(next_hi, (last, upper, batch_size - 1)).fetchone()
                        hi = row[0] if row else upper
                        keys = batch_size if row else max(0, total - progress.done)
                        t0 = time.monotonic()
                        with conn.pipeline():
                            cur = conn.execute(step, (last, hi, hi, keys, self.migration_id, spec.name))
                            conn.commit()
                        hold_ms = (time.monotonic() - t0) * 1000
                        changed = fetch_row(cur, step)[0]
                    except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
                        conn.rollback()
                        result.lock_timeouts += 1
                        retries += 1
                        if retries > cfg.max_lock_retries:
                            raise BackfillError(f"backfill {spec.name}: batch after key {last} could not get its row "
                                                f"locks in {cfg.max_lock_retries} tries ({exc.sqlstate})") from None
                        batch_size = max(cfg.min_batch_size, batch_size // 2)
                        if throttle is not None:
                            throttle.force_batch_size(batch_size)
                        delay = backoff_delay(retries - 1, cfg.retry_base_s, cfg.retry_max_s, self.rng)
                        progress.note(f"batch after key {last} hit lock_timeout ({exc.sqlstate}); retrying with "
                                      f"{batch_size} rows in {delay:.2f}s")
                        self._sleep(delay)
                        continue
                    retries = 0
                    last = result.last_key = hi
                    result.batches += 1
                    result.rows_changed += changed
                    result.keys_done += keys
                    result.batch_hold_ms.append(hold_ms)
                    progress.update(keys, changed)
                    if throttle is not None:
                        try:
                            setting = throttle.after_batch(hold_ms)
                        except LatencyProbeFailed as exc:
                            raise BackfillError(f"backfill {spec.name}: {exc}; the checkpoint is kept, rerun to "
                                                "resume") from None
                        batch_size, pause_s = setting.batch_size, setting.pause_ms / 1000.0
                        progress.set_status(throttle.status())
                    elif target_ms:
                        # grow gently, shrink fast: a slow batch halves the next one at most
                        factor = min(1.25, max(0.5, target_ms / max(hold_ms, 0.1)))
                        batch_size = int(min(cfg.max_batch_size, max(cfg.min_batch_size, batch_size * factor)))
                    if pause_s:
                        self._sleep(pause_s)
            if not result.stopped:
                conn.execute(sql.SQL("UPDATE {} SET finished_at = now() WHERE migration_id = %s AND name = %s").format(
                    checkpoint_table()), (self.migration_id, spec.name))
                conn.commit()
        result.elapsed_s = time.monotonic() - started
        result.final_batch_size = batch_size
        result.final_pause_ms = pause_s * 1000.0
        result.total_rows_changed = total_changed + result.rows_changed
        return result
