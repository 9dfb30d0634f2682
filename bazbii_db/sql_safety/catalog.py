"""Catalog answers from a live PostgreSQL connection (read-only queries on pg_proc / pg_attribute / pg_type)."""

from __future__ import annotations

import psycopg

from .facts import Domain, TypeSpec
from .parsing import catalog_name

_VOLATILITY_ORDER = "isv"  # immutable < stable < volatile


class PgCatalog:
    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self._volatility: dict[tuple[str, ...], str | None] = {}

    def function_volatility(self, qualified_name: tuple[str, ...]) -> str | None:
        if qualified_name not in self._volatility:
            schema, name = (qualified_name[-2], qualified_name[-1]) if len(qualified_name) > 1 \
                else (None, qualified_name[-1])
            rows = self.conn.execute(
                """SELECT DISTINCT p.provolatile FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE p.proname = %s
                      AND (CASE WHEN %s::text IS NULL THEN pg_function_is_visible(p.oid) ELSE n.nspname = %s END)""",
                (name.lower(), schema, schema)).fetchall()
            found = [r[0] for r in rows]
            # Overloads are not resolved: the most volatile one decides (conservative).
            self._volatility[qualified_name] = max(found, key=_VOLATILITY_ORDER.index) if found else None
        return self._volatility[qualified_name]

    def column_type(self, table: str, column: str) -> TypeSpec | None:
        name = catalog_name(table)
        if name is None:
            return None
        row = self.conn.execute(
            """SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped""",
            (name, column)).fetchone()
        return TypeSpec.parse(row[0]) if row else None

    def user_type(self, name: str) -> Domain | bool | None:
        row = self.conn.execute(
            """SELECT t.typtype, format_type(t.typbasetype, t.typtypmod),
                      t.typnotnull OR EXISTS (SELECT 1 FROM pg_constraint c WHERE c.contypid = t.oid)
                 FROM pg_type t WHERE t.oid = to_regtype(%s)""", (name,)).fetchone()
        if row is None or row[0] == "p":
            return None
        return Domain(TypeSpec.parse(row[1]), bool(row[2])) if row[0] == "d" else True
