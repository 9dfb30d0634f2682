"""The ordered units the runner executes for one stage of a migration (and for its down step).

Apart from :mod:`spec` (which only loads and validates a migration directory) so that neither
spec nor :mod:`dualwrite` needs the other at import time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bazbii_db.migrations.dualwrite import drop_statements, install_statements
from bazbii_db.migrations.spec import BackfillSpec, Migration, sha256_text
from bazbii_db.sql_safety import STAGES, Statement, split_statements


@dataclass(frozen=True)
class Unit:
    """One thing the runner executes; progress is journaled unit by unit."""

    kind: str  # "sql" | "backfill" | "dual_write_install" | "dual_write_drop"
    label: str
    checksum: str
    sql_text: str = ""
    statement: Statement | None = None
    backfill: BackfillSpec | None = None


def _sql_units(migration: Migration, name: str) -> list[Unit]:
    path = migration.path / name
    if not path.exists():
        return []
    return [Unit("sql", f"{name}:{stmt.line}", sha256_text(stmt.text), stmt.text, stmt)
            for stmt in split_statements(path.read_text())]


def plan_stage(migration: Migration, stage: str) -> list[Unit]:
    """The ordered units of one stage."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    units: list[Unit] = []
    if stage == "expand":
        units += _sql_units(migration, "expand.sql")
        if migration.dual_write:
            for i, text in enumerate(install_statements(migration.dual_write)):
                units.append(Unit("dual_write_install", f"dual_write install #{i + 1}", sha256_text(text), text))
    elif stage == "migrate":
        units += _sql_units(migration, "migrate.sql")
        for spec in migration.backfills:
            units.append(Unit("backfill", f"backfill {spec.name}",
                              sha256_text(json.dumps(spec.fingerprint(), sort_keys=True)), backfill=spec))
        units += _sql_units(migration, "migrate_after.sql")
    else:
        if migration.dual_write:
            for i, text in enumerate(drop_statements(migration.dual_write)):
                units.append(Unit("dual_write_drop", f"dual_write drop #{i + 1}", sha256_text(text), text))
        units += _sql_units(migration, "contract.sql")
    return units


def plan_down(migration: Migration, stage: str) -> list[Unit]:
    """The units of a stage's down step (empty when it has none)."""
    down = migration.down_file(stage)
    return _sql_units(migration, down.name) if down is not None else []
