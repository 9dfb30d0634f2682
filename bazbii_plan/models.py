"""Typed desired state of the bazbii prod stack.

Each top-level section is one Pulumi config key (``bazbii:<section>``), written
in camelCase in ``Pulumi.<stack>.yaml``. Collections of named things (servers,
pools, replicas, DNS records) are maps keyed by name so that a phase step can
change one of them with a small merge patch (see :mod:`bazbii_plan.plan`).

Only internal consistency of one section lives here; rules that relate
sections to each other are in :mod:`bazbii_plan.crosscheck`, and rules about
moving from one applied state to the next are CrossGuard policies.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from bazbii_plan.errors import PATTERN_WORDS, pattern
from bazbii_plan.facts import (DEFAULT_DRAIN_SECONDS, DEFAULT_MAX_LAG_BYTES, DEFAULT_PAUSE_TIMEOUT_SECONDS, DEFAULT_PG_VERSION,
                               IMAGE_DIGEST_PATTERN, RELEASE_VERSION_PATTERN, SUPPORTED_PG_VERSIONS)

NAME_PATTERN = pattern(r"^[a-z][a-z0-9-]{0,40}$",
                       "a name of lowercase letters, digits and '-', starting with a letter, at most 41 long")
IDENTIFIER_PATTERN = pattern(r"^[a-z_][a-z0-9_]{0,62}$",
                             "lowercase letters, digits and '_', not starting with a digit, at most 63 long")
SLOT_PATTERN = IDENTIFIER_PATTERN
HOSTNAME_PATTERN = pattern(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
                           "a lowercase DNS name with a dot, e.g. api.example.com")
UNIX_USER_PATTERN = pattern(r"^[a-z_][a-z0-9_-]{0,31}$",
                            "a Unix user name: lowercase letters, digits, '_' and '-', at most 32 long")
DEFAULT_SSH_USER, DEFAULT_SSH_PORT = "deploy", 22  # how every server is reached unless it says otherwise
PATH_PATTERN = pattern(r"^/[A-Za-z0-9._/-]*$", "a path starting with '/' (letters, digits, '.', '_', '/', '-')")
CLOUDFLARE_ID_PATTERN = pattern(r"^[0-9a-f]{32}$", "32 lowercase hex digits (the id Cloudflare shows)")
# registry[:port]/repo:tag, registry/repo@sha256:<digest> or both; a tag or a digest is required (a missing
# tag means "latest"). Which tags pin an image is a policy (k8s-image-pinned, bazbii_plan.facts.pin_problem).
IMAGE_NAME = r"[a-z0-9][a-z0-9._/-]*(:[0-9]+)?[a-z0-9._/-]*"
IMAGE_PATTERN = rf"^{IMAGE_NAME}(:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}({IMAGE_DIGEST_PATTERN})?|{IMAGE_DIGEST_PATTERN})$"


def _image_ref(value: str) -> str:
    """An image reference with an explicit tag or digest; the error says so in words (not as the pattern)."""
    if re.fullmatch(IMAGE_PATTERN, value):
        return value
    if ":" not in value.rsplit("/", 1)[-1]:
        raise ValueError(f"{value!r} has no version tag; write registry/repository:version, e.g. "
                         "registry.example.com/bazbii/api:2.0.0 (an untagged image means 'latest', which a rollback "
                         "cannot bring back)")
    raise ValueError(f"{value!r} is not an image reference of the form registry/repository:tag or "
                     "registry/repository@sha256:<64 hex digits> (lower-case registry and repository; a tag of "
                     "letters, digits, '.', '_' or '-')")


ImageRef = Annotated[str, AfterValidator(_image_ref)]


def between(low: int, high: int) -> AfterValidator:
    """An inclusive integer range whose error reads ``must be low..high``."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be {low}..{high}")
        return value

    return AfterValidator(check)


