"""A twin server: a VPS of the plan as a network and mount namespace of this machine, reached over SSH.

The server's sshd is the first process of its own mount namespace (:mod:`twin.serverinit` prepares the
filesystem, then becomes sshd on ``0.0.0.0:22`` of the server's network namespace), so every command the
program runs over SSH, and every daemon it starts (PostgreSQL, PgBouncer, the gateway), sees that
server's files and network only. Login is ``deploy`` with the operator's key, as in production.

The **console** stands for KonohaVPS's web console: what the server's hardware is (:class:`Spec`).
:meth:`TwinServer.resize` is the console action the plan's ``server1-resized`` step asks the operator to
do; the server's ``nproc``, ``lsblk`` and ``/proc/meminfo`` report the new spec at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from .lab import EDGE, Lab, LabError, wait_for_port
from .serverinit import SESSION_PROGRAM, SESSIONS_LOG

REPO_ROOT = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
DEPLOY_USER = "deploy"
KIB_PER_GB = 1024 * 1024  # /proc/meminfo counts kB (KiB); a "GB" of a VPS plan is a GiB here
KERNEL_RESERVED = 0.03  # MemTotal is a little under the plan's memory, as on a real machine


@dataclass
class Spec:
    """What the VPS console says the machine is."""

    vcpu: int
    memory_gb: int
    disk_gb: int
    os: str = "ubuntu-22.04"

    def console_json(self) -> dict:
        return {"vcpu": self.vcpu, "memoryGb": self.memory_gb, "diskGb": self.disk_gb, "os": self.os}

    def meminfo(self) -> str:
        total = int(self.memory_gb * KIB_PER_GB * (1 - KERNEL_RESERVED))
        return (f"MemTotal:       {total:>10} kB\nMemFree:        {total // 2:>10} kB\n"
                f"MemAvailable:   {total * 3 // 4:>10} kB\n")


def keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str


class TwinServer:
    def __init__(self, lab: Lab, name: str, spec: Spec, root: Path, operator_key: Path,
                 wheelhouse: Optional[Path] = None, edge_info: Optional[dict] = None,
                 extra_visible: Sequence[Path] = ()):
        self.lab, self.name, self.spec, self.root = lab, name, spec, root
        self.operator_key = operator_key
        self.extra_visible = list(extra_visible)  # host paths the twin's own processes in the server use
        self.wheelhouse = wheelhouse
        self.edge_info = dict(edge_info or {})
        self.process: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return self.lab.address(self.name)

    # ------------------------------------------------------------------ console
    def _write_console(self) -> None:
        console = self.root / "console"
        console.mkdir(parents=True, exist_ok=True)
        (console / "console.json").write_text(json.dumps(self.spec.console_json(), indent=2))
        (console / "edge.json").write_text(json.dumps({**self.edge_info, "serverAddress": self.address,
                                                       "server": self.name}, indent=2))
        meminfo = console / "meminfo"
        if meminfo.exists():  # bind-mounted by inode: rewrite in place
            with open(meminfo, "r+") as handle:
                handle.truncate(0)
                handle.write(self.spec.meminfo())
        else:
            meminfo.write_text(self.spec.meminfo())

    def resize(self, *, vcpu: Optional[int] = None, memory_gb: Optional[int] = None,
               disk_gb: Optional[int] = None) -> None:
        """The console action: the machine has the new spec from now on."""
        self.spec = Spec(vcpu or self.spec.vcpu, memory_gb or self.spec.memory_gb, disk_gb or self.spec.disk_gb,
                         self.spec.os)
        self._write_console()

    def set_edge(self, **info: str) -> None:
        """Tell the server where an edge service is (e.g. the Cloudflare emulator, for cloudflared)."""
        self.edge_info.update(info)
        self._write_console()

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout: float = 30.0) -> None:
        sshd_dir = self.root / "sshd"
        sshd_dir.mkdir(parents=True, exist_ok=True)
        host_key = sshd_dir / "host_key"
        if not host_key.exists():
            keygen(host_key, f"bazbii-twin-{self.name}")
        config = sshd_dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {SSH_PORT}",
            "ListenAddress 0.0.0.0",
            f"HostKey {host_key}",
            "PidFile /run/sshd.pid",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "StrictModes no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "MaxStartups 64:30:128",  # an update opens many sessions at once
            "MaxSessions 64",
            f"ForceCommand {SESSION_PROGRAM}",  # logs each session, then runs its command as sshd would
            "ExposeAuthInfo yes",  # which key logged in: the session program honours that key's own command=
            # Ubuntu's sshd sets the locale from /etc/default/locale through PAM, which the twin's sshd runs
            # without: the same C.UTF-8 (initdb then picks UTF8, as on the VPSs).
            "SetEnv LANG=C.UTF-8",
            "",
        ]))
        self._write_console()
        init = self.root / "init.json"
        init.write_text(json.dumps({
            "root": str(self.root),
            "authorizedKeys": Path(f"{self.operator_key}.pub").read_text(),
            "wheelhouse": str(self.wheelhouse) if self.wheelhouse else "",
            "keepVisible": [str(REPO_ROOT), str(self.root), *([str(self.wheelhouse)] if self.wheelhouse else []),
                            *map(str, self.extra_visible)],
            "sshd": {"binary": SSHD, "config": str(config)},
        }))
        log = open(self.root / "server.log", "ab")
        self.process = self.lab.popen(
            self.name,
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, "-m", "twin.serverinit", str(init)],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                      "PYTHONPATH": str(REPO_ROOT)},
        )
        log.close()
        try:
            wait_for_port(self.lab, EDGE, self.address, SSH_PORT, timeout, self.process, f"{self.name}'s sshd")
        except LabError as exc:
            tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise LabError(f"{exc}\n{tail}") from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    # ------------------------------------------------------------------ getting in
    def ssh_argv(self, command: str, user: str = DEPLOY_USER) -> list[str]:
        return self.lab.edge_command([
            "ssh", "-i", str(self.operator_key), "-p", str(SSH_PORT), "-F", "/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{user}@{self.address}", command])

    def ssh(self, command: str, stdin: str = "", timeout: float = 120.0) -> RunResult:
        """Run ``command`` over SSH as the operator does (as ``deploy``)."""
        done = subprocess.run(self.ssh_argv(command), input=stdin, capture_output=True, text=True, timeout=timeout)
        return RunResult(done.returncode, done.stdout, done.stderr)

    def exec(self, argv: Sequence[str], timeout: float = 120.0, input: Optional[str] = None) -> RunResult:
        """Run ``argv`` inside the server as root without SSH (the twin's own look inside, never the program's)."""
        if self.process is None:
            raise LabError(f"{self.name} is not running")
        done = subprocess.run(["nsenter", f"--target={self.process.pid}", "--net", "--mount", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              env={"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                   "PYTHONPATH": str(REPO_ROOT)})
        return RunResult(done.returncode, done.stdout, done.stderr)

    def popen_inside(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """A long-running twin process inside the server (e.g. its Kubernetes node agent), as root."""
        if self.process is None:
            raise LabError(f"{self.name} is not running")
        kwargs.setdefault("cwd", REPO_ROOT)
        # The twin's own modules by path: a test process may have them on sys.path only, not in PYTHONPATH.
        kwargs.setdefault("env", {**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        return subprocess.Popen(["nsenter", f"--target={self.process.pid}", "--net", "--mount", "--", *argv], **kwargs)

    def sessions(self) -> list[str]:
        """Every SSH session this server ran, one line each: time, user, the start of its command."""
        return self.read_file(SESSIONS_LOG).splitlines()

    def read_file(self, path: str) -> str:
        done = self.exec(["cat", path])
        if done.returncode != 0:
            raise FileNotFoundError(f"{self.name}:{path}: {done.stderr.strip()}")
        return done.stdout

    def written_files(self) -> set[str]:
        """The server's paths whose content is its own rather than this machine's: every file (not directory)
        in its overlays' upper layers, named as the server sees it (``/etc/pip.conf``)."""
        from twin.serverinit import OVERLAID

        written = set()
        for target in OVERLAID:
            upper = self.root / "overlay" / target.strip("/").replace("/", "-") / "upper"
            written |= {f"{target}/{p.relative_to(upper)}" for p in upper.rglob("*") if not p.is_dir()}
        return written

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "spec": asdict(self.spec)}


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
