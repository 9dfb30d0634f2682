"""The shadow run: each stage on a throwaway copy of the schema, judged by what PostgreSQL itself says.

A rule catalogue over a parse tree cannot see transaction semantics, name resolution, dependents
or what the catalog knows (a domain's CHECK, an index's predicate, a partitioned table). PostgreSQL
can, so the shadow run asks it:

1. **A scratch database** on a server given to it (``ShadowServer``, a DSN whose role may
   ``CREATE DATABASE``; never the production database): ``bazbii_shadow_<random>``, created from
   ``template0`` and dropped at the end, holding either the migrations before this stage
   (:class:`SqlFile` texts replayed statement by statement) or a schema-only dump of the target
   (:class:`TargetSchema`: ``pg_dump --schema-only`` of a database the caller has a connection to).
   The server must run the production major version (15) and report its messages in English.
2. **The stage, statement by statement, as the runner runs it**: one connection per stage, in
   autocommit with the runner's ``lock_timeout`` and ``statement_timeout`` (capped at
   :data:`STATEMENT_CAP_MS`: on an empty copy nothing takes that long unless it sleeps or loops).
   Each statement runs inside ``BEGIN ... COMMIT``, the implicit transaction the runner's
   autocommit gives it, so that ``pg_locks`` for the session shows its whole lock set before the
   commit; a statement PostgreSQL refuses inside a transaction block (``CREATE INDEX
   CONCURRENTLY``, ``VACUUM``) runs in autocommit as the runner runs it. A DO block or a function
   call runs as the single transaction it is. ``client_min_messages = debug1`` makes the server
   say ``verifying table``, ``validating foreign key constraint`` and ``building index``
   (scans) and, when a constraint proves NOT NULL, that it skipped the scan; a new partition of a
   table with a default partition reads the default partition without a word, which the catalog
   tells (``pg_partitioned_table.partdefid``).
3. **Observations per statement**: the locks it held on relations that existed before the stage
   (indexes and TOAST tables count as their table), tables and materialized views it rewrote (a
   new ``relfilenode``; ``TRUNCATE`` empties, it does not rewrite), tables it scanned and under
   which lock, errors PostgreSQL raised, what a drop cascaded to (PostgreSQL's own ``pg_depend``
   walk, reported as its ``drop cascades to`` notice), views whose existing columns now read
   something else (``pg_get_viewdef``), triggers on existing tables whose function may reject a
   write (a new trigger, or a replaced function, :func:`.doblocks.rejection`), and internal
   foreign-key triggers turned off.
4. **Judged by the stage's rules** (:func:`judge`): in every stage no rewrite of an existing
   relation, no scan under a lock that blocks writes (SHARE or stronger), no error, no cascade,
   no foreign-key trigger off, and no lock that blocks writes held by a DO block or function while
   it goes on running; an ACCESS EXCLUSIVE lock on an existing table is allowed when the statement
   only changed the catalog (no rewrite, no scan). In expand and migrate, where the old
   application version still runs, no change it would notice: a view column that now reads
   something else, a trigger that may reject its writes.

What the shadow cannot judge stays with the static rules (:data:`SHADOW_JUDGES` lists the static
rules a shadow observation replaces): data changes on real data (the copy is empty), lock
timeouts, unbatched updates, anything a statement does to the session. :func:`combine` merges
both; :func:`judged_by` says which analysis judged. Statements that act on the whole server
(``ALTER SYSTEM``, roles, databases, tablespaces, ``COPY`` to or from files) never run here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import psycopg
from pglast import ast, parse_sql
from pglast.enums.parsenodes import AlterTableType
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bazbii_db.dsn import describe, redact, with_params
from bazbii_db.rows import one_row, one_value
from bazbii_plan.facts import DEFAULT_PG_VERSION, pg_paths

from .doblocks import do_holds_lock_while_running_on, parse_body, rejection
from .findings import ERROR, NEEDS_SHADOW_RUN, Finding
from .parsing import Statement, present, split_statements, walk
from .timeouts import RUNNER_LOCK_TIMEOUT_MS
from .triggers import BUILTIN_TRIGGER_FUNCTIONS, TRIGGER_TYPE_BEFORE

SHADOW_DSN_ENV = "BAZBII_SHADOW_DSN"  # where the policy pack (and the CLIs' default) find a shadow server
STATEMENT_CAP_MS = 30_000
SCRATCH_PREFIX = "bazbii_shadow_"
# Static rules about what PostgreSQL does with the schema: a shadow observation of the statement replaces them.
SHADOW_JUDGES = frozenset({
    NEEDS_SHADOW_RUN, "require-concurrent-index-creation", "require-concurrent-reindex", "require-concurrent-refresh",
    "constraint-missing-not-valid", "disallowed-unique-constraint", "exclusion-constraint", "changing-column-type",
    "set-not-null-without-validated-check", "adding-field-with-volatile-default", "adding-column-rewrite",
    "adding-column-of-checked-domain", "table-rewrite", "lock-held-in-do-block", "enum-value-unusable-in-transaction",
    "rejects-old-writes", "drop-cascade", "drop-breaks-dependents", "concurrent-index-on-partitioned-table",
    "refresh-concurrently-needs-unique-index", "using-index-partial", "primary-key-using-index-scans",
})
# Statements with effects beyond the scratch database: never run in the shadow (the static rules refuse them).
_SERVER_WIDE = (ast.AlterSystemStmt, ast.CreateRoleStmt, ast.AlterRoleStmt, ast.AlterRoleSetStmt, ast.DropRoleStmt,
                ast.GrantRoleStmt, ast.CreatedbStmt, ast.DropdbStmt, ast.AlterDatabaseStmt, ast.AlterDatabaseSetStmt,
                ast.CreateTableSpaceStmt, ast.DropTableSpaceStmt, ast.AlterTableSpaceOptionsStmt, ast.CopyStmt,
                ast.LoadStmt, ast.CheckPointStmt, ast.CreateSubscriptionStmt, ast.AlterSubscriptionStmt,
                ast.DropSubscriptionStmt, ast.TransactionStmt, ast.ReassignOwnedStmt)
# PostgreSQL accepts these only inside a transaction block: in the runner's autocommit they fail.
_TRANSACTION_ONLY = (ast.LockStmt, ast.DeclareCursorStmt)
_LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
               "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
_BLOCKS_WRITES = _LOCK_MODES.index("ShareLock")
_PG_DUMP_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
                "user": "PGUSER", "password": "PGPASSWORD", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
                "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
                "application_name": "PGAPPNAME", "options": "PGOPTIONS", "passfile": "PGPASSFILE",
                "target_session_attrs": "PGTARGETSESSIONATTRS"}


class ShadowUnavailable(Exception):
    """The shadow run could not judge (no server, no scratch database, a base that does not apply)."""


@dataclass(frozen=True)
class ShadowServer:
    """A PostgreSQL server the shadow run may create and drop scratch databases on (never production's database)."""

    dsn: str
    lock_timeout_ms: int = RUNNER_LOCK_TIMEOUT_MS  # the runner's settings, so statements run as the runner runs them
    statement_timeout_ms: int = 600_000
    major: int = DEFAULT_PG_VERSION  # production's major version


@dataclass(frozen=True)
class SqlFile:
    label: str  # how findings cite it: migrations/0002_add_category/expand.sql
    sql: str


@dataclass(frozen=True)
class TargetSchema:
    """Base the scratch database on a schema-only dump of this database (read with pg_dump, nothing written)."""

    dsn: str


@dataclass(frozen=True)
class Step:
    """Files run in one runner session; ``stage`` judges them (None: applied only, to restore the schema)."""

    stage: str | None
    files: tuple[SqlFile, ...]


@dataclass
class Observation:
    """One statement as PostgreSQL ran it."""

    file: str
    statement: Statement
    last_line: int
    in_transaction: bool = True
    skipped: str = ""
    locks: dict[str, int] = field(default_factory=dict)  # existing table -> strongest lock mode (index in _LOCK_MODES)
    rewritten: list[str] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)
    proven_not_null: list[str] = field(default_factory=list)
    error: str = ""
    cascaded: list[str] = field(default_factory=list)
    views_changed: list[str] = field(default_factory=list)
    rejecting_triggers: list[str] = field(default_factory=list)
    fk_triggers_disabled: list[str] = field(default_factory=list)
    holds_lock_while: str | None = None  # a DO block or function: what it runs after a lock-taking statement
    seconds: float = 0.0

    @property
    def head(self) -> str:
        text = " ".join(self.statement.text.split())
        return text if len(text) <= 90 else text[:87] + "..."