class Model(BaseModel):
    """Config objects: camelCase keys, unknown keys rejected (a typo must not be silently ignored)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# --------------------------------------------------------------------------- cloudflare
class Cloudflare(Model):
    account_id: str = Field(pattern=CLOUDFLARE_ID_PATTERN)
    zone_id: str = Field(pattern=CLOUDFLARE_ID_PATTERN)
    zone: str = Field(pattern=HOSTNAME_PATTERN)


# --------------------------------------------------------------------------- servers
Role = Literal["api", "gateway", "database", "pooler"]


class Server(Model):
    """A KonohaVPS machine. KonohaVPS has no API: the spec is declared here and verified over SSH."""

    address: str
    vcpu: Annotated[int, between(1, 64)]
    memory_gb: Annotated[int, between(1, 512)]
    disk_gb: Annotated[int, between(10, 10000)]
    roles: list[Role] = Field(default_factory=list)
    os: Literal["ubuntu-22.04", "ubuntu-24.04"] = "ubuntu-22.04"
    ssh_user: str = Field(default=DEFAULT_SSH_USER, pattern=UNIX_USER_PATTERN)
    ssh_port: Annotated[int, between(1, 65535)] = Field(default=DEFAULT_SSH_PORT)

    @field_validator("address")
    @classmethod
    def _address_is_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IPv4 or IPv6 address") from None
        return value

    @field_validator("roles")
    @classmethod
    def _roles_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("roles must not repeat")
        return value


# --------------------------------------------------------------------------- database
class LagGate(Model):
    """Replication lag gate: the max over ``windowSeconds`` must stay below ``maxBytes``."""

    max_bytes: int = Field(default=DEFAULT_MAX_LAG_BYTES, ge=1)
    window_seconds: float = Field(default=1.0, gt=0, le=60)
    timeout_seconds: float = Field(default=300.0, gt=0, le=3600)


class Replica(Model):
    slot: str = Field(pattern=SLOT_PATTERN)
    lag_gate: bool = True
    consistency_check: bool = True


class Pooler(Model):
    """PgBouncer, the only way applications reach PostgreSQL during a switchover."""

    server: str = Field(pattern=NAME_PATTERN)
    port: Annotated[int, between(1, 65535)] = Field(default=6432)
    pool_mode: Literal["transaction", "session"] = "transaction"
    pause_timeout_seconds: float = Field(default=DEFAULT_PAUSE_TIMEOUT_SECONDS, gt=0, le=120)


class Switchover(Model):
    """Records that the primary moved ``from`` one server to the current primary."""

    from_: str = Field(alias="from", pattern=NAME_PATTERN)


class Database(Model):
    name: str = Field(default="bazbii", pattern=IDENTIFIER_PATTERN)
    user: str = Field(default="bazbii", pattern=IDENTIFIER_PATTERN)
    replication_user: str = Field(default="replicator", pattern=IDENTIFIER_PATTERN)
    port: Annotated[int, between(1, 65535)] = Field(default=5432)
    version: Literal[SUPPORTED_PG_VERSIONS] = DEFAULT_PG_VERSION  # type: ignore[valid-type]
    primary: str = Field(pattern=NAME_PATTERN)
    replicas: dict[str, Replica] = Field(default_factory=dict)
    pooler: Pooler
    app_connection: Literal["pooler", "direct"] = "pooler"
    lag_gate: LagGate = Field(default_factory=LagGate)
    switchover: Optional[Switchover] = None
    retired: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _primary_is_not_a_replica(self) -> "Database":
        if self.primary in self.replicas:
            raise ValueError(f"primary {self.primary!r} cannot also be listed under replicas")
        slots = [r.slot for r in self.replicas.values()]
        if len(set(slots)) != len(slots):
            raise ValueError("replication slot names must be unique")
        if self.primary in self.retired:
            raise ValueError(f"primary {self.primary!r} cannot be retired")
        return self


# --------------------------------------------------------------------------- gateway
class Tunnel(Model):
    name: str = Field(pattern=NAME_PATTERN)


class Gateway(Model):
    image: ImageRef
    port: Annotated[int, between(1, 65535)] = Field(default=8080)
    health_path: str = Field(default="/healthz", pattern=PATH_PATTERN)
    tunnel: Tunnel
    # Where the gateway runs is not listed here: it runs on every server with the "gateway" role.


# --------------------------------------------------------------------------- traffic
class Monitor(Model):
    type: Literal["http", "https"] = "https"
    path: str = Field(default="/healthz", pattern=PATH_PATTERN)
    expected_codes: str = Field(default="200", pattern=pattern(r"^[1-5]([0-9]{2}|xx)$",
                                                               "an HTTP status or class, e.g. 200 or 2xx"))
    interval: Annotated[int, between(10, 3600)] = Field(default=60)
    timeout: Annotated[int, between(1, 10)] = Field(default=5)
    retries: Annotated[int, between(0, 5)] = Field(default=2)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> "Monitor":
        if self.timeout >= self.interval:
            raise ValueError("timeout must be shorter than interval")
        return self


class Pool(Model):
    """One Cloudflare load-balancer pool: the gateway on one server, reached through its tunnel."""

    server: str = Field(pattern=NAME_PATTERN)
    weight: Annotated[int, between(0, 100)] = Field(description="percent of traffic")
    monitored: bool = True


class Traffic(Model):
    hostname: str = Field(pattern=HOSTNAME_PATTERN)
    steering: Literal["random"] = "random"
    session_affinity: Literal["none", "cookie"] = "none"
    monitor: Monitor = Field(default_factory=Monitor)
    pools: dict[str, Pool]

    @model_validator(mode="after")
    def _weights_sum_to_100(self) -> "Traffic":
        if not self.pools:
            raise ValueError("at least one pool is required")
        total = sum(p.weight for p in self.pools.values())
        if total != 100:
            raise ValueError(f"pool weights are percentages and must sum to 100 (got {total})")
        return self


# --------------------------------------------------------------------------- dns
class DnsRecord(Model):
    name: str = Field(pattern=pattern(r"^(@|[a-z0-9*]([a-z0-9.-]{0,61}[a-z0-9])?)$",
                                      "'@' or a lowercase record name (letters, digits, '.', '-', '*')"))
    type: Literal["A", "AAAA", "CNAME", "TXT"]
    content: str = Field(min_length=1)
    ttl: int = Field(description="seconds; 1 means automatic (required for proxied records)")
    proxied: bool = False

    @field_validator("ttl")
    @classmethod
    def _ttl_range(cls, value: int) -> int:
        if value != 1 and not 60 <= value <= 86400:
            raise ValueError("must be 1 (automatic) or 60..86400")
        return value

    @model_validator(mode="after")
    def _content_and_proxy(self) -> "DnsRecord":
        if self.proxied and self.ttl != 1:
            raise ValueError("proxied records always use TTL 1 (automatic); move them with load-balancer weights")
        if self.type in ("A", "AAAA"):
            try:
                ip = ipaddress.ip_address(self.content)
            except ValueError:
                raise ValueError(f"content of an {self.type} record must be an IP address") from None
            if (ip.version == 4) != (self.type == "A"):
                raise ValueError(f"content {self.content} does not match record type {self.type}")
        return self


class Dns(Model):
    records: dict[str, DnsRecord] = Field(default_factory=dict)


# --------------------------------------------------------------------------- kubernetes app
IntOrPercent = Union[int, str]


class Rollout(Model):
    max_surge: IntOrPercent = 1
    max_unavailable: IntOrPercent = 0
    min_ready_seconds: Annotated[int, between(0, 600)] = Field(default=10)
    progress_deadline_seconds: Annotated[int, between(30, 3600)] = Field(default=120)
    revision_history_limit: Annotated[int, between(0, 50)] = Field(default=5)
    drain_seconds: Annotated[int, between(0, 600)] = Field(default=DEFAULT_DRAIN_SECONDS, description="preStop sleep while endpoints drain")
    termination_grace_period_seconds: Annotated[int, between(1, 3600)] = Field(default=45)
    readiness_path: str = Field(default="/readyz", pattern=PATH_PATTERN)
    pdb_max_unavailable: int = Field(default=1, ge=0)

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _int_or_percent(cls, value: IntOrPercent) -> IntOrPercent:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must be >= 0")
            return value
        if not re.fullmatch(r"(100|[1-9]?[0-9])%", value):
            raise ValueError("must be an integer or a percentage like '25%'")
        return value


class Workload(Model):
    image: ImageRef
    replicas: Annotated[int, between(0, 100)]
    port: Annotated[int, between(1, 65535)] = Field(default=8080)


class Worker(Workload):
    # Kept, false, so that the state of records exported while it existed still compares equal: the migration
    # runner quiets the workers itself while it runs a stage and brings them back (components/schema_release.py).
    quiet: bool = Field(default=False, description="retired: the migration runner quiets the workers itself")

    @field_validator("quiet")
    @classmethod
    def _runner_quiets(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "the migration runner quiets the workers itself while it runs a stage and brings them back "
                "afterwards; a plan that keeps them quiet stops the job queue: remove this key (to retire the "
                "workers, set app.worker.replicas to 0 in a step of its own)")
        return value


class Canary(Model):
    image: ImageRef
    weight: Annotated[int, between(0, 100)] = Field(description="percent of API pods running the canary image")


class App(Model):
    namespace: str = Field(default="bazbii", pattern=pattern(
        r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        "a Kubernetes namespace: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63"))
    api: Workload
    worker: Worker
    canary: Optional[Canary] = None
    rollout: Rollout = Field(default_factory=Rollout)

    @model_validator(mode="after")
    def _canary_fits(self) -> "App":
        if self.canary is not None and self.canary.weight > 0 and self.api.replicas < 2:
            raise ValueError("a canary needs api.replicas >= 2 so that stable pods keep serving")
        return self


# --------------------------------------------------------------------------- schema
class SchemaMigration(Model):
    id: str = Field(pattern=pattern(r"^[0-9]{4}_[a-z0-9_]{0,57}[a-z0-9]$", "a migration id: 4 digits, '_', lowercase "
                                    "letters, digits and '_', e.g. 0002_add_category (at most 63, ending with a letter or digit)"))  # also a Kubernetes label value: <= 63, ends alphanumeric
    stage: Literal["expand", "migrate", "contract"]
    contract_requires_app_version: str = Field(pattern=RELEASE_VERSION_PATTERN)


class Schema(Model):
    runner: Literal["job", "ssh"] = "job"  # ssh: the runner CLI on the pooler host, over SSH
    migrations_dir: str = "migrations"
    migration: Optional[SchemaMigration] = None



# --------------------------------------------------------------------------- feature flags
FLAG_NAME_PATTERN = pattern(r"^[a-z][a-z0-9_]{0,62}$",
                            "a flag name of lowercase letters, digits and '_', starting with a letter, at most 63 long")
MIGRATION_ID_PATTERN = pattern(r"^[0-9]{4}_[a-z0-9_]+$",
                               "a migration id: 4 digits, '_', lowercase letters, digits and '_', e.g. 0002_add_category")


class SchemaPoint(Model):
    """A point of the schema track, as the ``schema.migration`` state names it: migration id and stage."""

    migration: str = Field(pattern=MIGRATION_ID_PATTERN)
    stage: Literal["expand", "migrate", "contract"]


class OldPath(Model):
    """What users outside a flag's cohort get (the old code path), and what removes it for good."""

    description: str = Field(min_length=1, description="what the old path does, for reviewers")
    dropped_by: Optional[str] = Field(
        default=None, pattern=MIGRATION_ID_PATTERN,
        description="the migration whose contract removes what the old path needs (its column, NULLs, ...)")
    removed: bool = Field(default=False, description="the old code path is gone: the flag is on for everyone, for good")


