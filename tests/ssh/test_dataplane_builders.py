"""The pure builders of the data-plane commands (no server needed): reproducible releases, input rules."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from bazbii_db.dataplane import (RELEASE_DIRS, cli_command, lag_gate_command, release_digest, secrets_stdin,
                                 release_tarball, server_requirements)

REPO = Path(__file__).resolve().parents[2]


def test_release_tarball_is_reproducible_and_holds_only_the_release():
    first = release_tarball(REPO)
    assert first == release_tarball(REPO)
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
    assert "requirements.txt" in names and "bazbii_db/replication/__main__.py" in names
    assert all(n == "requirements.txt" or n.split("/")[0] in RELEASE_DIRS for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_digest_follows_the_code(tmp_path):
    copy = tmp_path / "repo"
    for top in RELEASE_DIRS:
        shutil.copytree(REPO / top, copy / top, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "requirements.txt", copy / "requirements.txt")
    before = release_digest(copy)
    assert before == release_digest(REPO)
    (copy / "migrations" / "0001_init" / "expand.sql").write_text("-- changed\n")
    assert release_digest(copy) != before


def test_server_requirements_are_the_pinned_lines():
    text = server_requirements((REPO / "requirements.txt").read_text())
    names = {line.split("==")[0].split("[")[0] for line in text.splitlines()}
    assert names == {"psycopg", "psycopg-pool", "pglast", "squawk-cli", "rich", "httpx", "pydantic"}
    assert "pulumi" not in text
    with pytest.raises(ValueError, match="not pinned"):
        server_requirements("psycopg[binary]\npsycopg-pool==1\npglast==1\nsquawk-cli==1\nrich==1\nhttpx==1\n"
                            "pydantic==1\n")
    with pytest.raises(ValueError, match="lacks pglast"):
        server_requirements("psycopg==1\npsycopg-pool==1\nsquawk-cli==1\nrich==1\nhttpx==1\npydantic==1\n")


def test_secrets_never_in_the_command_and_one_per_line():
    command = lag_gate_command(slot="server3", max_lag_bytes=1, window_seconds=1, timeout_seconds=2,
                               check_consistency=False)
    assert "IFS= read -r BAZBII_PRIMARY_DSN" in command and "password" not in command
    assert secrets_stdin(["a b", "c"]) == "a b\nc\n"
    with pytest.raises(ValueError, match="line break"):
        secrets_stdin(["host=x\npassword=y"])
    with pytest.raises(ValueError, match="unknown CLI module"):
        cli_command("os", ["-c", "true"])
    with pytest.raises(ValueError, match="invalid environment variable name"):
        cli_command("bazbii_db.replication", ["gate"], secret_env=["x; rm -rf /"])
