"""Entry point the Pulumi CLI runs for `--policy-pack policies`: assemble the pack and serve it (blocks)."""

import sys
from pathlib import Path

# The CLI starts a local pack as `<venv>/bin/python -m pulumi.policy` with cwd = policies/, so the
# repository root (bazbii_plan, bazbii_db, policies) is not importable otherwise: the one path entry
# the project adds, at its one entry point that runs outside the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack  # noqa: E402

from policies.pack import DEFAULT_ENFORCEMENT, PACK_NAME, POLICIES  # noqa: E402

PolicyPack(
    name=PACK_NAME,
    enforcement_level=DEFAULT_ENFORCEMENT,
    policies=POLICIES,
    description="Forbids unsafe jumps between the phases of the bazbii zero-downtime migration.",
)
