"""Any number of evaluations of the program may run at once on one machine (issue 28): nothing they write
has a shared fixed name or sits at a predictable path in a world-writable directory.

Several ``./preview`` runs (each evaluates the program under the SDK's mocks and judges it with the policy pack)
start together, in separate processes sharing one $TMPDIR, and must all pass with the same result; the release
tarball each evaluation ships to the servers must be the same bytes in all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from offline_preview.harness import REPO_ROOT

RUNS = 4
# One process: the release each evaluation ships, as its digest; then a preview of the step the release installs.
PROBE = ("import hashlib, json, sys; from pathlib import Path; "
         "from bazbii_db.dataplane import release_digest, release_tarball; "
         "r = Path(sys.argv[1]); print(json.dumps([release_digest(r), hashlib.sha256(release_tarball(r)).hexdigest()]))")


def _run(argv: list[str], tmpdir: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["TMPDIR"] = tmpdir
    return subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


def test_evaluations_run_in_parallel(tmp_path):
    shared = tmp_path / "tmp"
    shared.mkdir()
    previews = [["-m", "offline_preview", "--json"]] * RUNS  # the current infra step and the next
    probes = [["-c", PROBE, str(REPO_ROOT)]] * RUNS
    with ThreadPoolExecutor(max_workers=2 * RUNS) as pool:
        results = list(pool.map(lambda argv: _run(argv, str(shared)), previews + probes))
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
    docs = [json.loads(r.stdout) for r in results[:RUNS]]
    assert all(doc["errors"] == [] and doc["failedTransitions"] == 0 for doc in docs), docs[0]
    assert len({json.dumps(doc["transitions"], sort_keys=True) for doc in docs}) == 1  # the same result each time
    assert len({r.stdout for r in results[RUNS:]}) == 1  # the same release, byte for byte
    assert list(shared.iterdir()) == []  # nothing left behind in the shared temporary directory


def test_the_release_tarball_is_built_in_memory_and_reproducible(tmp_path, monkeypatch):
    from bazbii_db import dataplane

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(dataplane, "_TARBALLS", {})
    first = dataplane.release_tarball(REPO_ROOT)
    monkeypatch.setattr(dataplane, "_TARBALLS", {})  # built again, not read from the cache
    assert hashlib.sha256(dataplane.release_tarball(REPO_ROOT)).digest() == hashlib.sha256(first).digest()
    assert list(tmp_path.iterdir()) == []
