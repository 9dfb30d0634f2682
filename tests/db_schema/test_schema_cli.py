"""The command line: secrets only from env/file, never printed; analysis and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bazbii_db.migrations import migration_checksum

from .conftest import REPO

pytestmark = pytest.mark.timeout(60)
PASSWORD = "postgres-test-password"


def run(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "bazbii_db.migrations", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert PASSWORD not in proc.stdout + proc.stderr
    return proc


def test_apply_and_status_with_dsn_from_a_file(db, small_dir, tmp_path):
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(db)
    base = ("--migrations-dir", str(small_dir))
    for mig, stage in [("0001_init", "expand"), ("0002_add_category", "expand")]:
        proc = run(*base, "apply", "--dsn-file", str(dsn_file), "--migration", mig, "--stage", stage)
        assert proc.returncode == 0, proc.stderr
        assert f"{mig}/{stage}: applied" in proc.stdout
    proc = run(*base, "status", "--dsn-env", "CLI_DSN", env_extra={"CLI_DSN": db})
    assert proc.returncode == 0 and "0002_add_category" in proc.stdout and "applied" in proc.stdout


def test_dsn_is_never_taken_from_argv_and_missing_env_is_reported(small_dir):
    proc = run("--migrations-dir", str(small_dir), "apply", "--dsn-env", "X", "--dsn", "host=x", "--migration", "0001_init",
               "--stage", "expand")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
    proc = run("--migrations-dir", str(small_dir), "apply", "--dsn-env", "NO_SUCH_VAR_HERE", "--migration",
               "0001_init", "--stage", "expand")
    assert proc.returncode == 2 and "NO_SUCH_VAR_HERE is not set" in proc.stderr


def test_connection_errors_are_redacted(small_dir):
    dsn = f"host=127.0.0.1 port=1 dbname=x user=u password={PASSWORD} connect_timeout=2"
    proc = run("--migrations-dir", str(small_dir), "apply", "--dsn-env", "CLI_DSN", "--migration", "0001_init",
               "--stage", "expand", env_extra={"CLI_DSN": dsn})
    assert proc.returncode == 1 and "cannot connect to 127.0.0.1:1/x as u" in proc.stderr  # CLI convention: 1 = failed


def test_analyse_reports_file_line_rule_and_fails(small_dir):
    ok = run("--migrations-dir", str(small_dir), "analyse")
    assert ok.returncode == 0 and "2 migration(s) ok" in ok.stdout
    bad = small_dir / "0002_add_category" / "contract.sql"
    bad.write_text("ALTER TABLE posts ALTER COLUMN category SET NOT NULL;\n")
    proc = run("--migrations-dir", str(small_dir), "analyse", "--migration", "0002_add_category")
    assert proc.returncode == 1
    assert "migrations_small/0002_add_category/contract.sql:1: error[set-not-null-without-validated-check]" in proc.stdout
    raw = run("--migrations-dir", str(small_dir), "analyse", "--migration", "0001_init", "--raw")
    assert raw.returncode == 0  # CREATE TABLE of new tables needs no lock_timeout


def test_checksum_command_matches_the_api(small_dir):
    proc = run("--migrations-dir", str(small_dir), "checksum", "--migration", "0002_add_category", "--stage", "migrate")
    assert proc.stdout.strip() == migration_checksum(small_dir, "0002_add_category", "migrate")


def test_expected_checksum_guards_apply(db, small_dir):
    env = {"CLI_DSN": db}
    args = ("--migrations-dir", str(small_dir), "apply", "--dsn-env", "CLI_DSN", "--migration", "0001_init",
            "--stage", "expand")
    proc = run(*args, env_extra={**env, "BAZBII_EXPECTED_CHECKSUM": "0" * 64})
    assert proc.returncode == 2 and "expected 000000000000; nothing was run" in proc.stderr
    good = migration_checksum(small_dir, "0001_init", "expand")
    proc = run(*args, "--expected-checksum", good, env_extra=env)
    assert proc.returncode == 0 and "0001_init/expand: applied" in proc.stdout
