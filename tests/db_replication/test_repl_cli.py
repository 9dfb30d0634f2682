"""``python -m bazbii_db.replication``: DSNs from the environment, never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .repl_helpers import REPO, su

pytestmark = pytest.mark.timeout(60)


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", "bazbii_db.replication", *args], capture_output=True, text=True,
                          env=full_env, cwd=str(REPO), timeout=60)


def test_cli_gate_check_and_verify(shared_topo):
    env = {"BAZBII_PRIMARY_DSN": su(shared_topo), "BAZBII_REPLICA_DSN": su(shared_topo, "replica")}
    gate = _cli(["--json", "gate", "--replica", shared_topo.slot, "--window", "0.3", "--timeout", "10"], env)
    assert gate.returncode == 0, gate.stderr
    assert json.loads(gate.stdout)["passed"] is True
    check = _cli(["check", "--table", "public.accounts"], env)
    assert check.returncode == 0 and "CONSISTENT" in check.stdout, check.stdout + check.stderr
    verify = _cli(["verify-streaming", "--replica", shared_topo.slot], env)
    assert verify.returncode == 0 and "streaming" in verify.stdout
    for run in (gate, check, verify):
        assert shared_topo.primary.password not in run.stdout + run.stderr


def test_cli_fails_closed_and_reports_usage_errors(shared_topo):
    bad = {"BAZBII_PRIMARY_DSN": su(shared_topo).replace(f"port={shared_topo.primary.port}", "port=1")}
    gate = _cli(["gate", "--replica", shared_topo.slot, "--window", "0.2", "--timeout", "1"], bad)
    assert gate.returncode == 1 and "FAILED" in gate.stdout
    assert shared_topo.primary.password not in gate.stdout + gate.stderr
    missing = _cli(["switchover", "--ini", "/nonexistent", "--alias", "app", "--new-host", "127.0.0.1"], {})
    assert missing.returncode == 2 and "BAZBII_OLD_PRIMARY_DSN" in missing.stderr
    script = _cli(["replica-script", "--primary-host", "10.0.0.2", "--user", "replicator", "--slot", "server3"], {})
    assert script.returncode == 0 and "pg_basebackup" in script.stdout


def test_cli_reads_dsns_from_files_and_reports_usage_in_one_line(shared_topo, tmp_path):
    primary, replica = tmp_path / "primary.dsn", tmp_path / "replica.dsn"
    primary.write_text(su(shared_topo) + "\n")
    replica.write_text(su(shared_topo, "replica"))
    primary.chmod(0o600)
    replica.chmod(0o600)
    files = ["--primary-dsn-file", str(primary), "--replica-dsn-file", str(replica)]
    gate = _cli([*files, "--json", "gate", "--replica", shared_topo.slot, "--window", "0.3", "--timeout", "10",
                 "--check-consistency"], {})
    assert gate.returncode == 0, gate.stderr
    doc = json.loads(gate.stdout)  # exactly one JSON document
    assert doc["passed"] is True and doc["consistency"]["passed"] is True
    assert shared_topo.primary.password not in gate.stdout + gate.stderr

    unreadable = _cli(["--primary-dsn-file", str(tmp_path / "missing.dsn"), "gate", "--replica", "x"], {})
    assert unreadable.returncode == 2
    assert unreadable.stderr.strip().splitlines() == [f"error: cannot read DSN file {tmp_path / 'missing.dsn'}: "
                                                      "No such file or directory"]
    usage = _cli(["gate"], {})
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1
    assert "--replica" in usage.stderr


@pytest.mark.parametrize("option, value, says", [
    ("--pause-timeout", "0", "must be a number of seconds > 0, not '0'"),
    ("--long-transaction-seconds", "soon", "must be a number of seconds > 0, not 'soon'"),
    ("--long-transaction-wait", "-1", "must be a number of seconds >= 0, not '-1'"),
])
def test_switchover_bounds_refuse_bad_seconds_naming_the_option(option, value, says):
    run = _cli(["switchover", "--ini", "/nonexistent", "--alias", "app", "--new-host", "127.0.0.1", option, value], {})
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [f"error: argument {option}: {says} (see --help)"]
