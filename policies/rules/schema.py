"""Schema rules: contract only after every Deployment runs the new version; DDL that is safe for its stage.

SQL is judged as the runner in the migration Job judges it: the ConfigMap,
labelled ``bazbii.io/migration-id`` / ``bazbii.io/migration-stage``, is laid
out as the migrations directory the Job mounts and judged by
:func:`bazbii_db.migrations.lint.lint_migration` (pglast rules plus squawk;
earlier stages' files only tell what they established). When
``$BAZBII_SHADOW_DSN`` names a PostgreSQL server (``./preview
--shadow-dsn-env VAR`` sets it; under the Pulumi CLI the policy pack inherits
it), the stages also run on a scratch database there, built from the earlier
migrations of the repository's ``migrations/``, and PostgreSQL's observations
replace the static rules it can judge (:mod:`bazbii_db.sql_safety.shadow`).
Each finding says whether the shadow run or a static rule judged it, and
:func:`judgements` says which analysis judged each ConfigMap (the offline
preview prints it). This module
adds what the analyser cannot know on its own: which stage the *plan* is in,
and which images the Deployments run.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from pulumi_policy import EnforcementLevel

from bazbii_db.migrations.lint import lint_migration
from bazbii_db.migrations.spec import METADATA_FILE, default_migrations_dir
from bazbii_db.sql_safety import ERROR, STAGES
from bazbii_db.sql_safety.shadow import SHADOW_DSN_ENV, ShadowServer
from bazbii_plan.facts import DOWN_SUFFIX, MIGRATION_ID_LABEL, MIGRATION_STAGE_LABEL, VERSION_FORMAT, version_from_image

from ..builders import CONFIG_MAP, DEPLOYMENT, JOB, gate_of, gate_policy, metadata_labels, resource_label, \
    resource_policy, stack_policy
from .common import Finding, Transition, dig, image_tag, parse_version, plain
from .keys import state_key, track_key

DESTRUCTIVE_RULE = "destructive-ddl-outside-contract"


def images_below(images: Iterable[tuple[str, str]], required: str) -> list[tuple[str, str, str]]:
    """``(where, image, why)`` for every image whose tag is not a version >= ``required``."""
    need = parse_version(required)
    out = []
    for where, image in images:
        version = version_from_image(image)
        if need is None:
            out.append((where, image, f"the required version {required!r} is not a version {VERSION_FORMAT}"))
        elif version is None:
            out.append((where, image, f"tag {image_tag(image)!r} is not a version {VERSION_FORMAT}, "
                                      "so its version is unknown"))
        elif version < need:
            out.append((where, image, f"{version} < {required}"))
    return out


def _state_images(state: Optional[Mapping[str, Any]]) -> list[tuple[str, str]]:
    app = dig(state, "app", default={}) or {}
    out = []
    for part in ("api", "worker", "canary"):
        image = dig(app, part, "image")
        if image:
            out.append((f"app.{part}", image))
    return out


def _migration(state: Optional[Mapping[str, Any]]) -> dict:
    return dict(dig(state, "schema", "migration", default={}) or {})


def contract_after_app_rollout(t: Transition) -> list[Finding]:
    """schema-contract-after-app-rollout (gate): in a contract step every app image (applied and target) is new enough."""
    migration = _migration(t.target_state)
    if migration.get("stage") != "contract":
        return []
    required = str(migration.get("contractRequiresAppVersion") or "")
    images = [(f"target {w}", i) for w, i in _state_images(t.target_state)]
    if t.previous is not None:
        images += [(f"applied {w}", i) for w, i in _state_images(t.previous_state)]
    out = []
    for where, image, why in images_below(images, required):
        out.append(Finding(
            f"migration {migration.get('id')!r} contracts, but {where} runs {image} ({why}); contract requires every "
            f"Deployment at {required} or later",
            f"finish the release track first ({track_key(t, 'release')}: every Deployment at or above the version, "
            f"no canary on the old one), apply it, then set {track_key(t, 'schema')} to the contract step",
        ))
    return out


def contract_after_deployments_rollout(
    stage: Optional[str], required: Optional[str], deployments: list[tuple[str, str, list[str]]]
) -> list[Finding]:
    """schema-contract-after-deployments-rollout (stack): the Deployments the program registers agree.

    ``deployments``: ``(urn, name, container images)``.
    """
    if stage != "contract":
        return []
    if not required:
        return [Finding("the contract stage runs but no contractRequiresAppVersion is known",
                        f"set {state_key('schema', 'migration', 'contractRequiresAppVersion')}")]
    out = []
    for urn, name, images in deployments:
        for where, image, why in images_below([(f"Deployment {name}", i) for i in images], required):
            out.append(Finding(
                f"the contract stage runs while {where} runs {image} ({why})",
                f"roll every Deployment to {required} or later through the release track (bazbii:app.api.image, "
                "bazbii:app.worker.image, no bazbii:app.canary) and apply that before contracting",
                urn,
            ))
    return out


# --------------------------------------------------------------------------- SQL
EARLIER_METADATA = f"--{METADATA_FILE}"  # an earlier migration's metadata in the ConfigMap: <id>--migration.toml


@dataclass(frozen=True)
class ConfigMapJudgement:
    findings: tuple
    judged_by: str


def _plain_name(name: str) -> bool:
    return Path(name).name == name and name not in ("", ".", "..")


def _lay_out(root: Path, migration_id: str, data: Mapping[str, str]) -> Path:
    """The ConfigMap as the migrations directory the Job mounts (components/schema_release.py)."""
    folder = root / "migrations" / migration_id
    folder.mkdir(parents=True)
    for key, text in data.items():
        if not isinstance(text, str) or not _plain_name(key):
            continue
        if key.endswith(EARLIER_METADATA) and _plain_name(key.removesuffix(EARLIER_METADATA)):
            earlier = root / "migrations" / key.removesuffix(EARLIER_METADATA)
            earlier.mkdir(exist_ok=True)
            (earlier / METADATA_FILE).write_text(text)
        else:
            (folder / key).write_text(text)
    return folder


def judge_configmap(stage: str, migration_id: str, data: Mapping[str, str], use_squawk: bool = True,
                    shadow: Optional[ShadowServer] = None) -> ConfigMapJudgement:
    """The findings for what the labelled ``stage``'s Job runs, and which analysis judged.

    The Job runs the stage's files; when the schema track rolls back to this stage it first runs the later
    stages' down steps (the runner reverts the later applied stages), each judged as the stage it reopens,
    on the schema its stage left. The stage's own down step does not run in this Job. With ``shadow`` the
    earlier migrations come from the repository's migrations directory (the ConfigMap holds only their
    metadata).
    """
    if stage not in STAGES or not _plain_name(migration_id):
        return ConfigMapJudgement((), "")
    with tempfile.TemporaryDirectory(prefix="bazbii-configmap-") as tmp:
        folder = _lay_out(Path(tmp), migration_id, data)
        lint = lint_migration(folder, use_squawk=use_squawk, shadow=shadow, stages=STAGES[STAGES.index(stage):],
                              earlier_from=default_migrations_dir())
    own_down = f"/{stage}{DOWN_SUFFIX}"
    findings = [f for f in lint.findings[stage] if not f.file.endswith(own_down)]
    for later in STAGES[STAGES.index(stage) + 1:]:
        findings += [f for f in lint.findings[later] if f.file.endswith(f"/{later}{DOWN_SUFFIX}")]
    return ConfigMapJudgement(tuple(findings), lint.judged_by)


def analyse_configmap(stage: str, migration_id: str, data: Mapping[str, str], use_squawk: bool = True) -> list[Any]:
    """The findings of :func:`judge_configmap` without a shadow run."""
    return list(judge_configmap(stage, migration_id, data, use_squawk).findings)


def _finding(sql_finding: Any) -> Finding:
    fix = (sql_finding.fix or "rewrite the statement").rstrip(".")
    return Finding(f"{sql_finding.file}:{sql_finding.line}: [{sql_finding.rule}] {sql_finding.message}",
                   f"{fix} (in the migration's file under {state_key('schema', 'migrationsDir')})")


def destructive_only_in_contract(sql_findings: list[Any]) -> list[Finding]:
    """schema-destructive-ddl-in-contract-only: DROP/RENAME COLUMN, DROP TABLE ... only in a contract stage."""
    return [_finding(f) for f in sql_findings if f.rule == DESTRUCTIVE_RULE]


def safe_ddl(sql_findings: list[Any]) -> list[Finding]:
    """schema-safe-ddl: every other error of the analyser (locks, rewrites, NOT VALID, timeouts, ...)."""
    return [_finding(f) for f in sql_findings if f.severity == ERROR and f.rule != DESTRUCTIVE_RULE]


def ddl_lint(sql_findings: list[Any]) -> list[Finding]:
    """schema-ddl-lint (advisory): the analyser's warnings (squawk's wider catalogue)."""
    return [_finding(f) for f in sql_findings if f.severity != ERROR]


def label_id(migration_id: Any) -> str:
    """A migration id as Kubernetes labels carry it (``0002_add_category`` -> ``0002-add-category``)."""
    return re.sub(r"[^a-z0-9-]+", "-", str(migration_id or "").lower()).strip("-")[:63].rstrip("-")


RUNNER_MODULE = "bazbii_db.migrations"


def runs_through_runner(kind_and_name: str, commands: list[list[str]]) -> list[Finding]:
    """schema-migrations-through-runner (Job): migration SQL runs only through the bazbii_db runner.

    The SQL rules assume it (``analyse_sql(..., runner_sets_timeouts=True)``): the
    runner sets lock_timeout/statement_timeout on every DDL connection, retries
    lock timeouts, runs CREATE INDEX CONCURRENTLY outside transactions, holds the
    single-runner lock and journals progress.
    """
    for command in commands:
        if RUNNER_MODULE in [str(c) for c in command]:
            return []
    return [Finding(
        f"{kind_and_name} runs migration SQL with {commands[0] if commands else 'no command'}, not the migration "
        f"runner (python -m {RUNNER_MODULE})",
        f"set {state_key('schema', 'runner')} to job or provider and keep the program's Job command: both run "
        f"`python -m {RUNNER_MODULE} apply --migration <id> --stage <stage>` (it sets lock_timeout and "
        "statement_timeout, retries lock timeouts and journals progress)",
    )]


def stage_matches_plan(
    target_migration: Mapping[str, Any], labelled: list[tuple[str, str, Optional[str], Optional[str]]]
) -> list[Finding]:
    """schema-stage-matches-plan (stack): the migration the Job runs is the one the schema track is at.

    ``labelled``: ``(urn, kind and name, migration id label, stage label)`` of the migration Job and ConfigMap.
    """
    out = []
    want_id, want_stage = target_migration.get("id"), target_migration.get("stage")
    for urn, name, migration_id, stage in labelled:
        if label_id(migration_id) != label_id(want_id) or stage != want_stage:
            out.append(Finding(
                f"{name} runs migration {migration_id!r} stage {stage!r}, but the schema track is at "
                f"{want_id!r} stage {want_stage!r}" if want_id else
                f"{name} runs migration {migration_id!r} stage {stage!r}, but no migration is in flight "
                "(schema.migration is unset)",
                "run migrations only through the schema track (bazbii:schemaPhase); do not hand-edit the Job",
                urn,
            ))
    return out


# --------------------------------------------------------------------------- the policies
@functools.lru_cache(maxsize=64)
def _judge(stage: str, migration_id: str, files: tuple[tuple[str, str], ...], shadow_dsn: str) -> ConfigMapJudgement:
    return judge_configmap(stage, migration_id, dict(files), shadow=ShadowServer(shadow_dsn) if shadow_dsn else None)


def _configmap_judgement(props: Mapping[str, Any]) -> Optional[ConfigMapJudgement]:
    """The SQL analysis of a labelled migration ConfigMap (None: not a migration ConfigMap)."""
    labels = metadata_labels(props)
    migration_id = labels.get(MIGRATION_ID_LABEL)
    stage = labels.get(MIGRATION_STAGE_LABEL)
    if not migration_id or not stage:
        return None
    data = plain(props.get("data") or {})
    files = tuple(sorted((k, v) for k, v in data.items() if isinstance(v, str)
                         and (k.endswith(".sql") or k.endswith(METADATA_FILE))))
    return _judge(stage, migration_id, files, os.environ.get(SHADOW_DSN_ENV, "").strip())


def _sql_rule(select: Callable[[list], list[Finding]]) -> Callable:
    def rule(props: Mapping[str, Any], _type: str, _name: str, _config: Mapping[str, Any]) -> list[Finding]:
        judged = _configmap_judgement(props)
        return select(list(judged.findings)) if judged is not None else []

    return rule


def judgements(configmaps: Iterable[Mapping[str, Any]]) -> list[str]:
    """Which analysis judged each labelled migration ConfigMap's SQL (the offline preview prints it)."""
    out = []
    for props in configmaps:
        judged = _configmap_judgement(props)
        if judged is not None and judged.judged_by:
            labels = metadata_labels(props)
            out.append(f"the SQL of migration {labels.get(MIGRATION_ID_LABEL)}/{labels.get(MIGRATION_STAGE_LABEL)} "
                       f"was judged by {judged.judged_by}")
    return out