class Flag(Model):
    """One feature flag: on for users whose ``id % 100`` is below ``rollout`` (bazbii_plan.flags.in_cohort)."""

    rollout: Annotated[int, between(0, 100)] = Field(description="percent of users (id % 100 < rollout)")
    min_app_version: str = Field(pattern=RELEASE_VERSION_PATTERN, description="the first app version that reads this flag")
    needs_schema: Optional[SchemaPoint] = Field(default=None, description="schema point at or past which it may be on")
    soak_hours: float = Field(default=24.0, gt=0, le=24 * 90, description="time at 100 % before its old path may go")
    old_path: OldPath

    @model_validator(mode="after")
    def _removed_means_everyone(self) -> "Flag":
        if self.old_path.removed and self.rollout != 100:
            raise ValueError("oldPath.removed needs rollout 100 (users outside the cohort would have no path left)")
        return self

# --------------------------------------------------------------------------- rollback
class Rollback(Model):
    """Triggers that send a step back to the previous one."""

    max_error_rate: float = Field(default=0.01, gt=0, lt=1)
    p95_target_ms: int = Field(default=300, ge=1)
    p95_factor: float = Field(default=2.0, gt=1)


# --------------------------------------------------------------------------- the whole state
def _names_match(value: dict, regex: str, what: str) -> dict:
    """The keys of a map of named things (servers, flags) all match ``regex`` (a registered pattern)."""
    for name in value:
        if not re.fullmatch(regex, name):
            raise ValueError(f"{what} name {name!r} must be {PATTERN_WORDS.get(regex, 'like ' + regex)}")
    return value


class StackState(Model):
    """The full desired state for one combination of current steps."""

    cloudflare: Cloudflare
    servers: dict[str, Server]
    database: Database
    gateway: Gateway
    traffic: Traffic
    dns: Dns = Field(default_factory=Dns)
    app: App
    schema_: Schema = Field(default_factory=Schema, alias="schema")
    rollback: Rollback = Field(default_factory=Rollback)
    flags: dict[str, Flag] = Field(default_factory=dict, description="feature flags by name (the flags track)")

    @field_validator("servers")
    @classmethod
    def _server_names(cls, value: dict[str, Server]) -> dict[str, Server]:
        return _names_match(value, NAME_PATTERN, "server")

    @field_validator("flags")
    @classmethod
    def _flag_names(cls, value: dict[str, Flag]) -> dict[str, Flag]:
        return _names_match(value, FLAG_NAME_PATTERN, "flag")

    def to_config(self) -> dict:
        """The camelCase plain-data form, as written in the stack file and seen by policies."""
        return self.model_dump(by_alias=True, mode="json")


STATE_SECTIONS: tuple[str, ...] = tuple(
    (field.alias or name) for name, field in StackState.model_fields.items()
)
