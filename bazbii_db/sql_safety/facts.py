"""What the analysis knows about the schema, and the per-file analysis context.

:class:`SchemaFacts` are carried forward from statement to statement, from stage to stage of a
migration and from one migration to the next (the directory lint does that): validated
``CHECK (col IS NOT NULL)`` constraints (which make ``SET NOT NULL`` scan-free), checks added
``NOT VALID`` and not validated yet (so a ``VALIDATE`` in a later stage is recognised), and
column types (so a type change can be judged against the type it changes from).

Tables are keyed as written (:func:`parsing.table_key`); constraints by ``(table, name)``,
because constraint names are only unique per table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from pglast import ast

from .findings import ERROR, NEEDS_SHADOW_RUN, Finding
from .parsing import Statement, integer_constant, names, selected_expression, table_key

# PostgreSQL's own spellings (pg_type.typname) for the grammar's SQL-standard aliases.
TYPE_ALIASES = {"character varying": "varchar", "int": "int4", "integer": "int4", "bigint": "int8",
                "smallint": "int2", "decimal": "numeric", "character": "bpchar", "char": "bpchar"}


@dataclass(frozen=True)
class TypeSpec:
    """A column type as the analysis compares it: PostgreSQL's type name and its modifiers."""

    name: str
    mods: tuple[int, ...] = ()
    array: bool = False

    @classmethod
    def from_type_name(cls, tn: ast.TypeName | None) -> "TypeSpec | None":
        if tn is None or tn.pct_type or tn.setof:
            return None
        parts = [n.lower() for n in names(tn.names)]
        if not parts:
            return None
        read = [integer_constant(m) for m in tn.typmods or ()]
        mods = tuple(m for m in read if m is not None)
        if len(mods) != len(read):
            return None  # a modifier that is not an integer literal: cannot compare
        base = parts[-1] if parts[0] in ("pg_catalog",) or len(parts) == 1 else ".".join(parts)
        return cls(TYPE_ALIASES.get(base, base), mods, bool(tn.arrayBounds))

    @classmethod
    def parse(cls, text: str) -> "TypeSpec | None":
        """From ``format_type()`` output such as ``character varying(50)`` or ``numeric(10,2)``."""
        target = selected_expression(f"NULL::{text}")
        return cls.from_type_name(target.typeName) if isinstance(target, ast.TypeCast) else None

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.mods))})" if self.mods else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}"


@dataclass(frozen=True)
class Domain:
    """A domain over ``base``; ``checked``: it has a CHECK or NOT NULL constraint (adding a column of it rewrites)."""

    base: TypeSpec | None
    checked: bool


@dataclass(frozen=True)
class IndexFact:
    table: str
    columns: tuple[str, ...]  # () when an expression is indexed
    unique: bool
    partial: bool


@dataclass(frozen=True)
class ViewFact:
    """What a view reads: its tables, and the column names it mentions (``*`` reads them all)."""

    tables: frozenset[str]
    columns: frozenset[str]
    star: bool


class Catalog(Protocol):
    """Answers the analysis may ask a live database; ``None`` means "unknown" (fail closed)."""

    def function_volatility(self, qualified_name: tuple[str, ...]) -> str | None:
        """``'i'``, ``'s'`` or ``'v'`` (pg_proc.provolatile; the most volatile overload), else None."""

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        ...

    def user_type(self, name: str) -> Domain | bool | None:
        """A user-defined type: its :class:`Domain`, True for any other kind (enum, composite, range), None unknown."""


class OfflineCatalog:
    """No database: nothing is known, so every function counts as volatile."""

    def function_volatility(self, qualified_name: tuple[str, ...]) -> str | None:
        return None

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        return None

    def user_type(self, name: str) -> Domain | bool | None:
        return None