def job_runs_runner(props: Mapping[str, Any], _type: str, name: str, _config: Mapping[str, Any]) -> list[Finding]:
    """schema-migrations-through-runner (Job): the labelled migration Job's commands."""
    if MIGRATION_ID_LABEL not in metadata_labels(props):
        return []
    containers = dig(props, "spec", "template", "spec", "containers", default=[]) or []
    commands = [list(plain(c.get("command") or [])) + list(plain(c.get("args") or [])) for c in containers]
    return runs_through_runner(f"Job {resource_label(props, name)}", commands)


def registered_deployments_rollout(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """schema-contract-after-deployments-rollout (stack): the registered Deployments' images, judged against the gate."""
    t = gate_of(resources)
    if t is None:
        return []
    migration = _migration(t.target_state)
    deployments = []
    for r in resources:
        if r.resource_type == DEPLOYMENT:
            pod = plain(dig(r.props, "spec", "template", "spec", default={}) or {})
            images = [str(c.get("image") or "") for c in (pod.get("containers") or [])]
            deployments.append((r.urn, resource_label(r.props, r.name), images))
    return contract_after_deployments_rollout(
        migration.get("stage"), migration.get("contractRequiresAppVersion"), deployments)


def registered_stage_matches_plan(resources: list, _config: Mapping[str, Any]) -> list[Finding]:
    """schema-stage-matches-plan (stack): the labelled migration Job/ConfigMap, judged against the gate."""
    t = gate_of(resources)
    if t is None:
        return []
    labelled = []
    for r in resources:
        if r.resource_type in (CONFIG_MAP, JOB):
            labels = metadata_labels(r.props)
            if MIGRATION_ID_LABEL in labels or MIGRATION_STAGE_LABEL in labels:
                labelled.append((r.urn, f"{r.resource_type.rsplit(':', 1)[-1]} {resource_label(r.props, r.name)}",
                                 labels.get(MIGRATION_ID_LABEL), labels.get(MIGRATION_STAGE_LABEL)))
    return stage_matches_plan(_migration(t.target_state), labelled)


POLICIES = [
    gate_policy(
        "schema-contract-after-app-rollout",
        "A contract stage runs only when every app image (applied and target) is at or above the required version.",
        lambda t, c: contract_after_app_rollout(t),
    ),
    stack_policy(
        "schema-contract-after-deployments-rollout",
        "A contract stage runs only when every registered Deployment runs the required version or later.",
        registered_deployments_rollout,
    ),
    stack_policy(
        "schema-stage-matches-plan",
        "The migration Job runs the migration and stage the schema track is at.",
        registered_stage_matches_plan,
    ),
    resource_policy(
        "schema-destructive-ddl-in-contract-only",
        "Destructive DDL (DROP/RENAME COLUMN, DROP TABLE, ...) runs only in a contract stage.",
        (CONFIG_MAP,),
        _sql_rule(destructive_only_in_contract),
    ),
    resource_policy(
        "schema-safe-ddl",
        "Migration SQL takes no long locks and rewrites nothing (CONCURRENTLY, NOT VALID + VALIDATE, no rewrites, lock_timeout).",
        (CONFIG_MAP,),
        _sql_rule(safe_ddl),
    ),
    resource_policy(
        "schema-migrations-through-runner",
        "A migration Job runs its SQL through the bazbii_db runner (timeouts, retries, single runner, journal).",
        (JOB,),
        job_runs_runner,
    ),
    resource_policy(
        "schema-ddl-lint",
        "Advice from the SQL linters (squawk) on migration SQL.",
        (CONFIG_MAP,),
        _sql_rule(ddl_lint),
        enforcement=EnforcementLevel.ADVISORY,
    ),
]
