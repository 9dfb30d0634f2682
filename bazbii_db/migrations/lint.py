"""The migration-directory lint: every SQL file of ``migrations/NNNN_name/``, stage by stage.

For each stage it runs the statement analysis (:mod:`bazbii_db.sql_safety`, pglast rules plus
squawk) over the stage's files in run order, then the migration's metadata rules. What earlier
migrations and earlier stages established (validated NOT NULL checks, checks added NOT VALID,
column types) is carried forward, so a ``VALIDATE`` in migrate and a ``SET NOT NULL`` in contract
are judged with what expand did. A stage's down step (``<stage>.down.sql``) is analysed as the
stage it reopens: the contract's down runs while old and new versions may both run again, so it
is judged like expand; the expand's down removes what expand added, so it is judged like contract.

Findings cite ``migrations/NNNN_name/<file>`` (the directory's own name, the migration, the file).

With a shadow server (:func:`lint_migration`, ``shadow=``) the stages also run, in order, on a
scratch database holding the earlier migrations (or a schema-only dump of a target), each down
step right after its stage and the stage again after it: PostgreSQL's observations replace the
static rules it can judge (:mod:`bazbii_db.sql_safety.shadow`), and the result says which
analysis judged.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import psycopg

from bazbii_db.dsn import redact
from bazbii_db.migrations.spec import Migration, MigrationSpecError, list_migrations, load_migration
from bazbii_db.migrations.stageplan import plan_stage
from bazbii_db.sql_safety import (ERROR, STAGES, Catalog, Finding, SchemaFacts, analyse_sql,
                                  validated_checks_after)
from bazbii_db.sql_safety.catalog import PgCatalog
from bazbii_db.sql_safety.shadow import (ShadowRun, ShadowServer, ShadowSession, ShadowUnavailable, SqlFile, Step,
                                         TargetSchema, combine, judged_by)

DOWN_ANALYSED_AS = {"expand": "contract", "migrate": "migrate", "contract": "expand"}


def file_label(migration: Migration, path: Path) -> str:
    """How findings cite a file: ``migrations/0002_add_category/contract.sql``."""
    return f"{migration.path.parent.name}/{migration.id}/{path.name}"


def migration_file_label(migration_id: str, filename: str, migrations_dirname: str = "migrations") -> str:
    """The same citation when only the migration id and file name are known (e.g. a Job's ConfigMap)."""
    return f"{migrations_dirname}/{migration_id}/{filename}"


def earlier_migrations(migration: Migration, directory: Path | None = None) -> list[Migration]:
    """The migrations before this one, from its own directory or ``directory``."""
    root = directory or migration.path.parent
    out = []
    for earlier in list_migrations(root):
        if earlier >= migration.id:
            break
        try:
            out.append(load_migration(root / earlier))
        except MigrationSpecError:
            continue  # reported when that migration is linted
    return out


def facts_before(migration: Migration, catalog: Catalog | None = None) -> SchemaFacts:
    """What every earlier migration of the same directory leaves behind (all of their stages)."""
    facts = SchemaFacts()
    for previous in earlier_migrations(migration):
        for stage in STAGES:
            for sql_file in previous.sql_files(stage):
                facts = validated_checks_after(sql_file.read_text(), facts, catalog)
            facts.new_session()
    return facts


def stage_files(migration: Migration, stage: str) -> tuple[SqlFile, ...]:
    """What the runner runs for a stage, file by file in its order (dual-write statements included;
    backfills change data, which a copy of the schema does not hold)."""
    out: list[SqlFile] = []
    for unit in plan_stage(migration, stage):
        if unit.kind == "sql":
            name = unit.label.split(":")[0]
            label = file_label(migration, migration.path / name)
            if not out or out[-1].label != label:
                out.append(SqlFile(label, (migration.path / name).read_text()))
        elif unit.kind != "backfill":
            out.append(SqlFile(f"{file_label(migration, migration.path / 'migration.toml')} ({unit.label})",
                               unit.sql_text))
    return tuple(out)


def shadow_steps(migration: Migration, stages: Sequence[str] = STAGES, down_only: bool = False
                 ) -> list[tuple[str, Step]]:
    """``(stage the findings belong to, step)``: each stage, then its down step (judged as the stage it reopens)
    and the stage once more, so the next stage meets the schema it will meet; ``down_only``: the down steps."""
    out = []
    for stage in stages:
        files = stage_files(migration, stage)
        if not down_only:
            out.append((stage, Step(stage, files)))
        down = migration.down_file(stage)
        if down is not None:
            out.append((stage, Step(DOWN_ANALYSED_AS[stage], (SqlFile(file_label(migration, down), down.read_text()),))))
            if not down_only:
                out.append((stage, Step(None, files)))
    return out


def shadow_base(migration: Migration, first_stage: str, down_only: bool = False,
                earlier_from: Path | None = None) -> list[SqlFile]:
    """The earlier migrations (from ``earlier_from``, default their own directory), every stage, and this
    migration's stages before ``first_stage`` (through it, for its down step)."""
    if earlier_from is not None and not earlier_from.is_dir():  # e.g. a policy pack published without the repository
        raise ShadowUnavailable(f"no migrations directory at {earlier_from} to build the scratch database from")
    earlier = earlier_migrations(migration, earlier_from)
    if earlier_from is not None:
        missing = sorted(set(list_migrations(migration.path.parent)) - {migration.id} - set(list_migrations(earlier_from)))
        if missing:
            raise ShadowUnavailable(f"earlier migrations {missing} are not in {earlier_from}, so the scratch database "
                                    "cannot hold them")
    base = [f for previous in earlier for stage in STAGES for f in stage_files(previous, stage)]
    upto = STAGES.index(first_stage) + (1 if down_only else 0)
    return base + [f for stage in STAGES[:upto] for f in stage_files(migration, stage)]


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
        facts.new_session()
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


@dataclass
class Lint:
    findings: dict[str, list[Finding]]  # per stage, its down step's included
    judged_by: str
    run: ShadowRun | None = None


def lint_migration(path: str | os.PathLike, *, runner_sets_timeouts: bool = True, use_squawk: bool = True,
                   catalog: Catalog | None = None, shadow: ShadowServer | None = None,
                   target: TargetSchema | None = None, stages: Sequence[str] = STAGES, down_only: bool = False,
                   earlier_from: Path | None = None) -> Lint:
    """The static analysis of :func:`analyse_migration_dir` and, with a ``shadow`` server, the shadow run of
    ``stages`` on a scratch database built from the earlier migrations (or from ``target``'s schema, which
    holds the stages before ``stages[0]`` already, and ``stages[0]`` too when ``down_only`` judges the down
    steps alone, as a revert runs them). Without a catalog the scratch database answers the static rules'
    catalog questions as it stands before the first step. ``earlier_from``: where the shadow run finds the
    earlier migrations' SQL when the migration's own directory holds only their metadata (a Job's ConfigMap)."""

    def static(with_catalog: Catalog | None) -> dict[str, list[Finding]]:
        return analyse_migration_dir(path, runner_sets_timeouts=runner_sets_timeouts, use_squawk=use_squawk,
                                     catalog=with_catalog)

    migration = None
    if shadow is not None:
        try:
            migration = load_migration(path)
        except MigrationSpecError:
            pass  # the static analysis reports it
    if shadow is None or migration is None:
        found = static(catalog)
        return Lint({stage: combine(found[stage], None) for stage in STAGES}, judged_by(None))
    steps = shadow_steps(migration, stages, down_only)
    with ExitStack() as stack:
        try:
            started = time.monotonic()
            base = target or shadow_base(migration, stages[0], down_only, earlier_from)
            session = stack.enter_context(ShadowSession(shadow, base))
            setup_s = time.monotonic() - started  # the scratch database and its base schema
            found = static(catalog or PgCatalog(stack.enter_context(session.connect("catalog"))))
            run = session.run([step for _, step in steps])
            run.seconds += setup_s
        except (ShadowUnavailable, psycopg.Error) as exc:
            run = ShadowRun(ok=False, reason=redact(str(exc).strip(), shadow.dsn))
            found = static(catalog)
    group_of = {id(step): group for group, step in steps}
    findings = {}
    for stage in STAGES:
        if not run.ok or stage not in stages:
            findings[stage] = combine(found[stage], run if stage in stages else None)
            continue
        mine = [(step, obs) for step, obs in run.observed if group_of[id(step)] == stage]
        findings[stage] = combine(found[stage], replace(run, observed=mine))
    return Lint(findings, judged_by(run), run)
