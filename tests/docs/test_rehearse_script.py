"""``./rehearse`` installs what the rehearsal runs before it runs it: the API pods, the workers and the load
start from the repository's venv, so a fresh clone's bootstrap must bring uvicorn, starlette, aiohttp, uvloop
and dnspython (requirements-dev.txt: ``--dev``). A fresh clone's first ``./rehearse`` once stopped with every
API pod crash-looping on "No module named uvicorn" while the MVP's ``pulumi up`` waited for them."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("uvicorn", "starlette", "aiohttp", "uvloop", "dnspython")  # what the pods and the load import


def bootstrap_flags(tmp_path: Path, *argv: str) -> list[str]:
    """The flags ``./rehearse argv`` gives scripts/bootstrap.sh (both stubbed: nothing is installed or run)."""
    shutil.copy(ROOT / "rehearse", tmp_path / "rehearse")
    for stub, body in (("scripts/bootstrap.sh", f'echo "$@" > {tmp_path}/flags'), ("venv/bin/python", "exit 0")):
        path = tmp_path / stub
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    subprocess.run([str(tmp_path / "rehearse"), *argv], check=True, env=dict(os.environ), capture_output=True)
    return (tmp_path / "flags").read_text().split()


@pytest.mark.parametrize("argv", [[], ["--until", "traffic-10"], ["--help"]])
def test_every_walk_bootstraps_the_packages_its_processes_run(tmp_path, argv):
    flags = bootstrap_flags(tmp_path, *argv)
    assert "--dev" in flags and "--with-db" in flags
    assert ("--with-engine" in flags) == (argv in ([], ["--until", "traffic-10"]))  # pulumi up: the engine build
    pinned = {re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower()
              for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if line and line[0].isalpha()}
    assert set(RUNTIME) <= pinned
