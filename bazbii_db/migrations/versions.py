"""Application versions: parsing image references and the contract gate.

The contract stage removes what old application versions still use, so it may only run once
every running version is at least the migration's ``contract_min_app_version``. The versions
come from the stack (the Deployments' container images), e.g.
``registry.example.com/bazbii/api:2.0.0``. Anything that cannot be read as a version (a
``latest`` tag, a bare digest, a short ``2.0``) fails closed: the contract is refused. The
parser is :mod:`bazbii_plan.facts`' (the contract policy uses the same one).
"""

from __future__ import annotations

from bazbii_plan.facts import VERSION_FORMAT, Version, parse_version, version_from_image

from bazbii_db.migrations.errors import MigrationError

__all__ = ["ContractRefused", "Version", "check_contract_allowed", "parse_version", "version_from_image"]


class ContractRefused(MigrationError):
    """The contract stage was refused; nothing was changed."""


def check_contract_allowed(min_version: str | None, app_versions: list[str] | tuple[str, ...]) -> list[Version]:
    """Raise ContractRefused unless every reported app version is >= ``min_version``."""
    if not min_version:
        raise ContractRefused("the migration declares no contract_min_app_version; refusing to contract")
    minimum = parse_version(min_version)
    if minimum is None:
        raise ContractRefused(f"contract_min_app_version {min_version!r} is not a version {VERSION_FORMAT}")
    if not app_versions:
        raise ContractRefused(
            f"no running application versions were reported; contract needs every version >= {minimum} "
            "(pass --app-version for each running image)")
    parsed, problems = [], []
    for ref in app_versions:
        version = version_from_image(ref)
        if version is None:
            problems.append(f"{ref!r} (no readable version)")
        elif version < minimum:
            problems.append(f"{ref!r} ({version} < {minimum})")
        else:
            parsed.append(version)
    if problems:
        raise ContractRefused(
            f"contract requires every application version >= {minimum}, but these are still running: "
            + ", ".join(problems))
    return parsed
