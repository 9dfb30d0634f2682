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

from dataclasses import dataclass, field
from typing import Iterable, Protocol

from pglast import ast, parse_sql
from pglast.parser import ParseError

from .findings import ERROR, Finding
from .parsing import Statement, integer_constant, names

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
        mods = tuple(integer_constant(m) for m in tn.typmods or ())
        if any(m is None for m in mods):
            return None  # a modifier that is not an integer literal: cannot compare
        base = parts[-1] if parts[0] in ("pg_catalog",) or len(parts) == 1 else ".".join(parts)
        return cls(TYPE_ALIASES.get(base, base), mods, bool(tn.arrayBounds))

    @classmethod
    def parse(cls, text: str) -> "TypeSpec | None":
        """From ``format_type()`` output such as ``character varying(50)`` or ``numeric(10,2)``."""
        try:
            stmts = parse_sql(f"SELECT NULL::{text}")
        except ParseError:
            return None
        target = stmts[0].stmt.targetList[0].val if len(stmts) == 1 else None
        return cls.from_type_name(target.typeName) if isinstance(target, ast.TypeCast) else None

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.mods))})" if self.mods else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}"


class Catalog(Protocol):
    """Answers the analysis may ask a live database; ``None`` means "unknown" (fail closed)."""

    def function_volatility(self, qualified_name: tuple[str, ...]) -> str | None:
        """``'i'``, ``'s'`` or ``'v'`` (pg_proc.provolatile; the most volatile overload), else None."""

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        ...


class OfflineCatalog:
    """No database: nothing is known, so every function counts as volatile."""

    def function_volatility(self, qualified_name: tuple[str, ...]) -> str | None:
        return None

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        return None


@dataclass
class SchemaFacts:
    validated: set[tuple[str, str]] = field(default_factory=set)  # (table, column) with a validated NOT NULL check
    pending_checks: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, check name) -> column
    column_types: dict[tuple[str, str], TypeSpec] = field(default_factory=dict)

    def __iter__(self):
        """Iterating gives the validated (table, column) pairs (what older callers passed around)."""
        return iter(sorted(self.validated))

    def copy(self) -> "SchemaFacts":
        return SchemaFacts(set(self.validated), dict(self.pending_checks), dict(self.column_types))

    @classmethod
    def of(cls, known: "SchemaFacts | Iterable[tuple[str, str]] | None") -> "SchemaFacts":
        """A private copy of ``known``: facts, or plain (table, column) pairs of validated checks."""
        if isinstance(known, SchemaFacts):
            return known.copy()
        return cls(validated={(t.lower(), c.lower()) for t, c in (known or ())})

    def add_check(self, table: str, name: str, column: str, validated: bool) -> None:
        if validated:
            self.validated.add((table, column))
        elif name:
            self.pending_checks[(table, name)] = column

    def validate(self, table: str, name: str) -> None:
        column = self.pending_checks.pop((table, name), None)
        if column is not None:
            self.validated.add((table, column))


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
    new_columns: set[tuple[str, str]] = field(default_factory=set)
    lock_timeout_set: bool = False
    statement_timeout_set: bool = False
    warned_statement_timeout: bool = False

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

    def destructive(self, stmt: Statement, what: str, fix: str) -> None:
        if self.stage != "contract":
            self.add(stmt, "destructive-ddl-outside-contract", ERROR,
                     f"{what} in the {self.stage} stage: old application versions still use it while "
                     f"{self.stage} runs; destructive changes belong in contract.sql", fix)
