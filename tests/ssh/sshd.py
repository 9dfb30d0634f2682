"""A throwaway OpenSSH server on 127.0.0.1 for the data-plane tests (Debian's ``/usr/sbin/sshd``).

Key-only: a fresh host key and client key per session, ``PasswordAuthentication no``,
``KbdInteractiveAuthentication no``, ``UsePAM no``, bound to 127.0.0.1 on a free port. It runs as a
plain foreground process (``-D -e``) that the fixture stops, even when a test fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testsupport.localcluster import free_port, stop_process

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class LocalSshd:
    workdir: Path
    port: int
    client_key: Path
    process: subprocess.Popen | None = None

    def run(self, command: str, stdin: str = "", timeout: float = 120.0) -> RunResult:
        """Run ``command`` on the "server" as ``remote.Command`` does: one command string, given stdin."""
        argv = ["ssh", "-i", str(self.client_key), "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", f"UserKnownHostsFile={self.workdir / 'known_hosts'}", "-o", "LogLevel=ERROR",
                "-F", "/dev/null", "root@127.0.0.1", command]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bazbii-test", "-f", str(path)],
                   check=True, capture_output=True)


def start_sshd(workdir: Path, timeout: float = 20.0, tcp_forwarding: bool = False) -> LocalSshd:
    """``tcp_forwarding``: allowed by the server (off by default, as a hardened server has it), so that a test
    can show what a key's own ``restrict`` takes away."""
    if not Path(SSHD).is_file() or shutil.which("ssh") is None:
        raise RuntimeError(f"{SSHD} or the ssh client is missing (apt-get install openssh-server openssh-client)")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "host_key", workdir / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = workdir / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",  # the throwaway key files live under the test's temporary directory
        "X11Forwarding no",
        f"AllowTcpForwarding {'yes' if tcp_forwarding else 'no'}",
        "",
    ]))
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"sshd rejected its test config: {check.stderr.strip()}")
    server = LocalSshd(workdir=workdir, port=port, client_key=client_key)
    with open(workdir / "sshd.log", "w") as log:  # the child keeps its own copy of the descriptor
        server.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log,
                                          stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(workdir / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout:g} s")
            time.sleep(0.05)
    probe = server.run("true", timeout=30)
    if probe.returncode != 0:
        server.stop()
        raise RuntimeError(f"ssh to the test sshd failed: {probe.stderr.strip()}")
    return server