@dataclass
class ShadowRun:
    """The outcome: what was observed, or why nothing could be."""

    ok: bool
    reason: str = ""
    server_version: str = ""
    base: str = ""
    seconds: float = 0.0
    observed: list[tuple[Step, Observation]] = field(default_factory=list)
    stopped: str = ""  # a statement failed: later statements and steps were not observed

    def findings(self) -> list[Finding]:
        return [f for step, obs in self.observed if step.stage for f in judge(obs, step.stage, self.server_version)]

    def covered(self) -> dict[str, list[tuple[int, int]]]:
        """Per file, the line ranges of the statements PostgreSQL ran (static findings there are replaced)."""
        out: dict[str, list[tuple[int, int]]] = {}
        for step, obs in self.observed:
            if step.stage and not obs.skipped:
                out.setdefault(obs.file, []).append((obs.statement.line, obs.last_line))
        return out


# --------------------------------------------------------------------------- the session
class ShadowSession:
    """A scratch database at the base schema; :meth:`run` observes steps on it. Dropped on exit."""

    def __init__(self, server: ShadowServer, base: Sequence[SqlFile] | TargetSchema):
        self.server = server
        self.base = base
        self.name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
        self.server_version = ""
        self._admin: psycopg.Connection | None = None
        self._created = False

    def __enter__(self) -> "ShadowSession":
        try:
            self._admin = psycopg.connect(with_params(self.server.dsn, application_name="bazbii-shadow admin"),
                                          autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise ShadowUnavailable(f"cannot connect to the shadow server {describe(self.server.dsn)}: "
                                    f"{redact(' '.join(str(exc).split()), self.server.dsn)}") from None
        try:
            self._check_server(self._admin)
            self._admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(self.name)))
            self._created = True
            self._build_base()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._admin is None:
            return
        try:
            if self._created:
                self._admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))
        finally:
            self._admin.close()
            self._admin = None

    def _check_server(self, conn: psycopg.Connection) -> None:
        version, messages = one_row(conn, "SELECT current_setting('server_version_num')::int, "
                                          "current_setting('lc_messages')")
        self.server_version = one_value(conn, "SELECT current_setting('server_version')")
        if version // 10000 != self.server.major:
            raise ShadowUnavailable(f"the shadow server runs PostgreSQL {self.server_version}, production "
                                    f"{self.server.major}: the copy must behave as production does")
        if not (messages in ("", "C", "POSIX") or messages.lower().startswith("en")):
            raise ShadowUnavailable(f"the shadow server reports messages in {messages!r}; the shadow run reads "
                                    "PostgreSQL's English messages (lc_messages C or en_*)")

    def connect(self, purpose: str) -> psycopg.Connection:
        """A connection to the scratch database (only ever to the database this session created)."""
        return psycopg.connect(with_params(self.server.dsn, dbname=self.name, application_name=f"bazbii-shadow {purpose}"),
                               autocommit=True, connect_timeout=10)

    def _build_base(self) -> None:
        if isinstance(self.base, TargetSchema):
            _restore(self.server.dsn, self.name, _dump_schema(self.base.dsn, self.server), self.server.major)
            return
        with self.connect("base") as conn:
            for f in self.base:
                try:
                    statements = split_statements(f.sql)
                except ParseError as exc:
                    raise ShadowUnavailable(f"{f.label} does not parse: {exc.args[0] if exc.args else exc}") from None
                for stmt in statements:
                    if isinstance(stmt.node, _SERVER_WIDE):
                        continue
                    try:
                        conn.execute(stmt.text)
                    except psycopg.Error as exc:
                        raise ShadowUnavailable(f"the base schema does not apply: {f.label}:{stmt.line}: "
                                                f"{_error_text(exc)}") from None

    def describe_base(self) -> str:
        if isinstance(self.base, TargetSchema):
            return f"a schema-only dump of {describe(self.base.dsn)}"
        return f"{len(self.base)} earlier file(s) replayed" if self.base else "an empty database"

    def run(self, steps: Sequence[Step]) -> ShadowRun:
        started = time.monotonic()
        result = ShadowRun(ok=True, server_version=self.server_version, base=self.describe_base())
        for step in steps:
            with self.connect("stage") as conn:
                observer = _Observer(conn, self.server)
                for f in step.files:
                    for obs in observer.run_file(f):
                        result.observed.append((step, obs))
                        if obs.error:
                            result.stopped = f"{f.label}:{obs.statement.line}"
                            break
                    if result.stopped:
                        break
            if result.stopped:
                break
        result.seconds = time.monotonic() - started
        return result


