"""The pack itself: importable without starting gRPC, served by __main__.py, and the offline runner agrees with it."""

import json
import os
import subprocess
import sys

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel

from offline_preview.harness import REPO_ROOT
from policies.offline import PolicyConfigError, resolve_config, run_policies
from policies.pack import PACK_NAME, POLICIES, SCHEMAS

from .helpers import GATE_TYPE, Stack, preview

PROD = Stack.prod()
PYTHON = sys.executable


def test_importing_the_pack_and_the_rules_does_not_start_grpc():
    code = (
        "import threading, pulumi_policy.policy as p\n"
        "p.PolicyPack.__init__ = lambda *a, **k: (_ for _ in ()).throw(SystemExit('PolicyPack built on import'))\n"
        "import policies, policies.pack, policies.offline\n"
        "import policies.rules.plan, policies.rules.traffic, policies.rules.dns\n"
        "import policies.rules.database, policies.rules.schema, policies.rules.kubernetes\n"
        "print(len(policies.pack.POLICIES), threading.active_count())\n"
    )
    done = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    count, threads = done.stdout.split()
    assert int(count) == len(POLICIES) and int(threads) == 1


def test_policies_are_mandatory_by_default_and_named_uniquely():
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names))
    advisory = {p.name for p in POLICIES if p.enforcement_level != EnforcementLevel.MANDATORY}
    assert advisory == {"schema-ddl-lint"}
    for key, schema in SCHEMAS.items():
        assert "default" in schema, key


# --------------------------------------------------------------------------- policy config
def test_config_ints_arrive_as_floats_with_schema_defaults():
    resolved = resolve_config({"dns-lower-ttl-before-switch": {"maxTtlForSwitch": 120}})
    level, config = resolved["dns-lower-ttl-before-switch"]
    assert level == EnforcementLevel.MANDATORY
    assert config == {"maxTtlForSwitch": 120.0, "assumedOldTtlSeconds": 86400.0}
    assert isinstance(config["maxTtlForSwitch"], float)


@pytest.mark.parametrize("config, error", [
    ({"no-such-policy": "advisory"}, "unknown policies"),
    ({"traffic-weight-ladder": {"trafficLadda": [0, 100]}}, "unknown config properties ['trafficLadda']"),
    ({"traffic-weight-ladder": {"trafficLadder": [0, 150]}}, "150 is greater than the maximum of 100"),
    ({"dns-lower-ttl-before-switch": {"maxTtlForSwitch": "300"}}, "is not of type 'integer'"),
    ({"all": "sometimes"}, "enforcement level must be one of"),
])
def test_bad_policy_config_is_rejected(config, error):
    with pytest.raises(PolicyConfigError, match=None) as info:
        resolve_config(config)
    assert error in str(info.value)


def test_enforcement_levels_can_be_overridden():
    target, applied = PROD.at(infra="traffic-100"), PROD
    result = preview(target, applied, policy_config={"all": "advisory"})
    assert result.violations and not result.mandatory
    result = preview(target, applied, policy_config={"plan-one-step-at-a-time": "disabled"})
    assert "plan-one-step-at-a-time" not in result.names(mandatory=False)
    assert "traffic-weight-ladder" in result.names()


# --------------------------------------------------------------------------- unknowns
def test_an_unknown_value_downgrades_a_policy_to_advisory():
    # Why gate values must be known at preview: the SDK can only warn about a policy it cannot run.
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # what the engine sends for an unknown string

    def make_unknown(resources):
        for r in resources:
            if r.type == GATE_TYPE:
                r.inputs["target"] = unknown

    result = preview(PROD.at(infra="traffic-100"), PROD, mutate=make_unknown)
    assert not result.mandatory
    assert any("during preview" in v.message and v.policy_name == "plan-one-step-at-a-time" for v in result.violations)


def test_the_real_gate_carries_no_unknowns():
    result = preview(PROD.at(infra="traffic-50"), PROD)
    assert "04da6b54-80e4-46f7-96ec-b56ff0331ba9" not in json.dumps(result.gate().inputs)


# --------------------------------------------------------------------------- the served pack
@pytest.fixture(scope="module")
def analyzer():
    """policies/__main__.py run as the CLI runs it (in the pack's directory); yields a gRPC stub."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen([PYTHON, "-u", "__main__.py"], cwd=REPO_ROOT / "policies", env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.isdigit(), (line, process.stderr.read() if process.poll() is not None else "")
        channel = grpc.insecure_channel(f"127.0.0.1:{line}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_main_serves_the_pack(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == PACK_NAME
    served = {p.name: p for p in info.policies}
    assert set(served) == {p.name for p in POLICIES}
    assert served["plan-one-step-at-a-time"].enforcementLevel == proto.MANDATORY
    assert served["schema-ddl-lint"].enforcementLevel == proto.ADVISORY
    ladder = json_format.MessageToDict(served["traffic-weight-ladder"].configSchema.properties)
    assert ladder["trafficLadder"]["default"] == [0, 10, 50, 100]


def _struct(value):
    struct = struct_pb2.Struct()
    json_format.ParseDict(value, struct)
    return struct


def _served_violations(analyzer, resources, config):
    request = proto.ConfigureAnalyzerRequest()
    for name, (level, properties) in resolve_config(config).items():
        request.policyConfig[name].CopyFrom(proto.PolicyConfig(
            enforcementLevel={"advisory": proto.ADVISORY, "mandatory": proto.MANDATORY,
                              "disabled": proto.DISABLED, "remediate": proto.REMEDIATE}[level.value],
            properties=_struct(properties)))
    analyzer.Configure(request)
    out = set()
    for r in resources:
        response = analyzer.Analyze(proto.AnalyzeRequest(type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name))
        out |= {(d.policyName, d.message.split("\n", 1)[1], d.enforcementLevel == proto.MANDATORY) for d in response.diagnostics}
    stack = proto.AnalyzeStackRequest(resources=[
        proto.AnalyzerResource(type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name, parent=r.parent)
        for r in resources])
    response = analyzer.AnalyzeStack(stack)
    out |= {(d.policyName, d.message.split("\n", 1)[1], d.enforcementLevel == proto.MANDATORY) for d in response.diagnostics}
    return out


@pytest.mark.parametrize("case", ["skip", "ladder-config", "dns-too-early", "passes"])
def test_offline_runner_reports_what_the_served_pack_reports(analyzer, case):
    from .helpers import ago

    config = None
    if case == "skip":
        target, previous, kw = PROD.at(infra="traffic-100"), PROD, {}
    elif case == "ladder-config":
        target, previous, kw = PROD.at(infra="traffic-50"), PROD, {}
        config = {"traffic-weight-ladder": {"trafficLadder": [0, 10, 25, 50, 100]}, "schema-ddl-lint": "disabled"}
    elif case == "dns-too-early":
        target, previous, kw = PROD.at(dns="switched"), PROD, {"applied_at": ago(minutes=10)}
    else:
        target, previous, kw = PROD.at(infra="traffic-50"), PROD, {}
    result = preview(target, previous, policy_config=config, **kw)
    resources = result.evaluation.resources
    for r in resources:
        r.inputs.pop("__provider", None)  # a secret pickle; irrelevant to the rules
    offline = {(v.policy_name, v.message, v.mandatory) for v in run_policies(resources, config)}
    assert offline == _served_violations(analyzer, resources, config)
    assert bool(offline) == (case != "passes")
