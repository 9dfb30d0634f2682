"""SchemaRelease: one stage of one schema migration, run once, with the workers quiet.

Registered only while ``schema.migration`` is set. Order (each depends on the previous):

``<name>-sql``                ConfigMap ``migration-<id>-<stage>``: the migration directory as
                              reviewed in this repository (``<stage>.sql`` is required, plus the
                              other stage files and ``migration.toml``; earlier migrations'
                              ``migration.toml`` as ``<id>--migration.toml``), labelled
                              ``bazbii.io/migration-id`` / ``bazbii.io/migration-stage``, checksum
                              annotated. The Job mounts it as its migrations directory, so the
                              runner applies exactly this SQL whatever the image ships.
``<name>-quiet-workers``      local.Command: ``kubectl scale --replicas=0 deployment/worker`` and
                              wait until no worker pod is left (no job runs mid-migration)
``<name>-<id>-<stage>``       runner=job: batch/v1 Job ``migrate-<id>-<stage>-<checksum8>``
                              (backoffLimit 0, parallelism 1, completions 1) running
                              ``python -m bazbii_db.migrations apply --migration <id> --stage <stage>``
                              with the DSN from the Secret ``<name>-dsn``; runner=ssh:
                              remote.Command on the pooler host running the same CLI from the release
                              DataPlaneRelease installed there (``--expected-checksum`` refuses files
                              other than the previewed ones; the DSNs arrive on stdin, never argv)
``<name>-resume-workers``     local.Command: waits for the stage's outcome (the Job's, a Job deleted by
                              hand included; runner=ssh: the
                              exit status the stage command reports instead of failing), scales the
                              workers back (always: a failed expand leaves the old schema, on which the
                              running workers work), waits until they are ready, and fails the update if
                              the stage failed or they are not ready

The runner quiets the workers itself, around the one stage it runs, and brings them back to
``app.worker.replicas`` afterwards, failed stage included: no plan step sets the workers to 0
for a migration (``bazbii:app.worker.quiet`` is refused; ``k8s-workers-keep-running`` refuses a
step that stops them).

``ApiDeployment`` depends on this component, so the Deployments roll only
after the migration succeeded: migrations before the code that needs them.

Run once: the Job carries ``pulumi.com/skipAwait`` (the resume command does
the waiting, so the workers come back even when the Job fails) and
``ignore_changes`` on its spec, so a later image or version change never
re-runs a finished stage; a changed SQL file changes the checksum in the Job's
name and therefore runs the stage again (the runner's journal skips the units
already applied). To retry a failed (or stopped) stage without changing its SQL, delete the
failed Job (``kubectl delete job ...``) and run the update again with ``--refresh`` (so that Pulumi
sees the Job is gone and creates it again); runner=ssh: ``pulumi up --replace <urn of
<name>-<id>-<stage>>``. Stopping a running stage: delete its Job (or its pod); docs/schema-migrations.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import local, remote

from bazbii_db.dataplane import DEFAULT_RUNTIME, Runtime, schema_apply_command, secrets_stdin
from bazbii_db.migrations.spec import METADATA_FILE, MigrationSpecError, list_migrations, load_migration
from bazbii_plan import models
from bazbii_plan.errors import ConfigError, config_key
from bazbii_plan.facts import (MIGRATION_CHECKSUM_ANNOTATION, MIGRATION_ID_LABEL, MIGRATION_STAGE_LABEL, PART_OF_LABELS,
                               WORKER_SELECTOR)
from components._util import LOCAL_INTERPRETER, TYPE_PREFIX, child_opts, inherit_depends_on, k8s_name, q, script

REPO_ROOT = Path(__file__).resolve().parent.parent
MOUNT_ROOT = "/var/lib/bazbii/migrations"
ID_LABEL, STAGE_LABEL, CHECKSUM_ANNOTATION = MIGRATION_ID_LABEL, MIGRATION_STAGE_LABEL, MIGRATION_CHECKSUM_ANNOTATION


@dataclass(frozen=True)
class MigrationBundle:
    """What one stage runs, read from the repository at preview time."""

    migration_id: str
    stage: str
    checksum: str
    files: dict[str, str]  # file name -> text (the whole migration directory)
    directory: str
    earlier: dict[str, str] = field(default_factory=dict)  # earlier migration id -> its migration.toml
    migrations_root: str = ""  # absolute migrations directory (for the provider runner)

    def config_map_data(self) -> dict[str, str]:
        """This migration's files under their own names; earlier migrations' metadata as ``<id>--migration.toml``."""
        data = dict(self.files)
        for mig_id, toml in self.earlier.items():
            data[f"{mig_id}--{METADATA_FILE}"] = toml
        return data

    def mount_items(self) -> list[tuple[str, str]]:
        """``(key, path)`` pairs laying the ConfigMap out as a migrations directory."""
        items = [(name, f"{self.migration_id}/{name}") for name in sorted(self.files)]
        items += [(f"{mig_id}--{METADATA_FILE}", f"{mig_id}/{METADATA_FILE}") for mig_id in sorted(self.earlier)]
        return items


def load_bundle(schema: models.Schema, root: Path = REPO_ROOT) -> Optional[MigrationBundle]:
    """The migration of the current step, or None; raises ConfigError naming the missing/bad file."""
    migration = schema.migration
    if migration is None:
        return None
    base = Path(schema.migrations_dir)
    directory = base if base.is_absolute() else root / base
    path = directory / migration.id
    shown = Path(schema.migrations_dir) / migration.id
    key = config_key(("schema", "migration", "id"))
    try:
        found = path.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ConfigError([f"{key}: migration directory {shown} cannot be read: {exc.strerror}"]) from None
    if not found:
        raise ConfigError([f"{key}: migration directory {shown} does not exist"])
    stage_file = path / f"{migration.stage}.sql"
    if not stage_file.is_file():
        raise ConfigError([f"{config_key(('schema', 'migration', 'stage'))}: {shown / stage_file.name} is missing "
                           f"(stage {migration.stage!r} of {migration.id} needs it)"])
    try:
        loaded = load_migration(path)
        checksum = loaded.checksum(migration.stage)
    except MigrationSpecError as exc:
        raise ConfigError([f"{key}: {exc}"]) from None
    if loaded.contract_min_app_version and loaded.contract_min_app_version != migration.contract_requires_app_version:
        raise ConfigError([
            f"{config_key(('schema', 'migration', 'contractRequiresAppVersion'))}: is "
            f"{migration.contract_requires_app_version} but {shown}/migration.toml says contract_min_app_version = "
            f"{loaded.contract_min_app_version}"
        ])
    files = {p.name: p.read_text() for p in sorted(path.iterdir()) if p.is_file()}
    # The runner checks that earlier migrations were expanded first; it needs to see their ids.
    earlier = {m: (directory / m / METADATA_FILE).read_text() for m in list_migrations(directory) if m < migration.id}
    return MigrationBundle(migration.id, migration.stage, checksum, files, str(shown), earlier, str(directory))


@dataclass(frozen=True)
class SchemaReleaseArgs:
    namespace: str
    runner: str  # "job" | "ssh"
    bundle: MigrationBundle
    image: str  # image with the bazbii_db runner (the stable API image)
    worker_replicas: int  # what the workers come back to
    dsn: pulumi.Input[str]  # secret: the app user, directly on the primary (session-level locks)
    replica_dsns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # secret: backfill lag throttle
    app_versions: Sequence[str] = ()
    drain_seconds: int = 60  # how long quiet waits for worker pods to finish (grace period + margin)
    runner_connection: Optional[remote.ConnectionArgs] = None  # runner=ssh: SSH to the pooler host
    runtime: Runtime = DEFAULT_RUNTIME  # runner=ssh: where DataPlaneRelease installed the CLI


def quiet_script(ns: str, timeout: int, stage_label: str) -> str:
    """Scale the workers to 0 and wait until none is left. ``stage_label`` names the stage (id, stage,
    checksum): a new stage changes the text, so the command runs again, in place (components._util.script)."""
    return script(
        f"""
