"""Application versions: parsing image references and the contract gate.

The contract stage removes what old application versions still use, so it may only run once
every running version is at least the migration's ``contract_min_app_version``. The versions
come from the stack (the Deployments' container images), e.g.
``registry.example.com/bazbii/api:2.0.0``. Anything that cannot be read as a version (a
``latest`` tag, a bare digest) fails closed: the contract is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering

from bazbii_db.migrations.errors import MigrationError


@total_ordering
@dataclass(frozen=True)
class Version:
    release: tuple[int, ...]
    prerelease: tuple[object, ...] = ()  # empty = a final release, which sorts after its pre-releases
    text: str = ""

    def _key(self):
        rel = self.release + (0,) * (3 - len(self.release))
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (rel, 1 if not self.prerelease else 0, pre)

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __eq__(self, other) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.text or ".".join(map(str, self.release))


def parse_version(text: str) -> Version | None:
    """Parse ``2``, ``2.0``, ``v2.0.0``, ``2.0.0-rc.1`` (build metadata ``+...`` is ignored)."""
    raw = text.strip()
    core = raw[1:] if raw[:1] in ("v", "V") else raw
    core = core.split("+", 1)[0]
    core, _, pre = core.partition("-")
    parts = core.split(".")
    if not core or len(parts) > 4 or not all(p.isdigit() for p in parts):
        return None
    prerelease: tuple[object, ...] = ()
    if pre:
        items = pre.split(".")
        if not all(items):
            return None
        prerelease = tuple(int(i) if i.isdigit() else i for i in items)
    return Version(tuple(int(p) for p in parts), prerelease, raw)


def version_from_image(ref: str) -> Version | None:
    """The version in an image reference's tag (``host:port/repo/name:TAG[@digest]``), or a bare version."""
    ref = ref.strip()
    if not ref:
        return None
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return parse_version(last.rsplit(":", 1)[1])
    if "/" in name:
        return None  # an image without a tag means :latest
    return parse_version(last)


class ContractRefused(MigrationError):
    """The contract stage was refused; nothing was changed."""


def check_contract_allowed(min_version: str | None, app_versions: list[str] | tuple[str, ...]) -> list[Version]:
    """Raise ContractRefused unless every reported app version is >= ``min_version``."""
    if not min_version:
        raise ContractRefused("the migration declares no contract_min_app_version; refusing to contract")
    minimum = parse_version(min_version)
    if minimum is None:
        raise ContractRefused(f"contract_min_app_version {min_version!r} is not a version")
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
