"""Output a person and a script can trust: --json for every subcommand, a closed pipe ends quietly,
progress for the long runs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from rich.console import Console

from bazbii_db.migrations.__main__ import main as migrations_main
from bazbii_db.replication.__main__ import main as replication_main
from bazbii_plan.cli import EXIT_PIPE_CLOSED
from offline_preview.harness import REPO_ROOT
from offline_preview.report import CheckProgress

MIGRATION = "0002_add_category"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def test_checksum_json_is_one_document(capsys):
    assert migrations_main(["checksum", "--migration", MIGRATION, "--stage", "expand", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["migration_id"] == MIGRATION and doc["stage"] == "expand" and len(doc["checksum"]) >= 12
    assert migrations_main(["checksum", "--migration", MIGRATION, "--stage", "expand"]) == 0
    assert capsys.readouterr().out.strip() == doc["checksum"]


def test_analyse_json_either_side_of_the_subcommand(capsys, monkeypatch):
    monkeypatch.delenv("BAZBII_SHADOW_DSN", raising=False)
    docs = []
    for argv in (["--json", "analyse", "--migration", MIGRATION], ["analyse", "--migration", MIGRATION, "--json"]):
        migrations_main(argv)
        docs.append(json.loads(capsys.readouterr().out))
    assert docs[0] == docs[1] and docs[0]["migrations"][0]["migration"] == MIGRATION


def test_printed_scripts_in_json(capsys):
    assert replication_main(["retire-script", "--json"]) == 0
    assert "systemctl" in json.loads(capsys.readouterr().out)["script"]


def _closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run a CLI whose reader has gone before it writes (``| head -0``): stdout closed at once."""
    child = subprocess.Popen([sys.executable, *argv], cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    child.stdout.close()
    err = child.stderr.read()
    return subprocess.CompletedProcess(argv, child.wait(timeout=300), "", err)


def test_a_closed_pipe_ends_quietly():
    for argv in (["-m", "bazbii_db.migrations", "--json", "checksum", "--migration", MIGRATION, "--stage", "expand"],
                 ["-m", "offline_preview", "--json", "--phase", "no-such-step"],
                 ["-m", "bazbii_db.replication", "replica-script", "--primary-host", "h", "--user", "u",
                  "--slot", "s"]):
        result = _closed_pipe(argv)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, (argv, result.stderr)
        assert result.returncode == EXIT_PIPE_CLOSED, (argv, result.returncode, result.stderr)


def test_preview_all_json_into_head_ends_quietly():
    """The case of the issue, through a shell: ``--all --json | head -1`` (the JSON is written at the end)."""
    result = subprocess.run(f"{sys.executable} -m offline_preview --all --json | head -1", shell=True, cwd=REPO_ROOT,
                            env=_env(), capture_output=True, text=True, timeout=900)
    assert result.stdout == "{\n"
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr[-2000:]


@dataclass
class _T:
    title: str


def test_progress_is_a_line_per_transition_off_a_terminal():
    err = io.StringIO()
    items = [_T("a -> b"), _T("b -> c")]
    with CheckProgress(len(items), True, Console(file=err, force_terminal=False, width=200)) as bar:
        assert list(bar.each(items)) == items
    assert err.getvalue().splitlines() == ["check 1/2: a -> b", "check 2/2: b -> c"]
    quiet = io.StringIO()
    with CheckProgress(len(items), False, Console(file=quiet)) as bar:
        assert list(bar.each(items)) == items and quiet.getvalue() == ""


def test_progress_on_a_terminal_is_a_bar_naming_the_transition():
    err = io.StringIO()
    items = [_T("infra: mvp -> server3"), _T("rollback infra")]
    with CheckProgress(len(items), True, Console(file=err, force_terminal=True, width=120)) as bar:
        assert list(bar.each(items)) == items
    assert "infra: mvp -> server3" in err.getvalue()