@dataclass
class SchemaFacts:
    """What the SQL seen so far established (earlier statements, files, stages and migrations).

    Relations are keyed as written (:func:`parsing.table_key`), constraints and indexes by name.
    """

    validated: set[tuple[str, str]] = field(default_factory=set)  # (table, column) proven NOT NULL, check unnamed
    validated_checks: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (table, check) -> columns
    pending_checks: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # added NOT VALID
    column_types: dict[tuple[str, str], TypeSpec] = field(default_factory=dict)
    not_null: set[tuple[str, str]] = field(default_factory=set)  # declared NOT NULL (or PRIMARY KEY)
    domains: dict[str, Domain] = field(default_factory=dict)
    user_types: set[str] = field(default_factory=set)  # enums, composites, ranges
    partitioned: set[str] = field(default_factory=set)
    matviews: set[str] = field(default_factory=set)
    indexes: dict[str, IndexFact] = field(default_factory=dict)
    views: dict[str, ViewFact] = field(default_factory=dict)
    # trigger function -> how it may reject a write (always, as a BEFORE ROW trigger), None where it never does
    trigger_functions: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    path_epoch: int = 0  # > 0 after a SET search_path in the current session (a runner connection)
    epochs: int = 0

    def __iter__(self):
        """Iterating gives the proven NOT NULL (table, column) pairs (what older callers passed around)."""
        return iter(sorted(self.proven_not_null()))

    def copy(self) -> "SchemaFacts":
        return copy.deepcopy(self)

    @classmethod
    def of(cls, known: "SchemaFacts | Iterable[tuple[str, str]] | None") -> "SchemaFacts":
        """A private copy of ``known``: facts, or plain (table, column) pairs of validated checks."""
        if isinstance(known, SchemaFacts):
            return known.copy()
        return cls(validated={(t.lower(), c.lower()) for t, c in (known or ())})

    def proven_not_null(self) -> set[tuple[str, str]]:
        return self.validated | {(t, c) for (t, _), cols in self.validated_checks.items() for c in cols}

    def add_check(self, table: str, name: str, columns: tuple[str, ...], validated: bool) -> None:
        if not columns:
            return
        if validated and name:
            self.validated_checks[(table, name)] = columns
        elif validated:
            self.validated.update((table, c) for c in columns)
        elif name:
            self.pending_checks[(table, name)] = columns

    def validate(self, table: str, name: str) -> None:
        columns = self.pending_checks.pop((table, name), None)
        if columns is not None:
            self.validated_checks[(table, name)] = columns

    def drop_constraint(self, table: str, name: str) -> None:
        """A dropped check proves nothing any more (``SET NOT NULL`` after it scans)."""
        self.validated_checks.pop((table, name), None)
        self.pending_checks.pop((table, name), None)

    def new_session(self) -> None:
        """A new runner connection (the next stage): the search_path is the default again."""
        self.path_epoch = 0

    def search_path_changed(self) -> None:
        self.epochs += 1
        self.path_epoch = self.epochs


@dataclass
class Context:
    """State while one file (or one SQL text) is analysed for one stage."""

    stage: str
    filename: str
    runner_sets_timeouts: bool
    catalog: Catalog
    facts: SchemaFacts
    findings: list[Finding] = field(default_factory=list)
    new_tables: set[str] = field(default_factory=set)  # created in this file: nothing else uses them yet
    new_sequences: set[str] = field(default_factory=set)
    new_functions: set[str] = field(default_factory=set)
    lock_timeout_set: bool = False
    statement_timeout_set: bool = False
    warned_statement_timeout: bool = False

    def key(self, rv) -> str:
        """How a relation is keyed here: as written, bound to the session's search_path when it was changed."""
        return table_key(rv, self.facts.path_epoch)

    def add(self, stmt: Statement, rule: str, severity: str, message: str, fix: str) -> None:
        self.findings.append(Finding(rule=rule, message=message, file=self.filename, line=stmt.line,
                                     severity=severity, fix=fix))

    def cannot_judge(self, stmt: Statement, what: str) -> None:
        """Fail closed: what the analysis cannot judge is an error, never a pass."""
        self.add(stmt, "cannot-judge", ERROR,
                 f"{what}: the analysis cannot tell whether this is safe while old and new application "
                 "versions run, so it is refused",
                 "rewrite it with statements the analysis knows (see docs/schema-migrations.md), or run it by "
                 "hand in a maintenance window")

    def needs_shadow_run(self, stmt: Statement, what: str) -> None:
        """Fail closed offline: only PostgreSQL itself can tell (a shadow run judges it, see sql_safety.shadow)."""
        self.add(stmt, NEEDS_SHADOW_RUN, ERROR,
                 f"{what}: the static rules cannot tell what PostgreSQL locks, scans or changes here, so it is "
                 "refused without a shadow run",
                 "judge it with a shadow run (lint --shadow-dsn-env VAR, or $BAZBII_SHADOW_DSN), which runs the "
                 "stage on a scratch copy of the schema and lets PostgreSQL say what it does")

    def destructive(self, stmt: Statement, what: str, fix: str) -> None:
        if self.stage != "contract":
            self.add(stmt, "destructive-ddl-outside-contract", ERROR,
                     f"{what} in the {self.stage} stage: old application versions still use it while "
                     f"{self.stage} runs; destructive changes belong in contract.sql", fix)
