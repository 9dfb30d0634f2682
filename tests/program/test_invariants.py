"""Properties that hold at every combination of steps the plan goes through.

Combinations: every state of the apply-order walk, plus the stack file as shipped.
"""

from __future__ import annotations

import functools
import json
import shlex
import subprocess

import kubernetes_validate
import pytest

from tests.program.conftest import SECRET_VALUES
from tests.program.helpers import (DEPLOYMENT, K8S_TYPES, LOCAL, PDB, POOL, REMOTE, TUNNEL_CONFIG, manifest,
                                   pool_weights_by_name)

K8S_VERSION = "1.30"  # native preStop sleep is beta and on by default from 1.30


def combos(program):
    seen, out = set(), []
    for steps in [None, *program.sequence]:
        key = tuple(sorted((steps or {}).items()))
        if key not in seen:
            seen.add(key)
            out.append(steps)
    return out


@pytest.fixture(scope="module")
def evaluations(program):
    return [(steps or program.config.current, program.evaluate(steps)) for steps in combos(program)]


def test_walk_covers_every_step(program):
    reached = {(t, s) for steps in program.sequence for t, s in steps.items()}
    every = {(t, s) for t, track in program.config.plan.tracks.items() for s in track.names()}
    assert reached == every


def test_components_parent_their_children(evaluations):
    for steps, ev in evaluations:
        by_urn = {r.urn: r for r in ev.resources}
        for r in ev.resources:
            if r.type.startswith("bazbii:index:") or r.name in ("transition-check", "applied-record"):
                assert r.parent.endswith("pulumi:pulumi:Stack::bazbii-prod"), (steps, r.name)
                continue
            parent = by_urn.get(r.parent)
            assert parent is not None and parent.type.startswith("bazbii:index:"), (steps, r.name, r.parent)
            assert r.name.startswith(parent.name + "-"), (steps, r.name, parent.name)


def test_resource_names_are_unique(evaluations):
    for steps, ev in evaluations:
        keys = [(r.type, r.name) for r in ev.resources]
        assert len(keys) == len(set(keys)), steps


def test_no_secret_reaches_a_plain_input_or_output(evaluations):
    for steps, ev in evaluations:
        for r in ev.resources:
            text = json.dumps(r.redacted_inputs(), default=str)
            for key, value in SECRET_VALUES.items():
                assert value not in text, f"{steps}: {key} in plain inputs of {r.name}"
        outputs = json.dumps(ev.outputs, default=str)
        assert not any(value in outputs for value in SECRET_VALUES.values()), steps


def test_remote_commands_carry_secrets_only_on_stdin(evaluations):
    for steps, ev in evaluations:
        for r in ev.by_type(REMOTE):
            assert ("connection",) in r.secret_paths, r.name
            for key in ("create", "update", "delete"):
                assert (key,) not in r.secret_paths, (steps, r.name, key)


def test_deployments_roll_without_downtime(evaluations):
    for steps, ev in evaluations:
        for d in ev.by_type(DEPLOYMENT):
            spec = d.inputs["spec"]
            rolling = spec["strategy"]["rollingUpdate"]
            assert spec["strategy"]["type"] == "RollingUpdate"
            assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1, (steps, d.name)
            assert spec["minReadySeconds"] > 0 and spec["revisionHistoryLimit"] >= 2
            pod = spec["template"]["spec"]
            container = pod["containers"][0]
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            drain = container["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert pod["terminationGracePeriodSeconds"] > drain > 0
            selector = spec["selector"]["matchLabels"]
            assert selector.items() <= spec["template"]["metadata"]["labels"].items()
            assert not container["image"].endswith(":latest")


def test_pdb_covers_every_api_pod(evaluations):
    for steps, ev in evaluations:
        (pdb,) = ev.by_type(PDB)
        selector = pdb.inputs["spec"]["selector"]["matchLabels"]
        assert selector == {"app.kubernetes.io/name": "api"}
        assert pdb.inputs["spec"]["maxUnavailable"] == 1
        api_pods = [d for d in ev.by_type(DEPLOYMENT) if d.inputs["metadata"]["labels"]["app.kubernetes.io/name"] == "api"]
        assert api_pods
        for d in api_pods:
            assert selector.items() <= d.inputs["spec"]["template"]["metadata"]["labels"].items()


def test_api_replicas_stay_whole_across_the_canary(evaluations):
    for steps, ev in evaluations:
        total = sum(d.inputs["spec"]["replicas"] for d in ev.by_type(DEPLOYMENT)
                    if d.inputs["metadata"]["labels"]["app.kubernetes.io/name"] == "api")
        assert total == 10, steps


def test_load_balancer_weights_follow_the_step(program, evaluations):
    for steps, ev in evaluations:
        state = program.config.with_steps(**steps).state()
        expected = {name: pool.weight / 100 for name, pool in state.traffic.pools.items()}
        assert pool_weights_by_name(ev) == pytest.approx(expected), steps
        assert ev.outputs["poolWeights"] == pytest.approx(expected)
        lb = ev.named("traffic-lb").inputs
        assert len(lb["defaultPools"]) == len(ev.by_type(POOL)) == len(expected)
        assert lb["randomSteering"]["defaultWeight"] == 0


def test_tunnel_ingress_ends_with_catch_all(evaluations):
    for steps, ev in evaluations:
        for config in ev.by_type(TUNNEL_CONFIG):
            ingresses = config.inputs["config"]["ingresses"]
            assert ingresses[-1] == {"service": "http_status:404"}, (steps, config.name)
            assert all("hostname" in rule for rule in ingresses[:-1])


def test_applied_record_depends_on_everything(evaluations):
    for steps, ev in evaluations:
        record = ev.named("applied-record")
        custom = {r.urn for r in ev.resources if r.custom and r.name != "applied-record"}
        assert custom <= set(record.dependencies), steps


# --------------------------------------------------------------------------- generated scripts
def _scripts(ev):
    for r in ev.by_type(REMOTE) + ev.by_type(LOCAL):
        for key in ("create", "update", "delete"):
            text = r.inputs.get(key)
            if text:
                yield r.name, key, text


@functools.lru_cache(maxsize=None)
def _bash_syntax(text: str) -> str:
    checks = [text]
    if text.startswith("sudo -n bash -c "):
        checks.append(shlex.split(text)[4])  # the script run as root
    for body in checks:
        done = subprocess.run(["bash", "-n"], input=body, text=True, capture_output=True)
        if done.returncode:
            return done.stderr
    return ""


def test_generated_scripts_parse(evaluations):
    problems = []
    for steps, ev in evaluations:
        for name, key, text in _scripts(ev):
            error = _bash_syntax(text)
            if error:
                problems.append(f"{name}.{key}: {error}")
    assert not problems, "\n".join(sorted(set(problems)))


# --------------------------------------------------------------------------- Kubernetes schema
def test_kubernetes_objects_validate_against_the_schema(evaluations):
    seen = {}
    for steps, ev in evaluations:
        for r in ev.resources:
            if r.type in K8S_TYPES:
                seen.setdefault(json.dumps(manifest(r), sort_keys=True), (r.name, steps))
    kinds = set()
    for text, (name, steps) in seen.items():
        obj = json.loads(text)
        kinds.add(obj["kind"])
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} at {steps}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert kinds == {"Deployment", "PodDisruptionBudget", "Job", "ConfigMap", "Service", "Secret"}


def test_schema_validation_catches_a_broken_object(program):
    """The schema check is real: a misspelt field in strict mode fails."""
    ev = program.evaluate()
    obj = manifest(ev.named("app-api"))
    obj["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
