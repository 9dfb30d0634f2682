"""The migration journal: one row per (migration, step), plus the backfill checkpoints.

Every unit of a step (one SQL statement, one backfill, one trigger statement) is journaled
as it completes, with the checksum of each completed unit. Re-running an applied step is a
no-op; re-running a step whose files changed after it was applied is an error; re-running a
step that failed part-way resumes after its last completed unit, as long as the completed
units are unchanged. A step whose down step ran keeps its row, marked ``reverted`` (when, how many
times): it counts as never applied, and applying it again runs it in full; the history of what ran
and who ran it stays in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from bazbii_db.rows import one_value

SCHEMA = "bazbii_migrations"
STATUSES = ("running", "failed", "applied", "reverted")
_STATUS_CHECK = sql.SQL("CHECK (status IN ({}))").format(sql.SQL(", ").join(map(sql.Literal, STATUSES)))


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, name)


DDL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             migration_id text NOT NULL,
             step text NOT NULL CHECK (step IN ('expand', 'migrate', 'contract')),
             checksum text NOT NULL,
             status text NOT NULL CONSTRAINT journal_status_check {status_check},
             units_done integer NOT NULL DEFAULT 0,
             unit_checksums text[] NOT NULL DEFAULT '{{}}',
             attempts integer NOT NULL DEFAULT 0,
             started_at timestamptz NOT NULL DEFAULT now(),
             finished_at timestamptz,
             duration_ms bigint,
             app_versions text[] NOT NULL DEFAULT '{{}}',
             runner text NOT NULL DEFAULT '',
             last_error text,
             reverted_at timestamptz,
             reverts integer NOT NULL DEFAULT 0,
             UNIQUE (migration_id, step)
           )"""
    ).format(_ident("journal"), status_check=_STATUS_CHECK),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
             migration_id text NOT NULL,
             name text NOT NULL,
             spec_checksum text NOT NULL,
             table_name text NOT NULL,
             last_key bigint NOT NULL,
             upper_key bigint NOT NULL,
             rows_changed bigint NOT NULL DEFAULT 0,
             keys_done bigint NOT NULL DEFAULT 0,
             batches bigint NOT NULL DEFAULT 0,
             started_at timestamptz NOT NULL DEFAULT now(),
             updated_at timestamptz NOT NULL DEFAULT now(),
             finished_at timestamptz,
             PRIMARY KEY (migration_id, name)
           )"""
    ).format(_ident("backfill_checkpoint")),
]


@dataclass
class JournalEntry:
    id: int
    migration_id: str
    step: str
    checksum: str
    status: str
    units_done: int
    unit_checksums: list[str]
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    app_versions: list[str]
    runner: str
    last_error: str | None
    reverted_at: datetime | None = None
    reverts: int = 0


@dataclass
class Checkpoint:
    """Where a backfill is: every key up to ``last_key`` is done (its batches committed with this row)."""

    migration_id: str
    name: str
    table_name: str
    last_key: int
    upper_key: int
    rows_changed: int
    keys_done: int
    batches: int
    updated_at: datetime
    finished_at: datetime | None


class Journal:
    """Journal access over the runner's autocommit control connection."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def ensure(self) -> None:
        for stmt in DDL:
            self.conn.execute(stmt)

    def upgrade(self) -> None:
        """Bring a journal created by an earlier version up to date (a revert keeps its row, marked reverted).

        Only what is missing is changed: the journal is small, and the runner holds its lock.
        """
        have = {r[0] for r in self.conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (f"{SCHEMA}.journal",)).fetchall()}
        if "reverted_at" not in have:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN reverted_at timestamptz").format(_ident("journal")))
        if "reverts" not in have:
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN reverts integer NOT NULL DEFAULT 0")
                              .format(_ident("journal")))
        check = self.conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%%status%%'", (f"{SCHEMA}.journal",)).fetchone()
        if check is None or "'reverted'" not in check[1]:
            drop = sql.SQL("DROP CONSTRAINT {}, ").format(sql.Identifier(check[0])) if check else sql.SQL("")
            self.conn.execute(sql.SQL("ALTER TABLE {} {}ADD CONSTRAINT journal_status_check {}").format(
                _ident("journal"), drop, _STATUS_CHECK))

    def exists(self) -> bool:
        return one_value(self.conn, "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.journal",))

    def get(self, migration_id: str, step: str) -> JournalEntry | None:
        with self.conn.cursor(row_factory=class_row(JournalEntry)) as cur:
            cur.execute(sql.SQL("SELECT * FROM {} WHERE migration_id = %s AND step = %s").format(_ident("journal")),
                        (migration_id, step))
            return cur.fetchone()

    def in_effect(self, migration_id: str, step: str) -> bool:
        """The step ran (applied, failed part-way or running) and was not reverted since."""
        entry = self.get(migration_id, step)
        return entry is not None and entry.status != "reverted"

    def entries(self) -> list[JournalEntry]:
        if not self.exists():
            return []
        with self.conn.cursor(row_factory=class_row(JournalEntry)) as cur:
            cur.execute(sql.SQL("SELECT * FROM {} ORDER BY migration_id, array_position("
                                "ARRAY['expand','migrate','contract'], step)").format(_ident("journal")))
            return cur.fetchall()

    def checkpoints(self) -> list[Checkpoint]:
        if not self.exists():
            return []
        with self.conn.cursor(row_factory=class_row(Checkpoint)) as cur:
            cur.execute(sql.SQL("SELECT migration_id, name, table_name, last_key, upper_key, rows_changed, keys_done, "
                                "batches, updated_at, finished_at FROM {} ORDER BY migration_id, name")
                        .format(_ident("backfill_checkpoint")))
            return cur.fetchall()

    def start(self, migration_id: str, step: str, checksum: str, runner: str, app_versions: list[str]) -> None:
        self.conn.execute(
            sql.SQL(
                """INSERT INTO {} AS j (migration_id, step, checksum, status, attempts, runner, app_versions)
                   VALUES (%s, %s, %s, 'running', 1, %s, %s)
                   ON CONFLICT (migration_id, step) DO UPDATE
                      SET checksum = EXCLUDED.checksum, status = 'running', attempts = j.attempts + 1,
                          started_at = now(), finished_at = NULL, duration_ms = NULL,
                          runner = EXCLUDED.runner, app_versions = EXCLUDED.app_versions, last_error = NULL"""
            ).format(_ident("journal")),
            (migration_id, step, checksum, runner, app_versions),
        )

    def unit_done(self, migration_id: str, step: str, unit_checksums: list[str]) -> None:
        self.conn.execute(
            sql.SQL("UPDATE {} SET units_done = %s, unit_checksums = %s WHERE migration_id = %s AND step = %s")
            .format(_ident("journal")),
            (len(unit_checksums), unit_checksums, migration_id, step),
        )

    def finish(self, migration_id: str, step: str) -> None:
        self.conn.execute(
            sql.SQL("""UPDATE {} SET status = 'applied', finished_at = clock_timestamp(),
                              duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint
                        WHERE migration_id = %s AND step = %s""").format(_ident("journal")),
            (migration_id, step),
        )

    def fail(self, migration_id: str, step: str, error: str) -> None:
        self.conn.execute(
            sql.SQL("""UPDATE {} SET status = 'failed', last_error = %s, finished_at = clock_timestamp(),
                              duration_ms = (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint
                        WHERE migration_id = %s AND step = %s""").format(_ident("journal")),
            (error[:4000], migration_id, step),
        )

    def revert(self, migration_id: str, step: str) -> None:
        """A step whose down step ran: it counts as never applied (a later apply runs it in full, no unit is done),
        and its row stays with when it was reverted and how many times."""
        self.conn.execute(
            sql.SQL("""UPDATE {} SET status = 'reverted', units_done = 0, unit_checksums = '{{}}',
                              reverted_at = clock_timestamp(), reverts = reverts + 1
                        WHERE migration_id = %s AND step = %s""").format(_ident("journal")),
            (migration_id, step))

    def applied_ids(self, step: str) -> set[str]:
        if not self.exists():
            return set()
        rows = self.conn.execute(
            sql.SQL("SELECT migration_id FROM {} WHERE step = %s AND status = 'applied'").format(_ident("journal")),
            (step,)).fetchall()
        return {r[0] for r in rows}


def checkpoint_table() -> sql.Identifier:
    return _ident("backfill_checkpoint")
