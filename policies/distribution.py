"""Build the zero-downtime pack as a self-contained folder that ``pulumi policy publish`` can upload.

    python -m policies.distribution [OUT]        # default: dist/policy-pack   (or scripts/build-policy-pack)

The in-repository pack (``--policy-pack policies``) reaches the rest of the repository through a path
entry and shares the repository's virtualenv (``../venv``); ``pulumi policy publish`` archives only the
pack folder, so that pack cannot be published. The built folder has everything it imports:

* ``policies/`` (the rules), and every package of ours the rules import (found by importing the pack
  in a fresh interpreter, not by a hand-kept list);
* ``__main__.py`` serving the same ``POLICIES`` under the same pack name, with no path edit;
* ``requirements.txt``: the pins of ``requirements.txt`` for exactly the distributions the pack imports,
  plus the programs it runs (squawk);
* ``PulumiPolicy.yaml`` with a virtualenv of its own (``venv``, created where the pack is installed).

Nothing of the repository outside the pack is needed to run it (a test loads it from another directory
in the real analyzer and compares its verdicts with the in-repository pack's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_SOURCE = REPO_ROOT / "policies"
DEFAULT_OUT = REPO_ROOT / "dist" / "policy-pack"
OUR_PACKAGES = ("policies", "bazbii_plan", "bazbii_db", "bazbii_analysis")
# Modules of the in-repository pack that are not part of the published one.
LEFT_OUT = {"__main__.py", "distribution.py", "offline.py", "PulumiPolicy.yaml", "requirements.txt", "README.md"}
# Distributions the pack runs as programs rather than imports.
PROGRAMS = ("squawk-cli",)
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")

ENTRY_POINT = '''"""The zero-downtime policy pack, as published (built by policies/distribution.py; do not edit)."""

from pulumi_policy import PolicyPack

from policies.pack import DEFAULT_ENFORCEMENT, PACK_NAME, POLICIES

PolicyPack(
    name=PACK_NAME,
    enforcement_level=DEFAULT_ENFORCEMENT,
    policies=POLICIES,
    description={description!r},
)
'''

_IMPORT_PROBE = """
import importlib.metadata, json, sys
before = set(sys.modules)
import policies.pack
mapping = importlib.metadata.packages_distributions()
ours, dists = set(), set()
for name in sorted(set(sys.modules) - before):
    top = name.split(".")[0]
    if top in {ours_names}:
        ours.add(top)
    for dist in mapping.get(top, []):
        dists.add(dist.lower())
print(json.dumps({{"ours": sorted(ours), "distributions": sorted(dists)}}))
"""


class PackBuildError(RuntimeError):
    pass


def import_closure() -> tuple[list[str], list[str]]:
    """(our packages, third-party distributions) that importing the pack loads, in a fresh interpreter."""
    probe = _IMPORT_PROBE.format(ours_names=repr(set(OUR_PACKAGES)))
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise PackBuildError(f"importing the pack failed: {done.stderr.strip()[-800:]}")
    found = json.loads(done.stdout)
    return found["ours"], found["distributions"]


def pinned_requirements(distributions: list[str], requirements_txt: Path = REPO_ROOT / "requirements.txt") -> str:
    """The lines of requirements.txt that pin ``distributions`` (and the programs the pack runs)."""
    wanted = {d.lower().replace("_", "-") for d in distributions} | set(PROGRAMS)
    lines, seen = [], set()
    for raw in requirements_txt.read_text().splitlines():
        spec = raw.split("#", 1)[0].strip()
        if not spec:
            continue
        name = spec.split("==", 1)[0].split("[", 1)[0].strip().lower().replace("_", "-")
        if name in wanted:
            if "==" not in spec:
                raise PackBuildError(f"requirements.txt: {spec!r} is not pinned")
            lines.append(spec)
            seen.add(name)
    # Distributions that come in as dependencies of a pinned one (pydantic-core, grpcio, ...) are left to pip.
    direct = {n for n in wanted if n in seen}
    if "pulumi-policy" not in direct or "pulumi" not in direct:
        raise PackBuildError("requirements.txt must pin pulumi and pulumi-policy for the pack")
    return "\n".join(lines) + "\n"


def pack_version() -> str:
    for line in (PACK_SOURCE / "PulumiPolicy.yaml").read_text().splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    raise PackBuildError("policies/PulumiPolicy.yaml has no version")


def pack_description() -> str:
    for line in (PACK_SOURCE / "PulumiPolicy.yaml").read_text().splitlines():
        if line.startswith("description:"):
            return line.split(":", 1)[1].strip()
    return "bazbii zero-downtime policy pack"


def build(out: Path = DEFAULT_OUT) -> Path:
    ours, distributions = import_closure()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".policy-pack-", dir=out.parent))  # beside it: renamed into place whole
    try:
        for package in ours:
            ignore = SKIPPED
            if package == "policies":
                def ignore(directory, names):  # noqa: E306 (the pack's own entry point is written below)
                    left = set(SKIPPED(directory, names))
                    return left | (LEFT_OUT & set(names) if Path(directory) == PACK_SOURCE else set())
            shutil.copytree(REPO_ROOT / package, staging / package, ignore=ignore)
        (staging / "__main__.py").write_text(ENTRY_POINT.format(description=pack_description()))
        (staging / "requirements.txt").write_text(pinned_requirements(distributions))
        (staging / "PulumiPolicy.yaml").write_text(
            "# Built by policies/distribution.py from the repository's pack; publish with\n"
            "#   pulumi policy publish <org> (run in this folder)\n"
            "runtime:\n  name: python\n  options:\n    virtualenv: venv\n"
            f"version: {pack_version()}\n"
            f"description: {pack_description()}\n"
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policies.distribution", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT,
                        help=f"folder to write (replaced whole; default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    try:
        out = build(args.out.resolve())
    except PackBuildError as exc:
        print(f"build-policy-pack: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
