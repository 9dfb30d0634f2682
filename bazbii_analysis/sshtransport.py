"""Read a Prometheus HTTP API over SSH: each request runs ``curl`` on a host inside the network.

The live gate (inside the transition check, at ``pulumi preview`` and ``pulumi up``) and ``watch`` run
where the internal network cannot be seen: a GitHub-hosted runner. Like the data plane, which drives the
databases with commands run on the servers, they reach the metrics over SSH with the one key the stack
already holds (``bazbii:sshPrivateKey``), so no metrics port is opened to any runner and no new
credential exists. Nothing is forwarded (a server may refuse TCP forwarding): the request's body goes to
``curl``'s stdin on the SSH host, the answer comes back on stdout, its status code on the last line.

:class:`SshTransport` is an ``httpx`` transport, so :class:`~bazbii_analysis.prometheus.PrometheusClient`
is the same client either way. Every failure (SSH refused, curl missing, the API down) is an
``httpx`` transport error with a one-line message, which the client turns into ``MetricsUnreachable``:
inconclusive, so the gate fails closed. The key lives in a file of a private temporary directory (0600)
only while the transport is open, and no message ever contains it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import httpx

from bazbii_plan.gates import SshRoute

SSH = "ssh"
HOST_KEY_ALIAS = "bazbii-metrics"  # the name the pinned host key is filed under, whatever the address
STATUS_MARK = b"\n"  # curl writes the status code after the body, on a line of its own
# curl's exit codes that mean "the API cannot be reached from the SSH host" (resolve, connect, timeout).
CURL_TIMEOUT, CURL_NOT_FOUND = 28, 127
SSH_FAILED = 255  # ssh's own failures (refused, authentication, host key); any other status is the command's


def curl_command(request: httpx.Request, timeout: float) -> str:
    """The command the SSH host runs for ``request``: its body on stdin, the body then the status on stdout.

    The metrics reader key's forced command (:mod:`bazbii_analysis.metrics_reader`, which the server runs
    without this package) accepts exactly this shape; tests/analysis/test_metrics_reader.py holds them together."""
    argv = ["curl", "--silent", "--show-error", "--max-time", f"{timeout:g}", "--request", request.method,
            "--output", "-", "--write-out", "\\n%{http_code}"]
    if request.content:
        argv += ["--header", f"Content-Type: {request.headers.get('content-type', 'application/octet-stream')}",
                 "--data-binary", "@-"]
    return " ".join(shlex.quote(part) for part in [*argv, str(request.url)])


def _last_line(text: bytes) -> str:
    lines = [line.strip() for line in text.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class SshTransport(httpx.BaseTransport):
    """Send each request through ``ssh route curl ...``; ``problem``: why no route can be used (every request fails)."""

    def __init__(self, route: Optional[SshRoute], private_key: Optional[str], timeout: float, *, problem: str = ""):
        self.route = route
        self.timeout = timeout
        self._key = private_key
        self._problem = problem or ("" if private_key else
                                    "no SSH private key was given (bazbii:sshPrivateKey; offline and watch: "
                                    "--ssh-key FILE) to read the metrics over SSH")
        self._dir: Optional[Path] = None

    # ------------------------------------------------------------------ the key and known host, while open
    def _files(self, route: SshRoute, private_key: str) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="bazbii-metrics-ssh-"))  # 0700
            key = self._dir / "key"
            key.touch(mode=0o600)
            text = private_key.strip() + "\n"  # OpenSSH refuses a key file without its final line break
            key.write_text(text)
            if route.host_key:
                (self._dir / "known_hosts").write_text(f"{HOST_KEY_ALIAS} {route.host_key.strip()}\n")
        return self._dir

    def ssh_argv(self, route: SshRoute, private_key: str, command: str) -> list[str]:
        files = self._files(route, private_key)
        if route.host_key:
            checking = ["-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={HOST_KEY_ALIAS}",
                        "-o", f"UserKnownHostsFile={files / 'known_hosts'}"]
        else:
            checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        return [SSH, "-F", "/dev/null", "-i", str(files / "key"), "-p", str(route.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", f"ConnectTimeout={max(1, int(self.timeout))}",
                "-o", "LogLevel=ERROR", *checking, f"{route.user}@{route.host}", command]

    # ------------------------------------------------------------------ httpx
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route, private_key = self.route, self._key
        if self._problem or route is None or not private_key:  # without a key, _problem says so
            raise httpx.ConnectError(self._problem or "no SSH route", request=request)
        if shutil.which(SSH) is None:
            raise httpx.ConnectError("the ssh client is not installed here (openssh-client)", request=request)
        body = request.read()
        try:
            done = subprocess.run(self.ssh_argv(route, private_key, curl_command(request, self.timeout)), input=body,
                                  capture_output=True, timeout=2 * self.timeout + 10)
        except subprocess.TimeoutExpired:
            raise httpx.ReadTimeout(f"ssh: no answer within {2 * self.timeout + 10:g}s", request=request) from None
        # The client names the route in its message; these say which side failed.
        if done.returncode == SSH_FAILED:
            raise httpx.ConnectError(f"ssh: {_last_line(done.stderr)}", request=request)
        if done.returncode == CURL_NOT_FOUND:
            raise httpx.ConnectError("curl is not installed on the SSH host", request=request)
        if done.returncode == CURL_TIMEOUT:
            raise httpx.ReadTimeout(f"curl on the SSH host: {_last_line(done.stderr)}", request=request)
        if done.returncode != 0:
            raise httpx.ConnectError(f"curl on the SSH host: {_last_line(done.stderr)}", request=request)
        content, _, status = done.stdout.rpartition(STATUS_MARK)
        try:
            code = int(status.decode().strip())
        except ValueError:
            raise httpx.RemoteProtocolError("curl on the SSH host gave no status code", request=request) from None
        if code == 0:  # curl wrote 000: no HTTP answer at all
            raise httpx.ConnectError(f"curl on the SSH host: {_last_line(done.stderr)}", request=request)
        return httpx.Response(code, content=content, request=request)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