echo {q(f"quieting the workers for {stage_label}")}
NS={q(ns)}
if ! kubectl -n "$NS" get deployment/worker >/dev/null 2>&1; then
  echo "no worker Deployment yet: nothing to quiet"; exit 0
fi
kubectl -n "$NS" scale deployment/worker --replicas=0
deadline=$(( $(date +%s) + {timeout} ))
while [ -n "$(kubectl -n "$NS" get pods -l {WORKER_SELECTOR} -o name)" ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "worker pods still running after {timeout}s; not starting the migration" >&2
    exit 1
  fi
  sleep 2
done
echo "workers quiet"
"""
    )


# runner=ssh: the stage command prints its exit status after its output instead of failing, so the
# resume command can bring the workers back before it fails the update (what skipAwait does for the Job).
STAGE_EXIT_MARKER = "bazbii-stage-exit="
# The update ends with the workers back and ready, or fails saying they are not (they may not start on the new schema).
WORKERS_READY_SECONDS = 300
STAGE_OUTPUT_ENV = "BAZBII_STAGE_OUTPUT"


def reporting_exit(command: str) -> str:
    """``command``, then its exit status as the last line of its output; always exits 0."""
    return f'{command}; echo "{STAGE_EXIT_MARKER}$?"'


def resume_script(ns: str, replicas: int, job_name: Optional[str], timeout: int, stage_label: str,
                  reported: bool = False) -> str:
    """Wait for the stage's outcome (``job_name``: the Job's; ``reported``: the exit status in $BAZBII_STAGE_OUTPUT),
    scale the workers back to ``replicas`` whatever it was, then fail if the stage failed. ``stage_label`` names
    the stage, so a new stage changes the text and the command runs again, in place (components._util.script)."""
    wait_job = ""
    if reported:
        wait_job = f"""
