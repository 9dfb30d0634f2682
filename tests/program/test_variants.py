"""Config variants the shipped plan does not use, but the components must honour."""

from __future__ import annotations

import pytest

from bazbii_db.dataplane import schema_apply_command
from bazbii_db.migrations.spec import migration_checksum
from bazbii_plan.errors import ConfigError
from bazbii_plan.stackconfig import load_stack_config
from components.schema_release import STAGE_OUTPUT_ENV, reporting_exit
from offline_preview.harness import REPO_ROOT
from tests.program.helpers import DEPLOYMENT, JOB, POOL, REMOTE, dep_names, names

S1, S2, S3 = "203.0.113.11", "203.0.113.12", "203.0.113.13"


def env(deployment) -> dict:
    container = deployment.inputs["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def run(program, steps=None, edit=None):
    values = program.values_for(steps)
    if edit:
        edit(values)
    return program.run(values)


def test_ssh_runner_replaces_the_job(program):
    ev = run(program, edit=lambda v: v["schema"].update(runner="ssh"))
    assert not ev.by_type(JOB) and "schema-dsn" not in names(ev)
    step = ev.named("schema-0002_add_category-migrate")
    # the runner CLI on the pooler host (server1), from the release installed there
    assert step.type == REMOTE and step.inputs["connection"]["host"] == S1
    checksum = migration_checksum(REPO_ROOT / "migrations", "0002_add_category", "migrate")
    versions = ["1.9.0", "2.0.0"]  # every running version, as the contract gate needs them
    assert step.inputs["create"] == reporting_exit(schema_apply_command(
        migration_id="0002_add_category", stage="migrate", expected_checksum=checksum, app_versions=versions,
        replicas=1))
    assert ("stdin",) in step.secret_paths and ("create",) not in step.secret_paths
    app_dsn, replica_dsn = step.inputs["stdin"].splitlines()
    assert "host=203.0.113.12" in app_dsn and "host=203.0.113.13" in replica_dsn
    assert {"schema-quiet-workers", "dataplane-install-server1"} <= dep_names(step)
    assert step.name in dep_names(ev.named("schema-resume-workers"))
    assert "schema-resume-workers" in dep_names(ev.named("app-worker"))


KUBECTL_STAND_IN = """#!/usr/bin/env bash
# Stand-in for kubectl: records each call; the worker Deployment exists and has no pod left.
echo "$*" >> "$KUBECTL_LOG"
case "$*" in *"get pods"*) exit 0 ;; esac
exit 0
"""


def _run_script(tmp_path, text, **env):
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(KUBECTL_STAND_IN)
    kubectl.chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.write_text("")
    result = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_LOG": str(log),
                                 **env})
    return result, log.read_text()


@pytest.mark.parametrize("exit_code", [0, 3])
def test_the_ssh_runner_brings_the_workers_back_whatever_the_stage_did(program, tmp_path, exit_code):
    ev = run(program, edit=lambda v: v["schema"].update(runner="ssh"))
    stage, resume = ev.named("schema-0002_add_category-migrate"), ev.named("schema-resume-workers")
    assert STAGE_OUTPUT_ENV in resume.inputs["environment"]
    # The stage reports its exit status instead of failing, so the resume command always runs ...
    reported, _ = _run_script(tmp_path, reporting_exit(f"bash -c 'echo runner output; exit {exit_code}'"))
    assert reported.returncode == 0 and reported.stdout.splitlines()[-1] == f"bazbii-stage-exit={exit_code}"
    assert stage.inputs["create"].endswith('; echo "bazbii-stage-exit=$?"')
    # ... brings the workers back to app.worker.replicas, then fails the update if the stage failed.
    result, calls = _run_script(tmp_path, resume.inputs["create"], **{STAGE_OUTPUT_ENV: reported.stdout})
    assert "scale deployment/worker --replicas=2" in calls
    assert result.returncode == (1 if exit_code else 0), result.stderr
    if exit_code:
        assert f"migration stage failed (exit {exit_code}); workers resumed" in result.stderr
    assert "runner output" in result.stdout


def test_direct_app_connection_points_at_the_primary(program):
    ev = run(program, edit=lambda v: v["database"].update(appConnection="direct"))
    api = env(ev.named("app-api"))
    assert (api["DB_HOST"], api["DB_PORT"]) == (S2, "5432")
    assert ev.outputs["dbHost"] == S2


