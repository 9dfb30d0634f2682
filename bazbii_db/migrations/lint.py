"""The migration-directory lint: every SQL file of ``migrations/NNNN_name/``, stage by stage.

For each stage it runs the statement analysis (:mod:`bazbii_db.sql_safety`, pglast rules plus
squawk) over the stage's files in run order, then the migration's metadata rules. What earlier
migrations and earlier stages established (validated NOT NULL checks, checks added NOT VALID,
column types) is carried forward, so a ``VALIDATE`` in migrate and a ``SET NOT NULL`` in contract
are judged with what expand did. A stage's down step (``<stage>.down.sql``) is analysed as the
stage it reopens: the contract's down runs while old and new versions may both run again, so it
is judged like expand; the expand's down removes what expand added, so it is judged like contract.

Findings cite ``migrations/NNNN_name/<file>`` (the directory's own name, the migration, the file).
"""

from __future__ import annotations

import os
from pathlib import Path

from bazbii_db.migrations.spec import Migration, MigrationSpecError, list_migrations, load_migration
from bazbii_db.sql_safety import (ERROR, STAGES, Catalog, Finding, SchemaFacts, analyse_sql,
                                  validated_checks_after)

DOWN_ANALYSED_AS = {"expand": "contract", "migrate": "migrate", "contract": "expand"}


def file_label(migration: Migration, path: Path) -> str:
    """How findings cite a file: ``migrations/0002_add_category/contract.sql``."""
    return f"{migration.path.parent.name}/{migration.id}/{path.name}"


def migration_file_label(migration_id: str, filename: str, migrations_dirname: str = "migrations") -> str:
    """The same citation when only the migration id and file name are known (e.g. a Job's ConfigMap)."""
    return f"{migrations_dirname}/{migration_id}/{filename}"


def facts_before(migration: Migration, catalog: Catalog | None = None) -> SchemaFacts:
    """What every earlier migration of the same directory leaves behind (all of their stages)."""
    facts = SchemaFacts()
    for earlier in list_migrations(migration.path.parent):
        if earlier >= migration.id:
            break
        try:
            previous = load_migration(migration.path.parent / earlier)
        except MigrationSpecError:
            continue  # reported when that migration is linted
        for stage in STAGES:
            for sql_file in previous.sql_files(stage):
                facts = validated_checks_after(sql_file.read_text(), facts, catalog)
    return facts


def analyse_migration_dir(path: str | os.PathLike, *, runner_sets_timeouts: bool = True, use_squawk: bool = True,
                          catalog: Catalog | None = None) -> dict[str, list[Finding]]:
    """Analyse every SQL file of one migration directory, stage by stage.

    Returns ``{"expand": [...], "migrate": [...], "contract": [...]}``; each stage's list also
    holds the findings of its down step and of the metadata rules about it.
    """
    path = Path(path)
    result: dict[str, list[Finding]] = {stage: [] for stage in STAGES}
    try:
        migration = load_migration(path)
    except MigrationSpecError as exc:
        result["expand"].append(Finding("invalid-migration-metadata", str(exc), exc.file or str(path),
                                        exc.line or 1, ERROR, "fix migration.toml"))
        return result
    facts = facts_before(migration, catalog)
    for stage in STAGES:
        for sql_file in migration.sql_files(stage):
            text = sql_file.read_text()
            result[stage].extend(analyse_sql(text, stage, file_label(migration, sql_file),
                                             runner_sets_timeouts=runner_sets_timeouts, known_validated_checks=facts,
                                             use_squawk=use_squawk, catalog=catalog))
            facts = validated_checks_after(text, facts, catalog)
        down = migration.down_file(stage)
        if down is not None:
            result[stage].extend(analyse_sql(down.read_text(), DOWN_ANALYSED_AS[stage], file_label(migration, down),
                                             runner_sets_timeouts=runner_sets_timeouts,
                                             known_validated_checks=facts, use_squawk=use_squawk, catalog=catalog))
        result[stage].extend(migration.metadata_findings(stage))
    return result
