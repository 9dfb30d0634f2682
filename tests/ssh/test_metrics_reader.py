"""The pull-request previews' key reads the metrics and nothing else: a real sshd, a real Prometheus.

The reader is installed the way the program installs it (``MetricsReaderAccess``: the install command run
over SSH with the stack's key, the script on stdin), into this sshd's ``AuthorizedKeysFile``. The sshd
allows TCP forwarding, so what takes it away from the reader is the reader's own ``restrict``; the stack's
key, on the same server, still forwards (the test would see a missing ``restrict``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from bazbii_analysis import MetricsUnreachable
from bazbii_analysis.metrics_reader import MARKER, install_command, remove_command, script_text
from bazbii_analysis.reach import metrics_client
from bazbii_plan.gates import MetricsConfig
from testsupport.localcluster import free_port
from testsupport.metrics_stack import start_metrics_stack

from .sshd import start_sshd


@pytest.fixture(scope="module")
def open_sshd():
    workdir = Path(tempfile.mkdtemp(prefix="bazbii-reader-sshd-"))
    server = None
    try:
        server = start_sshd(workdir, tcp_forwarding=True)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def metrics_stack():
    stack = start_metrics_stack()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def reader(open_sshd, metrics_stack):
    """The reader's key pair, installed for ``metrics_stack``'s Prometheus; its install's result."""
    key = open_sshd.workdir / "reader_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@laptop", "-f", str(key)],
                   check=True, capture_output=True)
    done = _install(open_sshd, Path(f"{key}.pub").read_text(), metrics_stack.prometheus_url)
    assert done.returncode == 0, done.stderr
    return key


def _paths(sshd) -> dict:
    return {"directory": str(sshd.workdir / "home-bazbii"), "authorized_keys": str(sshd.workdir / "authorized_keys")}


def _install(sshd, public_key: str, endpoint: str):
    return sshd.run(install_command(public_key, endpoint, **_paths(sshd)), stdin=script_text())


def _ssh_argv(sshd, key: Path, *args: str) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(sshd.port), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", *args]


def _ssh(sshd, key: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(_ssh_argv(sshd, key, *args), capture_output=True, text=True, timeout=timeout)


def _metrics(sshd, endpoint: str) -> MetricsConfig:
    return MetricsConfig.model_validate({"endpoint": endpoint,
                                         "ssh": {"host": "127.0.0.1", "port": sshd.port, "user": "root"}})


def test_the_reader_key_reads_the_gates_queries(open_sshd, metrics_stack, reader):
    with metrics_client(_metrics(open_sshd, metrics_stack.prometheus_url), {}, reader.read_text()) as client:
        assert client.scalar("count(up == 1)") == 2  # /api/v1/query
        now = time.time()
        assert client.query_range("up", now - 30, now, 5)  # /api/v1/query_range


@pytest.mark.parametrize("command", [
    "id",
    "curl --silent http://127.0.0.1:9/",
    # the client's own shape, but another API path (Prometheus' admin API deletes series)
    "curl --silent --show-error --max-time 5 --request POST --output - --write-out '\\n%{http_code}' --header "
    "'Content-Type: application/x-www-form-urlencoded' --data-binary @- {endpoint}/api/v1/admin/tsdb/delete_series",
    # the right request with a shell command after it: no shell ever sees it
    "curl --silent --show-error --max-time 5 --request POST --output - --write-out '\\n%{http_code}' --header "
    "'Content-Type: application/x-www-form-urlencoded' --data-binary @- {endpoint}/api/v1/query; touch {marker}",
    # the right request writing its answer into a file
    "curl --silent --show-error --max-time 5 --request POST --output {marker} --write-out '\\n%{http_code}' --header "
    "'Content-Type: application/x-www-form-urlencoded' --data-binary @- {endpoint}/api/v1/query",
])
def test_the_reader_key_runs_nothing_else(open_sshd, metrics_stack, reader, command):
    marker = open_sshd.workdir / "touched"
    done = _ssh(open_sshd, reader, "-T", "root@127.0.0.1",
                command.replace("{endpoint}", metrics_stack.prometheus_url).replace("{marker}", str(marker)))
    assert done.returncode == 1 and f"{MARKER}: refused" in done.stderr, done
    assert not marker.exists()


def test_the_reader_key_forwards_nothing_the_stack_key_can(open_sshd, metrics_stack, reader):
    prometheus_port = int(metrics_stack.prometheus_url.rsplit(":", 1)[1])

    def through_a_tunnel(key: Path) -> bool:
        port = free_port()
        tunnel = subprocess.Popen(
            _ssh_argv(open_sshd, key, "-N", "-L", f"{port}:127.0.0.1:{prometheus_port}", "root@127.0.0.1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
                except httpx.HTTPError:
                    time.sleep(0.2)  # the listener is not up yet, or the channel was refused
            return False
        finally:
            tunnel.terminate()
            tunnel.wait(10)

    assert through_a_tunnel(open_sshd.client_key)  # the server forwards: the stack's key gets through
    assert not through_a_tunnel(reader)
    remote = _ssh(open_sshd, reader, "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22", "root@127.0.0.1")
    assert remote.returncode != 0


def test_installing_again_keeps_one_reader_line_and_every_other_line_and_removal_takes_it_out(
        open_sshd, metrics_stack, reader):
    keys = Path(_paths(open_sshd)["authorized_keys"])
    stack_key_line = Path(f"{open_sshd.client_key}.pub").read_text().strip()
    other = open_sshd.workdir / "other_reader"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, capture_output=True)
    try:
        assert _install(open_sshd, Path(f"{reader}.pub").read_text(), metrics_stack.prometheus_url).returncode == 0
        lines = keys.read_text().splitlines()
        assert stack_key_line in lines and [line.endswith(MARKER) for line in lines].count(True) == 1
        # a rotated reader key replaces the old one
        assert _install(open_sshd, Path(f"{other}.pub").read_text(), metrics_stack.prometheus_url).returncode == 0
        assert [line.endswith(MARKER) for line in keys.read_text().splitlines()].count(True) == 1
        metrics = _metrics(open_sshd, metrics_stack.prometheus_url)
        with metrics_client(metrics, {}, reader.read_text()) as client:
            with pytest.raises(MetricsUnreachable, match="Permission denied"):
                client.query("up")
        with metrics_client(metrics, {}, other.read_text()) as client:
            assert client.scalar("count(up == 1)") == 2

        done = open_sshd.run(remove_command(**_paths(open_sshd)))
        assert done.returncode == 0, done.stderr
        assert keys.read_text().splitlines() == [stack_key_line]
        assert not (Path(_paths(open_sshd)["directory"]) / "metrics-reader.py").exists()
    finally:  # the module's other tests keep their reader
        _install(open_sshd, Path(f"{reader}.pub").read_text(), metrics_stack.prometheus_url)
