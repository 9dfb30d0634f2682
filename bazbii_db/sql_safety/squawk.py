"""squawk (``squawk --reporter json``, offline) adds its wider catalogue of lints.

Findings that duplicate one of our rules (which know about stages, new tables and earlier
stages), or that do not apply to files run by our runner (the runner sets the timeouts and runs
every statement in autocommit), are excluded; the rest are warnings, a few are errors.
squawk's line numbers are 0-based and are converted to 1-based here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .findings import ERROR, WARNING, Finding

# Rules that duplicate one of ours, or contradict how the runner executes files (ban-drop-not-null:
# loosening a column is what a down step does; our rules judge DROP NOT NULL safe in every stage).
SQUAWK_EXCLUDED = (
    "require-concurrent-index-creation", "require-concurrent-index-deletion", "require-concurrent-reindex",
    "require-concurrent-partition-detach", "constraint-missing-not-valid", "adding-foreign-key-constraint",
    "changing-column-type", "ban-drop-column", "ban-drop-table", "ban-drop-constraint", "renaming-column",
    "renaming-table", "renaming-object", "ban-set-schema", "adding-not-nullable-field", "adding-required-field",
    "adding-field-with-default", "adding-serial-primary-key-field", "disallowed-unique-constraint",
    "ban-alter-domain-with-add-constraint", "ban-drop-not-null", "require-lock-timeout", "require-statement-timeout",
    "prefer-robust-stmts", "ban-concurrent-index-creation-in-transaction", "transaction-nesting",
    "ban-uncommitted-transaction",
)
# squawk rules whose findings block the migration (the rest are advice).
SQUAWK_ERRORS = frozenset({"ban-drop-database", "ban-truncate-cascade"})
PG_VERSION = "15.0"


def squawk_binary() -> str | None:
    override = os.environ.get("BAZBII_SQUAWK")
    if override and Path(override).exists():
        return override
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return str(beside)
    return shutil.which("squawk")


def squawk_json(sql: str, filename: str, excluded: tuple[str, ...] = SQUAWK_EXCLUDED) -> list[dict] | str:
    """squawk's findings as its JSON items, or an error text when squawk could not run."""
    binary = squawk_binary()
    if binary is None:
        return "squawk was not found"
    argv = [binary, "--reporter", "json", "--stdin-filepath", filename, "--pg-version", PG_VERSION]
    if excluded:
        argv += ["--exclude", ",".join(excluded)]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=60)
    if proc.returncode not in (0, 1):
        return f"squawk exited {proc.returncode}: {proc.stderr.strip()[:300]}"
    return json.loads(proc.stdout) if proc.stdout.strip() else []


def run_squawk(sql: str, filename: str) -> list[Finding]:
    items = squawk_json(sql, filename)
    if isinstance(items, str):
        if squawk_binary() is None:
            return [Finding("squawk-unavailable", "squawk was not found; only the pglast rules ran", filename, 1,
                            WARNING, "install squawk-cli (requirements.txt) or set BAZBII_SQUAWK")]
        return [Finding("squawk-failed", items, filename, 1, ERROR, "fix the SQL so squawk can parse it")]
    out = []
    for item in items:
        rule = item.get("rule_name") or "squawk"
        out.append(Finding(rule=rule, message=f"{item.get('message', '')} (squawk)", file=filename,
                           line=int(item.get("line", 0)) + 1,  # squawk's json lines are 0-based
                           severity=ERROR if rule in SQUAWK_ERRORS else WARNING, fix=item.get("help") or ""))
    return out
