"""Schema rules: contract only after every Deployment runs the new version; DDL that is safe for its stage.

SQL is judged by :func:`bazbii_db.sql_safety.analyse_sql` (pglast parse trees
plus squawk, offline); this module adds what the analyser cannot know on its
own: which stage the *plan* is in, and which images the Deployments run.

Where the SQL comes from: the migration Job's ConfigMap, labelled
``bazbii.io/migration-id`` / ``bazbii.io/migration-stage``, whose data holds
``<file>.sql`` for the stage being run (and possibly earlier stages' files,
which are only used to know which NOT NULL checks were already validated).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Iterable, Mapping, Optional

from pulumi_policy import EnforcementLevel

from bazbii_db.migrations.lint import DOWN_ANALYSED_AS, migration_file_label
from bazbii_db.sql_safety import ERROR, STAGES, analyse_sql, validated_checks_after
from bazbii_plan.facts import DOWN_SUFFIX, MIGRATION_ID_LABEL, MIGRATION_STAGE_LABEL, STAGE_FILES, VERSION_FORMAT, version_from_image

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
def analyse_configmap(
    stage: str, migration_id: str, data: Mapping[str, str], use_squawk: bool = True
) -> list[Any]:
    """Findings of :func:`analyse_sql` for the files the labelled ``stage`` runs.

    Earlier stages' files present in ``data`` only feed the validated NOT NULL
    checks (they ran in earlier steps). Later stages' ``<stage>.down.sql`` run in
    this stage's Job on a rollback and are analysed as down steps
    (``DOWN_ANALYSED_AS``). A ``.sql`` file that belongs to no stage is analysed
    as part of the labelled stage.
    """
    if stage not in STAGES:
        return []
    known: set = set()
    known_after: dict[str, set] = {}  # the validated checks once each stage has run
    findings = []
    downs = {f"{s}{DOWN_SUFFIX}" for s in STAGES}
    staged = {f for s in STAGES for f in STAGE_FILES[s]}
    extra = sorted(k for k in data if k.endswith(".sql") and k not in staged and k not in downs)
    for file_stage in STAGES:
        for filename in [f for f in STAGE_FILES[file_stage] if f in data] + (extra if file_stage == stage else []):
            sql = data[filename]
            if not isinstance(sql, str):
                continue
            if file_stage == stage:
                findings += analyse_sql(sql, stage, migration_file_label(migration_id, filename),
                                        known_validated_checks=known, use_squawk=use_squawk)
            known = validated_checks_after(sql, known)
        known_after[file_stage] = known
    # a later stage's down step runs in this stage's Job when the schema track rolls back to it (the
    # runner reverts the later applied stages first), and is judged as the runner's lint judges it:
    # the down of contract restores what contract removed, as an expand would (DOWN_ANALYSED_AS),
    # not as the stage the Job is labelled with; this stage's own down does not run here
    for later in STAGES[STAGES.index(stage) + 1:]:
        down = f"{later}{DOWN_SUFFIX}"
        if isinstance(data.get(down), str):
            findings += analyse_sql(data[down], DOWN_ANALYSED_AS[later], migration_file_label(migration_id, down),
                                    known_validated_checks=known_after[later], use_squawk=use_squawk)
    return findings


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
def _analyse(stage: str, migration_id: str, files: tuple[tuple[str, str], ...]) -> tuple:
    return tuple(analyse_configmap(stage, migration_id, dict(files)))


def _configmap_findings(props: Mapping[str, Any]) -> Optional[tuple]:
    """The SQL analyser's findings for a labelled migration ConfigMap (None: not a migration ConfigMap)."""
    labels = metadata_labels(props)
    migration_id = labels.get(MIGRATION_ID_LABEL)
    stage = labels.get(MIGRATION_STAGE_LABEL)
    if not migration_id or not stage:
        return None
    data = plain(props.get("data") or {})
    files = tuple(sorted((k, v) for k, v in data.items() if isinstance(v, str) and k.endswith(".sql")))
    return _analyse(stage, migration_id, files)


def _sql_rule(select: Callable[[list], list[Finding]]) -> Callable:
    def rule(props: Mapping[str, Any], _type: str, _name: str, _config: Mapping[str, Any]) -> list[Finding]:
        findings = _configmap_findings(props)
        return select(list(findings)) if findings is not None else []

    return rule


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
