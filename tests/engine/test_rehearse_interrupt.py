"""Ctrl-C during ``./rehearse`` stops every process it started: the twin's servers, Kubernetes, the
emulator, and the ``pulumi up`` under way; nothing of the twin keeps running or keeps its files open."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import need

REPO = Path(__file__).resolve().parents[2]
TWIN_LINE = re.compile(r"the twin runs in (\S+)")


def holding(path: str) -> list[str]:
    """Processes whose command line, working directory or an open file is under ``path`` (also deleted)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            links = [os.readlink(proc / "cwd")]
            links += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if path in cmdline or any(link.startswith(path) for link in links):
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


@pytest.mark.timeout(600)
def test_ctrl_c_in_the_middle_of_a_walk_stops_every_process_of_the_twin(engine, tmp_path):
    need(engine, "cli", "plugins", "kube", "etcd", "kubernetes", "command", "cloudflare")
    proc = subprocess.Popen([sys.executable, "-m", "rehearsal", "--until", "replica-streaming",
                             "--out", str(tmp_path / "out")], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    workdir = None
    try:
        for line in proc.stdout:  # pytest's timeout bounds a walk that never gets there
            lines.append(line)
            found = TWIN_LINE.search(line)
            workdir = found.group(1) if found else workdir
            if line.startswith("infra: mvp: applied"):  # the walk is in server3-provisioned's pulumi up now
                break
        assert workdir and lines[-1].startswith("infra: mvp: applied"), "".join(lines)
        assert holding(workdir), "the twin's processes were not found while it ran: the check sees nothing"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, "".join(lines) + rest
    assert "interrupted (SIGINT); every started process was stopped" in rest and "Traceback" not in rest, rest
    assert holding(workdir) == []
    assert not Path(workdir).exists()