def test_the_runner_quiets_the_workers_and_brings_back_the_configured_replicas(program):
    ev = run(program)
    assert "scale deployment/worker --replicas=0" in ev.named("schema-quiet-workers").inputs["create"]
    assert "scale deployment/worker --replicas=2" in ev.named("schema-resume-workers").inputs["create"]
    assert ev.named("app-worker").inputs["spec"]["replicas"] == 2
    # A plan cannot keep them quiet (the job queue would stop): the config is refused, naming the key.
    values = program.values_for(None)
    values["app"]["worker"]["quiet"] = True
    with pytest.raises(ConfigError) as info:
        load_stack_config(values, set(program.secret_keys))
    assert "bazbii:app.worker.quiet: the migration runner quiets the workers itself" in str(info.value)


def test_canary_at_zero_keeps_every_pod_stable(program):
    def edit(v):
        v["plan"]["release"]["steps"][2]["changes"]["app"]["canary"]["weight"] = 0
    ev = run(program, edit=edit)
    assert ev.named("app-api").inputs["spec"]["replicas"] == 10
    assert ev.named("app-api-canary").inputs["spec"]["replicas"] == 0


def test_replica_without_lag_gate_registers_no_gate(program):
    def edit(v):
        v["plan"]["infra"]["steps"][2]["changes"]["database"]["replicas"]["server3"]["lagGate"] = False
    ev = run(program, edit=edit)
    assert "db-replica-server3" in names(ev) and "db-lag-gate-server3" not in names(ev)


def test_unmonitored_pool_has_no_monitor_and_affinity_is_passed_on(program):
    def edit(v):
        v["plan"]["infra"]["steps"][3]["changes"]["traffic"]["pools"]["server2"]["monitored"] = False
        v["traffic"]["sessionAffinity"] = "cookie"
    ev = run(program, edit=edit)
    assert "monitor" not in ev.named("traffic-server2").inputs
    assert ev.named("traffic-server1").inputs["monitor"]
    assert ev.named("traffic-lb").inputs["sessionAffinity"] == "cookie"
    assert len(ev.by_type(POOL)) == 2


def test_no_schema_migration_means_deployments_wait_on_nothing_schema(program):
    ev = program.evaluate({"schema": "none", "release": "api-1.9"})
    for d in ev.by_type(DEPLOYMENT):
        assert not [n for n in dep_names(d) if n.startswith("schema")]


READER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx1gFm1mq0vJdXbbp2Zl1rJ3OtqIbJ9pmnn6b9Q5Xkz ops@laptop"


def test_the_metrics_reader_key_is_authorized_on_the_metrics_server_only_when_configured(program):
    from bazbii_analysis.metrics_reader import MARKER, authorized_keys_line, install_command, remove_command, script_text

    assert not [r for r in program.evaluate().resources if r.name.startswith("metrics-reader")]
    ev = run(program, edit=lambda v: v["metrics"]["ssh"].update(readerPublicKey=READER_KEY))
    command = ev.named("metrics-reader-authorize")
    assert command.type == REMOTE and command.inputs["connection"]["host"] == S2  # bazbii:metrics.ssh.server
    endpoint = program.values["metrics"]["endpoint"]
    assert command.inputs["create"] == command.inputs["update"] == install_command(READER_KEY, endpoint)
    assert command.inputs["delete"] == remove_command() and command.inputs["stdin"] == script_text()
    line = authorized_keys_line(READER_KEY, endpoint)
    assert line.startswith('restrict,command="') and line.endswith(f" {MARKER}") and "ops@laptop" not in line
    assert dep_names(command) == {"transition-check", "server2-provision"}  # the check, then its server
    assert command.parent.endswith("bazbii:index:MetricsReaderAccess::metrics-reader")
    assert ("connection",) in command.secret_paths  # the stack's own key installs it, as a secret


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m["ssh"].update(readerPublicKey="AAAA not a key"), "bazbii:metrics.ssh.readerPublicKey"),
    (lambda m: m.update(ssh={"host": "10.0.0.5", "readerPublicKey": READER_KEY}), "readerPublicKey is installed by the program"),
    (lambda m: m.update(endpoint="http://prom:9090/x'y"), "the reader's forced command names it"),
])
def test_a_reader_key_the_program_cannot_install_is_refused_by_name(program, edit, problem):
    values = program.values_for()
    values["metrics"]["ssh"]["readerPublicKey"] = READER_KEY
    edit(values["metrics"])
    with pytest.raises(ConfigError) as error:
        load_stack_config(values, program.secret_keys)
    assert problem in str(error.value), str(error.value)
