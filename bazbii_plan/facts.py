"""Facts shared by the program, the policy pack and the database tools: each one is defined here only.

Pure Python (no Pulumi, no psycopg import), so every layer may import it:
``components/`` (what the program registers), ``policies/`` (what the pack
checks), ``bazbii_db/`` (what the runner and the switchover do on the servers).
When two of them must agree on a fact (a label a policy selects on, the file a
migration stage runs, what counts as an image's version), they read it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Optional

from bazbii_plan.errors import pattern

# --------------------------------------------------------------------------- Kubernetes labels
NAME_LABEL = "app.kubernetes.io/name"
VERSION_LABEL = "app.kubernetes.io/version"
PART_OF_LABELS = {"app.kubernetes.io/part-of": "bazbii", "app.kubernetes.io/managed-by": "pulumi"}
TRACK_LABEL = "bazbii.io/track"  # stable | canary
SERVING_LABEL = "bazbii.io/serving"  # "true" on every Deployment behind the API Service
HTTP_PORT_NAME = "http"  # the API container's port: probes, the Service and the metrics scrape find it by name
WORKER_NAME = "worker"
WORKER_SELECTOR = f"{NAME_LABEL}={WORKER_NAME}"

# --------------------------------------------------------------------------- the transition check
# The resource registered first, which every gate policy reads (components/transition_check.py).
GATE_TYPE = "pulumi-python:dynamic:Resource"
GATE_MARKER = "bazbii-phase-gate"  # its ``gate`` input; kept from the old phase gate, which it replaces in place
APPLIED_RECORD_OUTPUT = "appliedRecord"  # the stack output the next update reads back
SWITCHOVER_REPORT_OUTPUT = "switchoverReport"  # the stack output holding the last switchover's JSON report
TRANSITION_CHECK = "transition-check"  # the resource registered first: the gate every other resource waits for
APPLIED_RECORD = "applied-record"  # the resource registered last: it stamps the applied times
# The SSH key of the data plane, also the one the live gate and watch read the metrics with (bazbii:metrics.ssh).
SSH_KEY_CONFIG = "bazbii:sshPrivateKey"
# How every shell script the program runs starts (remote and local commands, the data-plane's generated
# scripts): bash, stopping on the first error, an unset variable or a failed stage of a pipe.
SCRIPT_SHEBANG = "#!/usr/bin/env bash"
STRICT_SHELL = "set -euo pipefail"

# --------------------------------------------------------------------------- schema migrations
MIGRATION_ID_LABEL = "bazbii.io/migration-id"
MIGRATION_STAGE_LABEL = "bazbii.io/migration-stage"
MIGRATION_CHECKSUM_ANNOTATION = "bazbii.io/migration-checksum"
MIGRATION_STAGES = ("expand", "migrate", "contract")
# Which files of a migration directory each stage runs, in order.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "expand": ("expand.sql",),
    "migrate": ("migrate.sql", "migrate_after.sql"),
    "contract": ("contract.sql",),
}
# The optional down step of a stage (``contract.down.sql``): SQL that undoes it, run by the runner's
# ``revert`` (CLI ``down``) or when an earlier stage is applied again (a rollback of the schema track).
DOWN_SUFFIX = ".down.sql"

# --------------------------------------------------------------------------- safety defaults
# The plan's models, the policy pack's config and the database tools' CLIs default to these.
DEFAULT_MAX_LAG_BYTES = 1024 * 1024  # replica replay lag gate (bytes)
# A switchover: a transaction held open across it may cost the other clients at most this stall (the
# policy pack bounds the PAUSE timeout by it). Transactions already open longer than the long-transaction
# bound right before PAUSE are waited out *without* pausing, for at most the wait; one begun after that
# check can only hold PAUSE for its timeout, which is therefore short.
SWITCHOVER_STALL_TARGET_SECONDS = 1.0
DEFAULT_PAUSE_TIMEOUT_SECONDS = 0.5  # PgBouncer PAUSE: waits this long for in-flight transactions, then RESUMEs
DEFAULT_LONG_TRANSACTION_SECONDS = 0.25  # open longer than this right before PAUSE: waited out, unpaused
DEFAULT_LONG_TRANSACTION_WAIT_SECONDS = 30.0  # ... for at most this long; then the switchover aborts, nothing changed
# PgBouncer takes a server login that PAUSE cuts short for a failed one: it then opens no server connection
# for that pool, and fails new clients fast, for server_login_retry (default 15 s). Kept within the PAUSE
# timeout, so the rare login that starts between the switchover's last look and PAUSE costs no more stall.
PGBOUNCER_SERVER_LOGIN_RETRY_SECONDS = 0.5
DEFAULT_DRAIN_SECONDS = 15  # preStop sleep while endpoints drain
DEFAULT_TRAFFIC_LADDER = (0, 10, 50, 100)  # load-balancer pool weights, percent
DEFAULT_CANARY_LADDER = (0, 10, 50, 100)  # canary share of the API pods, percent
DEFAULT_FLAG_LADDER = (0, 10, 50, 100)  # feature-flag rollout, percent of users (id % 100 < rollout)

# --------------------------------------------------------------------------- live metrics
# How often the production Prometheus scrapes the exporters (the global scrape_interval of the
# configuration Debian's prometheus package ships): a reading taken more often holds nothing new. The
# backfill's Prometheus latency source reads no more often; the backfill benchmark scrapes its load so.
PROMETHEUS_SCRAPE_INTERVAL_S = 15.0

# --------------------------------------------------------------------------- PostgreSQL on the servers
SUPPORTED_PG_VERSIONS = (15, 16)
DEFAULT_PG_VERSION = 15


@dataclass(frozen=True)
class PgPaths:
    """Debian/PGDG layout of one PostgreSQL major version on a server."""

    version: int

    @property
    def bin(self) -> str:
        return f"/usr/lib/postgresql/{self.version}/bin"

    @property
    def datadir(self) -> str:
        return f"/var/lib/postgresql/{self.version}/main"

    @property
    def confdir(self) -> str:
        return f"/etc/postgresql/{self.version}/main"

    @property
    def start_conf(self) -> str:
        return f"{self.confdir}/start.conf"

    @property
    def unit(self) -> str:
        return f"postgresql@{self.version}-main"

    @property
    def passfile(self) -> str:
        return f"/var/lib/postgresql/{self.version}/replication.pgpass"


def pg_paths(version: int = DEFAULT_PG_VERSION) -> PgPaths:
    if version not in SUPPORTED_PG_VERSIONS:
        raise ValueError(f"PostgreSQL {version} is not supported (supported: {SUPPORTED_PG_VERSIONS})")
    return PgPaths(version)


# --------------------------------------------------------------------------- versions and image tags
# One meaning everywhere (the contract policy, the migration runner, the flags rules): a version is
# MAJOR.MINOR.PATCH, optionally ``v``-prefixed, with an optional pre-release and build metadata.
# A shorter tag such as ``2.0`` is refused: it is usually a moving tag, so what runs is unknown.
SEMVER = re.compile(r"^[vV]?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
VERSION_FORMAT = "MAJOR.MINOR.PATCH (e.g. 2.0.0 or 2.0.0-rc.1)"
# A minimum version named in config (a flag's minAppVersion, a contract's required app version): a release.
RELEASE_VERSION_PATTERN = pattern(r"^[0-9]+\.[0-9]+\.[0-9]+$", "a version MAJOR.MINOR.PATCH, e.g. 2.0.0")


@total_ordering
@dataclass(frozen=True)
class Version:
    release: tuple[int, int, int]
    prerelease: tuple[object, ...] = ()  # empty = a final release, which sorts after its pre-releases
    text: str = ""

    def _key(self):
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (self.release, 1 if not self.prerelease else 0, pre)

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __eq__(self, other) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return self.text or ".".join(map(str, self.release))


def parse_version(text: object) -> Optional[Version]:
    """``2.0.0``, ``v2.0.0``, ``2.0.0-rc.1`` (build metadata ``+...`` is ignored); None otherwise."""
    if not isinstance(text, str):
        return None
    raw = text.strip()
    match = SEMVER.match(raw)
    if not match:
        return None
    pre = match[4]
    items = pre.split(".") if pre else []
    if any(not item for item in items):
        return None
    prerelease = tuple(int(i) if i.isdigit() else i for i in items)
    return Version((int(match[1]), int(match[2]), int(match[3])), prerelease, raw)


# A content digest pins an image whatever its tag says (``repo@sha256:...`` or ``repo:tag@sha256:...``).
IMAGE_DIGEST_PATTERN = r"@sha256:[0-9a-f]{64}"
IMAGE_DIGEST = re.compile(IMAGE_DIGEST_PATTERN + "$")
PINNED_FORMAT = f"a version tag {VERSION_FORMAT} or a digest @sha256:<64 hex digits>"


def image_tag(image: object) -> Optional[str]:
    """The tag of ``registry[:port]/repo:tag[@digest]`` (None when there is none, or only a digest)."""
    if not isinstance(image, str) or not image.strip():
        return None
    name = image.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.rsplit(":", 1)[1] or None


def image_version(image: str) -> str:
    """What a running image is known as: its tag, else its digest (``sha256-<12 hex>``, a valid label value)."""
    tag = image_tag(image)
    if tag is not None:
        return tag
    digest = IMAGE_DIGEST.search(image.strip()) if isinstance(image, str) else None
    return f"sha256-{digest.group(0)[len('@sha256:'):][:12]}" if digest else "unknown"


def version_from_image(image: object) -> Optional[Version]:
    """The version in an image reference's tag, or in a bare version string; None when unreadable."""
    if not isinstance(image, str) or not image.strip():
        return None
    tag = image_tag(image)
    if tag is not None:
        return parse_version(tag)
    name = image.strip().split("@", 1)[0]
    return None if "/" in name else parse_version(name)  # an image without a tag means :latest


def pin_problem(image: object) -> Optional[str]:
    """Why an image reference is not pinned, in words (None when it is).

    Pinned: a digest, or a tag that :func:`parse_version` accepts. Anything else can move
    (``main``, ``stable``, ``latest``, ``edge``, ``dev``, ``2.0``): what runs, and what a rollback
    brings back, would depend on when the tag was pulled.
    """
    if not isinstance(image, str) or not image.strip():
        return f"image {image!r} is empty"
    text = image.strip()
    if "@" in text:
        return None if IMAGE_DIGEST.search(text) else f"image {text!r} has a digest that is not @sha256:<64 hex digits>"
    problem = version_problem(text)
    if problem is not None and image_tag(text) is not None:
        problem += ": a tag that is not a version can move (like main, stable or latest)"
    return problem


def version_problem(image: str) -> Optional[str]:
    """Why an image reference has no usable version, in words (None when it has one)."""
    tag = image_tag(image)
    if tag is None:
        return f"image {image!r} has no version tag (it would run whatever :latest is)"
    if parse_version(tag) is None:
        return f"image {image!r} has tag {tag!r}, which is not a version {VERSION_FORMAT}"
    return None
