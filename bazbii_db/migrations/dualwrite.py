"""Dual-write trigger for renames and type changes while old and new app versions both run.

The trigger keeps ``old_column`` and ``new_column`` in step on every INSERT and UPDATE:

* INSERT from an old version (only the old column set): new := forward(old)
* INSERT from a new version (only the new column set): old := backward(new)
* UPDATE that changed only the new column: old := backward(new); only the old: new := forward(old)

The backfill sets ``bazbii.backfill = 'on'`` for its own transactions, and the trigger then
leaves rows alone, so a lossy conversion never rewrites the old column's values.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from bazbii_db.migrations.spec import DualWriteSpec

BACKFILL_GUC = "bazbii.backfill"


def _split(table: str) -> tuple[str | None, str]:
    parts = table.split(".")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def table_ident(table: str) -> sql.Identifier:
    schema, name = _split(table)
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def object_name(spec: DualWriteSpec) -> str:
    """Trigger and function name, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1)."""
    _, table = _split(spec.table)
    name = f"bazbii_dw_{table}_{spec.new_column}"
    if len(name.encode()) > 63:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = name.encode()[:54].decode(errors="ignore") + "_" + digest
    return name


def _function_ident(spec: DualWriteSpec) -> sql.Identifier:
    schema, _ = _split(spec.table)
    return sql.Identifier(schema, object_name(spec)) if schema else sql.Identifier(object_name(spec))


def install_statements(spec: DualWriteSpec) -> list[str]:
    old = sql.Identifier(spec.old_column)
    new = sql.Identifier(spec.new_column)
    forward = sql.SQL(spec.forward) if spec.forward else sql.SQL("NEW.{}").format(old)
    backward = sql.SQL(spec.backward) if spec.backward else sql.SQL("NEW.{}").format(new)
    body = sql.SQL(
        "BEGIN\n"
        "  IF current_setting({guc}, true) = 'on' THEN\n"
        "    RETURN NEW;\n"
        "  END IF;\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        "    IF NEW.{new} IS NULL AND NEW.{old} IS NOT NULL THEN\n"
        "      NEW.{new} := {forward};\n"
        "    ELSIF NEW.{old} IS NULL AND NEW.{new} IS NOT NULL THEN\n"
        "      NEW.{old} := {backward};\n"
        "    END IF;\n"
        "  ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} AND NEW.{old} IS NOT DISTINCT FROM OLD.{old} THEN\n"
        "    NEW.{old} := {backward};\n"
        "  ELSIF NEW.{old} IS DISTINCT FROM OLD.{old} AND NEW.{new} IS NOT DISTINCT FROM OLD.{new} THEN\n"
        "    NEW.{new} := {forward};\n"
        "  END IF;\n"
        "  RETURN NEW;\n"
        "END"
    ).format(guc=sql.Literal(BACKFILL_GUC), new=new, old=old, forward=forward, backward=backward)
    body_text = body.as_string(None)
    function = sql.SQL(
        "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS {body}"
    ).format(fn=_function_ident(spec), body=sql.Literal(body_text))
    trigger = sql.SQL(
        "CREATE OR REPLACE TRIGGER {trg} BEFORE INSERT OR UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION {fn}()"
    ).format(trg=sql.Identifier(object_name(spec)), table=table_ident(spec.table), fn=_function_ident(spec))
    return [function.as_string(None), trigger.as_string(None)]


def drop_statements(spec: DualWriteSpec) -> list[str]:
    trigger = sql.SQL("DROP TRIGGER IF EXISTS {trg} ON {table}").format(
        trg=sql.Identifier(object_name(spec)), table=table_ident(spec.table))
    function = sql.SQL("DROP FUNCTION IF EXISTS {fn}()").format(fn=_function_ident(spec))
    return [trigger.as_string(None), function.as_string(None)]
