"""The live gate reads Prometheus over SSH (``bazbii:metrics.ssh``): a real Prometheus through a real sshd.

The transition check's provider is configured as the engine configures it (the stack's config, the key
``bazbii:sshPrivateKey`` decrypted), then its ``check()`` runs on the inputs the real program registers
(SDK mocks) for traffic-10 -> traffic-50. Each request runs ``curl`` on the SSH "host" (Debian's sshd on
127.0.0.1, key-only, TCP forwarding off), so the sshd's own log counts the sessions. A runner that
cannot reach Prometheus at all is tested on the twin (tests/engine/test_operate.py), where Prometheus
listens inside a server's network namespace.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from pulumi.dynamic import Config, ConfigureRequest

from bazbii_analysis import MetricsUnreachable
from bazbii_analysis.reach import metrics_client
from bazbii_plan.gates import MetricsConfig
from offline_preview.__main__ import main as preview_main
from tests.analysis.conftest import run_phase, write_stack_file
from testsupport.metrics_stack import start_metrics_stack

GATE = {"soak": "3s", "window": "1h", "scope": {"kind": "pool", "name": "server2"}, "minSamples": 50}


@pytest.fixture(scope="module")
def metrics_stack():
    stack = start_metrics_stack()
    yield stack
    stack.stop()


def _sessions(sshd) -> int:
    return (sshd.workdir / "sshd.log").read_text().count("Accepted publickey")


def _stack_file(tmp_path: Path, endpoint: str, ssh: dict) -> Path:
    path = write_stack_file(tmp_path, phase="traffic-10", endpoint=endpoint, criteria={"traffic-50": GATE})
    document = yaml.safe_load(path.read_text())
    document["config"]["bazbii:metrics"]["ssh"] = ssh
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _check(stack_path: Path, phase, ssh_key):
    """The check resource's provider as the engine runs it: configured with the stack config, then check()."""
    from components.transition_check import TransitionCheckProvider
    from offline_preview import scenarios

    side = scenarios.load_side(stack_path)
    transition = scenarios.to_step(side, "traffic-50", phase.started.replace(microsecond=0).isoformat())
    evaluation, _failures = scenarios._evaluate(transition.after, transition.previous_record)
    (check,) = [r for r in evaluation.resources if r.name == "transition-check"]
    provider = TransitionCheckProvider()
    config = {"bazbii:sshPrivateKey": ssh_key} if ssh_key is not None else {}
    provider.configure(ConfigureRequest(Config(raw_config=config, project_name="bazbii")))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = provider.check({}, json.loads(json.dumps(check.inputs)))
    return [f.reason for f in result.failures], printed.getvalue()


def _root_route(sshd) -> dict:
    return {"host": "127.0.0.1", "port": sshd.port, "user": "root"}


def test_the_check_measures_the_gate_over_ssh_and_prints_its_numbers(metrics_stack, sshd, tmp_path):
    key = sshd.client_key.read_text()
    path = _stack_file(tmp_path, metrics_stack.prometheus_url, _root_route(sshd))
    healthy = run_phase(metrics_stack, error_percent=0)
    before = _sessions(sshd)
    failures, printed = _check(path, healthy, key)
    print(printed)
    assert failures == []
    assert "live gate of infra step 'traffic-50' PASSED" in printed
    assert re.search(r"PASS +error-ratio \[pool server2\]: 0\.00 % \(threshold <= 1\.00 %\) over \d+s, \d+ requests",
                     printed), printed
    assert _sessions(sshd) - before >= 3  # the request count, the error ratio and the p95, each a session

    broken = run_phase(metrics_stack, error_percent=3)
    failures, printed = _check(path, broken, key)
    assert len(failures) == 1, failures
    assert re.search(r"FAIL +error-ratio \[pool server2\]: [2-5]\.\d\d % \(threshold <= 1\.00 %\)", failures[0])
    assert "live gate of infra step 'traffic-50' FAILED" in printed and "PASS         p95-latency" in printed
    assert key.strip().splitlines()[1] not in printed + "".join(failures)  # the key is never shown


