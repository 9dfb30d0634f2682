"""The twin servers' Python package mirror: the data-plane requirements as wheels, fetched once from PyPI.

The program's data-plane install runs ``pip install -r requirements.txt`` on each server. Production's
servers reach PyPI; the twin's live in namespaces with no route out, so pip there is pointed (by
``/etc/pip.conf``, :mod:`twin.serverinit`) at this directory, filled on the host from PyPI with the same
pins. One directory per set of pins, in a cache outside the repository, built once and shared by every
twin (a lock keeps two runs from filling it at once; it is filled aside and moved into place whole).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bazbii_db.dataplane import server_requirements

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("BAZBII_TWIN_CACHE", Path(base) / "bazbii-twin"))


def ensure_wheelhouse(requirements_txt: Path = REPO_ROOT / "requirements.txt") -> Path:
    pins = server_requirements(requirements_txt.read_text())
    key = hashlib.sha256(f"{sys.version_info[:2]}\n{pins}".encode()).hexdigest()[:16]
    root = cache_dir()
    target = root / f"wheels-{key}"
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"wheels-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").is_file():
            return target
        work = Path(tempfile.mkdtemp(prefix="wheels-", dir=root))
        (work / "requirements.txt").write_text(pins)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                               "--only-binary=:all:", "-d", str(work), "-r", str(work / "requirements.txt")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"filling the twin's wheelhouse from PyPI failed: {done.stderr.strip()[-800:]}")
        (work / ".complete").write_text(pins)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        os.chmod(target, 0o755)
    return target