printf '%s\n' "${{{STAGE_OUTPUT_ENV}:-}}" | tail -n 50
code=$(printf '%s\n' "${{{STAGE_OUTPUT_ENV}:-}}" | sed -n 's/^{STAGE_EXIT_MARKER}//p' | tail -n 1)
if [ "${{code:-}}" != 0 ]; then outcome="failed (exit ${{code:-unknown}})"; fi
"""
    elif job_name:
        # A Job deleted by hand (to stop its backfill) ends the wait too: once its pod is gone (SIGTERM stops the
        # backfill after its batch), the workers come back and the update fails, instead of waiting out the timeout.
        wait_job = f"""
deadline=$(( $(date +%s) + {timeout} ))
outcome=""
while [ -z "$outcome" ]; do
  exists=$(kubectl -n "$NS" get job/{job_name} --ignore-not-found -o name 2>/dev/null || echo unknown)
  succeeded=$(kubectl -n "$NS" get job/{job_name} -o jsonpath='{{.status.succeeded}}' 2>/dev/null || true)
  failed=$(kubectl -n "$NS" get job/{job_name} -o jsonpath='{{.status.failed}}' 2>/dev/null || true)
  if [ -z "$exists" ]; then
    kubectl -n "$NS" wait --for=delete pod -l job-name={job_name} --timeout=120s >/dev/null 2>&1 || true
    outcome=deleted
  elif [ "${{succeeded:-0}}" -ge 1 ]; then outcome=succeeded
  elif [ "${{failed:-0}}" -ge 1 ]; then outcome=failed
  elif [ "$(date +%s)" -ge "$deadline" ]; then outcome=timeout
  else sleep 5; fi
done
kubectl -n "$NS" logs job/{job_name} --tail=50 || true
"""
    return script(
        f"""
echo {q(f"resuming the workers after {stage_label}")}
NS={q(ns)}
outcome=succeeded
{wait_job}
ready=yes
if kubectl -n "$NS" get deployment/worker >/dev/null 2>&1; then
  kubectl -n "$NS" scale deployment/worker --replicas={replicas}
  kubectl -n "$NS" rollout status deployment/worker --timeout={WORKERS_READY_SECONDS}s || ready=no
fi
if [ "$outcome" != succeeded ]; then
  echo "migration {('job ' + job_name) if job_name else 'stage'} $outcome; workers resumed on the current code, nothing rolled" >&2
  exit 1
fi
if [ "$ready" != yes ]; then
  echo "migration done, but the workers scaled back to {replicas} are not ready after {WORKERS_READY_SECONDS}s: kubectl -n $NS describe deployment/worker" >&2
  exit 1