@pytest.mark.parametrize("case", ["no key", "wrong key", "wrong host key", "prometheus down"])
def test_every_way_the_ssh_route_fails_is_inconclusive_and_denies(metrics_stack, sshd, tmp_path, case):
    key = sshd.client_key.read_text()
    endpoint, ssh = metrics_stack.prometheus_url, _root_route(sshd)
    if case == "wrong key":
        other = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        key = other.read_text()
    elif case == "no key":
        key = None
    elif case == "wrong host key":
        ssh["hostKey"] = Path(f"{sshd.client_key}.pub").read_text().strip()  # a key, but not the host's
    elif case == "prometheus down":
        endpoint = "http://127.0.0.1:9"
    path = _stack_file(tmp_path, endpoint, ssh)
    phase = run_phase(metrics_stack, error_percent=0, seconds=1)
    failures, printed = _check(path, phase, key)
    expected = {"no key": "no SSH private key was given (bazbii:sshPrivateKey; offline and watch: --ssh-key FILE)",
                "wrong key": "ssh: root@127.0.0.1: Permission denied (publickey)",
                "wrong host key": "Host key verification failed",
                "prometheus down": "curl on the SSH host: curl: (7) Failed to connect to 127.0.0.1 port 9"}[case]
    assert failures and all("INCONCLUSIVE" in f for f in failures), failures
    assert expected in failures[0], failures[0]
    assert "INCONCLUSIVE (fails closed)" in printed


def test_a_pinned_host_key_is_checked(metrics_stack, sshd, tmp_path):
    host_key = (sshd.workdir / "host_key.pub").read_text().strip()
    metrics = MetricsConfig.model_validate({"endpoint": metrics_stack.prometheus_url,
                                            "ssh": {**_root_route(sshd), "hostKey": host_key}})
    with metrics_client(metrics, {}, sshd.client_key.read_text()) as client:
        assert client.scalar("count(up == 1)") == 2
        assert client.where.endswith(f"over ssh root@127.0.0.1:{sshd.port}")
    wrong = Path(f"{sshd.client_key}.pub").read_text().strip()
    metrics = metrics.model_copy(update={"ssh": metrics.ssh.model_copy(update={"host_key": wrong})})
    with metrics_client(metrics, {}, sshd.client_key.read_text()) as client:
        with pytest.raises(MetricsUnreachable, match="Host key verification failed"):
            client.query("up")


def test_a_server_of_the_plan_is_the_route(metrics_stack, sshd):
    """``ssh: {server: NAME}`` takes the address, sshPort and sshUser of bazbii:servers.NAME."""
    metrics = MetricsConfig.model_validate({"endpoint": metrics_stack.prometheus_url, "ssh": {"server": "server2"}})
    servers = {"server2": {"address": "127.0.0.1", "sshPort": sshd.port, "sshUser": "root"}}
    before = _sessions(sshd)
    with metrics_client(metrics, servers, sshd.client_key.read_text()) as client:
        assert client.scalar("count(up == 1)") == 2
    assert _sessions(sshd) == before + 1


def test_a_server_the_state_does_not_have_is_refused_or_inconclusive(metrics_stack, sshd, tmp_path, capsys):
    path = _stack_file(tmp_path, metrics_stack.prometheus_url, {"server": "server9"})
    assert preview_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bazbii:metrics.ssh.server: unknown server 'server9'; bazbii:servers has ['server1', 'server2', 'server3']" in err
    # An applied record whose state lost the server: every request fails with the reason (fail closed).
    metrics = MetricsConfig.model_validate({"endpoint": metrics_stack.prometheus_url, "ssh": {"server": "server9"}})
    with metrics_client(metrics, {"server2": {"address": "127.0.0.1"}}, sshd.client_key.read_text()) as client:
        with pytest.raises(MetricsUnreachable, match="'server9' is not a server of bazbii:servers"):
            client.query("up")


def test_preview_metrics_config_reads_over_ssh_with_a_key_file(metrics_stack, sshd, tmp_path, capsys):
    path = _stack_file(tmp_path, metrics_stack.prometheus_url, _root_route(sshd))
    phase = run_phase(metrics_stack, error_percent=3)
    age = f"{int((datetime.now(timezone.utc) - phase.started).total_seconds())}s"
    rc = preview_main(["--config", str(path), "--phase", "traffic-50", "--base-age", age, "--metrics", "config",
                       "--ssh-key", str(sshd.client_key)])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert re.search(r"FAIL +error-ratio \[pool server2\]: [2-5]\.\d\d %", out), out
    rc = preview_main(["--config", str(path), "--phase", "traffic-50", "--metrics", "config",
                       "--ssh-key", str(tmp_path / "missing")])
    assert rc == 2 and "--ssh-key " in capsys.readouterr().err