def shadow_run(server: ShadowServer, base: Sequence[SqlFile] | TargetSchema, steps: Sequence[Step]) -> ShadowRun:
    """Build the scratch database, observe ``steps``, drop it; a run that could not happen says why."""
    started = time.monotonic()
    try:
        with ShadowSession(server, base) as session:
            result = session.run(steps)
    except ShadowUnavailable as exc:
        return ShadowRun(ok=False, reason=str(exc), seconds=time.monotonic() - started)
    except psycopg.Error as exc:
        return ShadowRun(ok=False, reason=f"the shadow server failed: {redact(_error_text(exc), server.dsn)}",
                         seconds=time.monotonic() - started)
    result.seconds = time.monotonic() - started
    return result


# --------------------------------------------------------------------------- observing
class _Observer:
    """Runs statements on a stage connection and records what PostgreSQL did."""

    def __init__(self, conn: psycopg.Connection, server: ShadowServer):
        self.conn = conn
        self.messages: list[tuple[str, str]] = []  # (primary, detail): a Diagnostic lives only as long as the callback
        conn.add_notice_handler(lambda d: self.messages.append((d.message_primary or "", d.message_detail or "")))
        conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                     (f"{server.lock_timeout_ms}ms", f"{min(server.statement_timeout_ms, STATEMENT_CAP_MS)}ms"))
        self.existing = self._relations()
        self.surface = self._surface()

    def run_file(self, f: SqlFile) -> Iterator[Observation]:
        try:
            statements = split_statements(f.sql)
        except ParseError:
            return  # the static rules report the syntax error
        for stmt in statements:
            yield self.run_statement(f.label, stmt)

    def run_statement(self, label: str, stmt: Statement) -> Observation:
        obs = Observation(label, stmt, stmt.line + stmt.text.count("\n"))
        if isinstance(stmt.node, _SERVER_WIDE):
            obs.skipped = f"{stmt.kind} acts beyond the scratch database"
            return obs
        started = time.monotonic()
        self.conn.execute("SET client_min_messages = debug1")  # the stage may have lowered it
        self.messages.clear()
        before = self._storage()
        obs.in_transaction = not isinstance(stmt.node, _TRANSACTION_ONLY)
        if obs.in_transaction:
            self.conn.execute("BEGIN")
            try:
                self.conn.execute(stmt.text)
            except psycopg.errors.ActiveSqlTransaction:  # refuses a transaction block: autocommit, as the runner
                self.conn.execute("ROLLBACK")
                obs.in_transaction = False
            except psycopg.Error as exc:
                self.conn.execute("ROLLBACK")
                obs.error = _error_text(exc)
            else:
                self._record(obs, before, self._locks())
                try:
                    self.conn.execute("COMMIT")
                except psycopg.Error as exc:  # deferred constraints
                    obs.error = _error_text(exc)
        if not obs.in_transaction and not obs.error:
            self.messages.clear()
            try:
                self.conn.execute(stmt.text)
            except psycopg.Error as exc:
                obs.error = _error_text(exc)
            else:
                self._record(obs, before, {})
        obs.seconds = time.monotonic() - started
        return obs

    def _record(self, obs: Observation, before: dict[int, int], locks: dict[str, int]) -> None:
        node = obs.statement.node
        obs.locks = locks
        after = self._storage()
        if not isinstance(node, ast.TruncateStmt):
            obs.rewritten = [self.existing[oid] for oid, filenode in before.items() if after.get(oid, filenode) != filenode]
        for text, detail in self.messages:
            if text.startswith("drop cascades to"):
                obs.cascaded.append(f"{text}{': ' + ', '.join(detail.splitlines()) if detail else ''}")
            elif text.startswith("existing constraints on column"):
                obs.proven_not_null.append(text.split('"')[1])
        obs.scanned = [] if isinstance(node, ast.TruncateStmt) else self._scanned()  # empty indexes rebuilt
        obs.scanned += self._default_partition_checked(node)
        surface = self._surface()
        obs.views_changed = _views_changed(self.surface["views"], surface["views"])
        obs.rejecting_triggers, obs.fk_triggers_disabled = _triggers_changed(self.surface["triggers"],
                                                                             surface["triggers"])
        self.surface = surface
        if isinstance(node, ast.DoStmt):
            obs.holds_lock_while = do_holds_lock_while_running_on(node)
        elif isinstance(node, (ast.SelectStmt, ast.CallStmt)) and any(
                isinstance(n, ast.FuncCall) for n in walk(node)):
            obs.holds_lock_while = "a function call is one transaction"

    # --- catalog reads (schema-qualified: the stage may have changed search_path) ---------------
    def _relations(self) -> dict[int, str]:
        """Every relation of the scratch database before the stage: oid -> its table's name (indexes, TOAST)."""
        rows = self.conn.execute("""
            SELECT c.oid, coalesce(owner.oid, c.oid),
                   pg_catalog.format('%I.%I', coalesce(owner_ns.nspname, n.nspname), coalesce(owner.relname, c.relname))
              FROM pg_catalog.pg_class c
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
              LEFT JOIN pg_catalog.pg_class owner ON owner.oid = coalesce(
                    i.indrelid, (SELECT t.oid FROM pg_catalog.pg_class t WHERE t.reltoastrelid = c.oid))
              LEFT JOIN pg_catalog.pg_namespace owner_ns ON owner_ns.oid = owner.relnamespace
             WHERE c.relkind IN ('r', 'p', 'm', 'v', 'f', 'i', 'I', 't')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND (n.nspname NOT LIKE 'pg\\_toast%' OR owner.oid IS NOT NULL)""").fetchall()
        self.owner = {oid: table for oid, table, _ in rows}
        return {oid: name for oid, _, name in rows}

    def _storage(self) -> dict[int, int]:
        """relfilenode of every existing table and materialized view (a new one: the relation was rewritten)."""
        tables = [oid for oid, owner in self.owner.items() if oid == owner]
        return dict(self.conn.execute(
            "SELECT oid, relfilenode FROM pg_catalog.pg_class WHERE oid = ANY(%s) AND relkind IN ('r', 'm')",
            (tables,)).fetchall())

    def _locks(self) -> dict[str, int]:
        rows = self.conn.execute("""
            SELECT relation, mode FROM pg_catalog.pg_locks
             WHERE pid = pg_catalog.pg_backend_pid() AND locktype = 'relation' AND granted""").fetchall()
        out: dict[str, int] = {}
        for oid, mode in rows:
            table = self.owner.get(oid)
            if table is not None and mode in _LOCK_MODES:
                name = self.existing[table]
                out[name] = max(out.get(name, 0), _LOCK_MODES.index(mode))
        return out

    def _scanned(self) -> list[str]:
        """Existing tables PostgreSQL said it read through: verifying, validating a foreign key, building an index."""
        relnames: set[str] = set()
        constraints: set[str] = set()
        for text, _ in self.messages:
            if text.startswith("verifying table \""):
                relnames.add(text.split('"')[1])
            elif text.startswith("building index \"") and " on table \"" in text:
                relnames.add(text.split('"')[3])
            elif text.startswith("validating foreign key constraint \""):
                constraints.add(text.split('"')[1])
        if not relnames and not constraints:
            return []
        tables = sorted({t for t, o in self.owner.items() if t == o})
        rows = self.conn.execute("""
            SELECT DISTINCT c.oid FROM pg_catalog.pg_class c
             WHERE c.oid = ANY(%s) AND (c.relname = ANY(%s) OR c.oid IN (
                   SELECT conrelid FROM pg_catalog.pg_constraint WHERE conname = ANY(%s) AND contype = 'f'))""",
                                 (tables, sorted(relnames), sorted(constraints))).fetchall()
        return sorted(self.existing[oid] for (oid,) in rows)

    def _default_partition_checked(self, node) -> list[str]:
        """A new partition of a table with a default partition: PostgreSQL reads the default partition for rows
        that belong to the new one, saying nothing unless a constraint lets it skip that."""
        parent = None
        if isinstance(node, ast.CreateStmt) and node.partbound is not None and node.inhRelations:
            parent = node.inhRelations[0]
        elif isinstance(node, ast.AlterTableStmt) and any(
                cmd.subtype == AlterTableType.AT_AttachPartition for cmd in node.cmds or ()):
            parent = node.relation
        if parent is None or any(text.startswith("updated partition constraint for default partition")
                                 for text, _ in self.messages):
            return []
        name = sql.Identifier(*(part for part in (parent.schemaname, parent.relname) if part)).as_string(self.conn)
        row = self.conn.execute("SELECT partdefid FROM pg_catalog.pg_partitioned_table "
                                "WHERE partrelid = pg_catalog.to_regclass(%s)", (name,)).fetchone()
        return [self.existing[row[0]]] if row and row[0] in self.existing else []

    def _surface(self) -> dict[str, dict]:
        """What the old application version meets: the existing views' definitions and the triggers on existing tables."""
        tables = sorted({t for t, o in self.owner.items() if t == o})
        views: dict[str, str] = dict(self.conn.execute(
            "SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname), pg_catalog.pg_get_viewdef(c.oid) "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = ANY(%s) AND c.relkind = 'v'", (tables,)).fetchall())
        triggers = {row[0]: row[1:] for row in self.conn.execute("""
            SELECT t.oid, pg_catalog.format('%%I on %%s', t.tgname, t.tgrelid::regclass), t.tgenabled, t.tgisinternal,
                   t.tgtype, l.lanname, p.prosrc, pn.nspname = 'pg_catalog' AND p.proname = ANY(%s), p.proname
              FROM pg_catalog.pg_trigger t
              JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
              JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
              JOIN pg_catalog.pg_language l ON l.oid = p.prolang
             WHERE t.tgrelid = ANY(%s)""", (sorted(BUILTIN_TRIGGER_FUNCTIONS), tables)).fetchall()}
        return {"views": views, "triggers": triggers}


def _views_changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Existing views whose existing columns now read something else (columns appended at the end are new)."""
    out = []
    for view, old in before.items():
        new = after.get(view)
        if new is None or new == old:
            continue  # a dropped view is a drop, judged as one
        if _without_appended_columns(new, old) != _deparsed(old):
            out.append(view)
    return out


def _deparsed(definition: str, keep: int | None = None) -> str | None:
    try:
        [raw] = parse_sql(definition)
    except (ParseError, ValueError):
        return None
    select = present(raw.stmt, "statement")
    if keep is not None and isinstance(select, ast.SelectStmt) and select.targetList:
        select.targetList = select.targetList[:keep]
    return RawStream()(select)


def _without_appended_columns(new: str, old: str) -> str | None:
    try:
        [raw] = parse_sql(old)
        width = len(raw.stmt.targetList or ()) if isinstance(raw.stmt, ast.SelectStmt) else None
    except (ParseError, ValueError):
        return None
    return _deparsed(new, width)


def _triggers_changed(before: dict, after: dict) -> tuple[list[str], list[str]]:
    rejecting, disabled = [], []
    for oid, (name, enabled, internal, tgtype, language, source, builtin, proname) in after.items():
        old = before.get(oid)
        if internal:
            if old is not None and old[1] != "D" and enabled == "D":
                disabled.append(name)
            continue
        if (old is not None and old[5] == source) or builtin or enabled == "D":
            continue
        how = _trigger_rejection(language, source, bool(tgtype & 1) and bool(tgtype & TRIGGER_TYPE_BEFORE))
        if how:
            rejecting.append(f"trigger {name} runs {proname}(): {how}")
    return rejecting, disabled


def _trigger_rejection(language: str, source: str, before_row: bool) -> str | None:
    if language != "plpgsql":
        return f"written in {language}, which the shadow run cannot read"
    try:
        return rejection(parse_body(source, "trigger"), before_row)
    except ParseError as exc:
        return f"its body does not parse ({exc.args[0] if exc.args else exc})"


# --------------------------------------------------------------------------- judging
def judge(obs: Observation, stage: str, server_version: str = "") -> list[Finding]:
    """The findings of one observed statement under ``stage``'s rules."""
    where = f"shadow run on PostgreSQL {server_version}".strip()
    out: list[Finding] = []

    def add(rule: str, what: str, fix: str) -> None:
        out.append(Finding(rule, f"`{obs.head}`: {what} ({where})", obs.file, obs.statement.line, ERROR, fix))

    if obs.error:
        add("shadow-error", f"PostgreSQL refused it on a copy of the schema: {obs.error}",
            "fix the statement so PostgreSQL accepts it on the schema it will meet (a failed statement stops the "
            "stage half done)")
        return out
    for table in obs.rewritten:
        add("shadow-rewrite", f"PostgreSQL rewrote {table} (every row copied, under an ACCESS EXCLUSIVE lock)",
            "add a new column or table and backfill it in batches instead of rewriting")
    for table in (t for t in obs.scanned if t not in obs.rewritten):  # a rewrite rebuilds its indexes too
        mode = obs.locks.get(table)
        if mode is not None and mode >= _BLOCKS_WRITES:
            add("shadow-scan", f"PostgreSQL read through every row of {table} while holding {_LOCK_MODES[mode]}, "
                               "which blocks writes" + (" and reads" if mode == len(_LOCK_MODES) - 1 else ""),
                "add constraints NOT VALID and VALIDATE them separately, build indexes CONCURRENTLY, prove NOT NULL "
                "with a validated CHECK first")
    held = [t for t, mode in obs.locks.items() if mode >= _BLOCKS_WRITES]
    if obs.holds_lock_while and held:
        add("shadow-lock-held", f"it ends holding {', '.join(f'{_LOCK_MODES[obs.locks[t]]} on {t}' for t in held)}, "
                                f"and {obs.holds_lock_while}: the lock is held until it ends",
            "run the lock-taking statement on its own, or last in the block")
    for cascade in obs.cascaded:
        add("shadow-cascade", f"PostgreSQL reports: {cascade}",
            "drop the dependents explicitly first, each by name, then the object without CASCADE")
    for trigger in obs.fk_triggers_disabled:
        add("shadow-fk-disabled", f"it turned off {trigger}, an internal trigger that enforces a foreign key",
            "never disable ALL triggers; disable user triggers by name, in contract")
    if stage != "contract":
        for view in obs.views_changed:
            add("destructive-ddl-outside-contract",
                f"view {view} now returns something else in a column the old application reads ({stage} runs "
                "while it does)", "add a new view (or new columns at the end) and switch the application; change "
                                  "existing columns in contract")
        for trigger in obs.rejecting_triggers:
            add("rejects-old-writes", f"{trigger}, and the old application version still writes in {stage}",
                "keep triggers that old versions' writes pass through permissive until contract")
    return out


def combine(static: Iterable[Finding], run: ShadowRun | None) -> list[Finding]:
    """Static findings plus the shadow's: a shadow observation replaces the static rules in :data:`SHADOW_JUDGES`
    on the statements PostgreSQL ran; without one, those findings say a shadow run would judge them."""
    static = list(static)
    if run is None or not run.ok:
        return [_offline(f) if f.rule in SHADOW_JUDGES else f for f in static]
    covered = run.covered()
    kept = [f for f in static if not (f.rule in SHADOW_JUDGES and any(
        lo <= f.line <= hi for lo, hi in covered.get(f.file, ())))]
    out = kept + run.findings()
    out.sort(key=lambda f: (f.file, f.line, f.severity != ERROR, f.rule))
    return out


def _offline(f: Finding) -> Finding:
    if f.rule == NEEDS_SHADOW_RUN:
        return f
    return Finding(f.rule, f"{f.message} [static rule; a shadow run would let PostgreSQL judge this]", f.file, f.line,
                   f.severity, f.fix)


def judged_by(run: ShadowRun | None) -> str:
    """One line saying which analysis judged."""
    if run is None:
        return (f"static rules only (no shadow server: --shadow-dsn-env VAR or ${SHADOW_DSN_ENV}); what they cannot "
                "tell is refused, and a shadow run would judge more: locks, rewrites, scans and dependents, by "
                "PostgreSQL itself")
    if not run.ok:
        return f"static rules only: the shadow run could not run ({run.reason}); what they cannot tell is refused"
    statements = sum(1 for step, obs in run.observed if step.stage and not obs.skipped)
    stopped = f"; stopped at {run.stopped}, later statements judged by the static rules only" if run.stopped else ""
    return (f"static rules + shadow run on PostgreSQL {run.server_version} (scratch database from {run.base}; "
            f"{statements} statement(s) observed; {run.seconds:.2f} s in all{stopped})")


# --------------------------------------------------------------------------- schema dumps
def _client(name: str, major: int) -> str:
    bundled = Path(pg_paths(major).bin) / name
    found = str(bundled) if bundled.exists() else shutil.which(name)
    if not found:
        raise ShadowUnavailable(f"{name} (PostgreSQL {major} client) is not installed")
    return found


def _libpq_env(dsn: str, **overrides: str) -> dict[str, str]:
    """The connection as libpq environment variables: never on a command line, where ps would show a password."""
    params = {**conninfo_to_dict(dsn), **overrides}
    unknown = sorted(set(params) - set(_PG_DUMP_ENV))
    if unknown:
        raise ShadowUnavailable(f"connection parameters {unknown} cannot be passed to pg_dump/psql")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({_PG_DUMP_ENV[k]: str(v) for k, v in params.items()})
    return env


def _dump_schema(target_dsn: str, server: ShadowServer) -> str:
    proc = subprocess.run([_client("pg_dump", server.major), "--schema-only", "--no-owner", "--no-privileges",
                           "--no-publications", "--no-subscriptions", "--no-security-labels",
                           f"--lock-wait-timeout={max(server.lock_timeout_ms, 1000)}ms"],
                          env=_libpq_env(target_dsn), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise ShadowUnavailable(f"pg_dump --schema-only of {describe(target_dsn)} failed: "
                                f"{redact(proc.stderr.strip()[:400], target_dsn)}")
    return proc.stdout


def _restore(server_dsn: str, scratch: str, dump: str, major: int) -> None:
    proc = subprocess.run([_client("psql", major), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=dump,
                          env=_libpq_env(server_dsn, dbname=scratch), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise ShadowUnavailable(f"the target's schema does not restore on the shadow server: "
                                f"{redact(proc.stderr.strip()[:400], server_dsn)}")


def _error_text(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    extra = [part for part in (diag.message_detail if diag else None, diag.message_hint if diag else None) if part]
    state = f"{exc.sqlstate} " if exc.sqlstate else ""
    return state + text + (f" ({'; '.join(' '.join(p.split()) for p in extra)})" if extra else "")