fi
echo "migration done, workers resumed ({replicas}) and ready"
"""
    )


class SchemaRelease(pulumi.ComponentResource):
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: SchemaReleaseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TYPE_PREFIX}:SchemaRelease", name, None, opts)
        inherit_depends_on(self, opts)
        bundle = args.bundle
        ns = args.namespace
        labels = {
            ID_LABEL: bundle.migration_id,  # the real id (label values allow "_"): findings cite migrations/<id>/<file>
            STAGE_LABEL: bundle.stage,
            **PART_OF_LABELS,
        }
        annotations = {CHECKSUM_ANNOTATION: bundle.checksum}
        base = f"migration-{k8s_name(bundle.migration_id)}-{bundle.stage}"
        stage_label = f"{bundle.migration_id} {bundle.stage} ({bundle.checksum[:12]})"

        self.sql = k8s.core.v1.ConfigMap(
            f"{name}-sql",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=base, namespace=ns, labels=labels, annotations=annotations),
            data=bundle.config_map_data(),
            opts=child_opts(self),
        )
        quiet = quiet_script(ns, args.drain_seconds, stage_label)
        self.quiet = local.Command(
            f"{name}-quiet-workers",
            create=quiet,
            update=quiet,
            interpreter=LOCAL_INTERPRETER,
            opts=child_opts(self, depends_on=[self.sql]),
        )

        job_name = None
        stage_output: Optional[pulumi.Output[str]] = None  # runner=ssh: the step's stdout
        if args.runner == "job":
            self.dsn_secret = k8s.core.v1.Secret(
                f"{name}-dsn",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"{base}-dsn", namespace=ns, labels=labels),
                type="Opaque",
                string_data={
                    "DATABASE_URL": pulumi.Output.secret(args.dsn),
                    **{f"REPLICA_{s.upper()}_DSN": pulumi.Output.secret(d) for s, d in args.replica_dsns.items()},
                },
                opts=child_opts(self),
            )
            job_name = f"migrate-{k8s_name(bundle.migration_id)}-{bundle.stage}-{bundle.checksum[:8]}"
            command = [
                "python", "-m", "bazbii_db.migrations", "--migrations-dir", MOUNT_ROOT,
                "apply", "--dsn-env", "DATABASE_URL",
                "--migration", bundle.migration_id, "--stage", bundle.stage,
            ]
            for version in args.app_versions:
                command += ["--app-version", version]
            for server in sorted(args.replica_dsns):
                command += ["--replica-dsn-env", f"REPLICA_{server.upper()}_DSN"]
            env_from_secret = [
                k8s.core.v1.EnvVarArgs(
                    name=key,
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=f"{base}-dsn", key=key)),
                )
                for key in ["DATABASE_URL", *[f"REPLICA_{s.upper()}_DSN" for s in sorted(args.replica_dsns)]]
            ]
            self.step: pulumi.CustomResource = k8s.batch.v1.Job(
                f"{name}-{bundle.migration_id}-{bundle.stage}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=job_name, namespace=ns, labels=labels,
                    annotations={**annotations, "pulumi.com/skipAwait": "true"},
                ),
                spec=k8s.batch.v1.JobSpecArgs(
                    backoff_limit=0,
                    parallelism=1,
                    completions=1,
                    template=k8s.core.v1.PodTemplateSpecArgs(
                        metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                        spec=k8s.core.v1.PodSpecArgs(
                            restart_policy="Never",
                            containers=[k8s.core.v1.ContainerArgs(
                                name="migrate",
                                image=args.image,
                                command=command,
                                env=[*env_from_secret,
                                     k8s.core.v1.EnvVarArgs(name="BAZBII_MIGRATIONS_DIR", value=MOUNT_ROOT),
                                     k8s.core.v1.EnvVarArgs(name="BAZBII_EXPECTED_CHECKSUM", value=bundle.checksum)],
                                volume_mounts=[k8s.core.v1.VolumeMountArgs(
                                    name="migrations", mount_path=MOUNT_ROOT, read_only=True)],
                            )],
                            volumes=[k8s.core.v1.VolumeArgs(
                                name="migrations",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                    name=base,
                                    items=[k8s.core.v1.KeyToPathArgs(key=key, path=path)
                                           for key, path in bundle.mount_items()],
                                ))],
                        ),
                    ),
                ),
                opts=child_opts(self, depends_on=[self.quiet, self.sql, self.dsn_secret], ignore_changes=["spec"]),
            )
        else:
            if args.runner_connection is None:
                raise ValueError("runner=ssh needs runner_connection (SSH to the pooler host)")
            replica_servers = sorted(args.replica_dsns)
            apply = schema_apply_command(migration_id=bundle.migration_id, stage=bundle.stage,
                                         expected_checksum=bundle.checksum, app_versions=list(args.app_versions),
                                         replicas=len(replica_servers), runtime=args.runtime)
            stdin: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.all(
                args.dsn, *[args.replica_dsns[s] for s in replica_servers]).apply(secrets_stdin))
            step = remote.Command(
                f"{name}-{bundle.migration_id}-{bundle.stage}",
                connection=args.runner_connection,
                create=reporting_exit(apply),  # id, stage, checksum and app versions are its arguments
                update=reporting_exit(apply),
                stdin=stdin,
                opts=child_opts(self, depends_on=[self.quiet], additional_secret_outputs=["stdin"]),
            )
            self.step = step
            stage_output = step.stdout  # the report the resume script reads

        reported = args.runner != "job"
        resume = resume_script(ns, args.worker_replicas, job_name, timeout=3600, stage_label=stage_label,
                               reported=reported)
        self.resume = local.Command(
            f"{name}-resume-workers",
            create=resume,
            update=resume,
            interpreter=LOCAL_INTERPRETER,
            environment={STAGE_OUTPUT_ENV: stage_output} if stage_output is not None else None,
            opts=child_opts(self, depends_on=[self.step]),
        )
        self.ready = [self.resume]
        self.register_outputs({
            "migrationId": bundle.migration_id,
            "stage": bundle.stage,
            "checksum": bundle.checksum,
            "runner": args.runner,
            "job": job_name,
        })
