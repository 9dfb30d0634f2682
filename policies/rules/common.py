"""Shared vocabulary of the rules: findings, the phase gate's transition, config readers.

Every rule is a pure function over plain data (dicts as the program registers
them, camelCase) that returns a list of :class:`Finding`. The policy objects in
:mod:`policies.pack` extract that data from CrossGuard's arguments, call the
rule and report each finding as ``"<rule>: <what is wrong>. Fix: <how>"``.

Reading values. CrossGuard wraps props in a proxy that raises
``UnknownValueError`` when a value that is unknown at preview is *read*; the
SDK then downgrades the policy to an advisory diagnostic for that run. The
rules therefore read as little as possible, and every MANDATORY decision is
taken on values the program derives from stack config (the phase gate), which
are always known at preview.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, Optional

from bazbii_plan.facts import GATE_MARKER, GATE_TYPE, image_tag, parse_version  # noqa: F401  (re-exported to the rules)
from bazbii_plan.judging import Judging
from bazbii_plan.record import applied_digests
from bazbii_plan.timegates import fmt, number  # noqa: F401  (the rules' shared number helpers)
from bazbii_plan.moves import Move, describe_moves, moves
from bazbii_plan.transitions import is_one_step_rollback



@dataclass(frozen=True)
class Finding:
    """One violation: ``what`` is wrong (naming the thing), ``fix`` says how to make it pass."""

    what: str
    fix: str
    urn: Optional[str] = None  # stack policies: the resource to attach the violation to

    def render(self, rule: str) -> str:
        return f"{rule}: {self.what}. Fix: {self.fix}"


# --------------------------------------------------------------------------- plain data
class _Unknown:
    """Placeholder for a value that is unknown at preview (see :func:`plain`)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown>"

    def __bool__(self) -> bool:  # never mistake an unknown for a real value
        return False


UNKNOWN = _Unknown()


def plain(value: Any, strict: bool = True) -> Any:
    """A deep plain-dict/list copy of a (possibly proxied) CrossGuard value.

    ``strict``: reading an unknown value raises ``UnknownValueError`` (the SDK
    turns that into an advisory "can't run during preview"). Non-strict: the
    unknown value is replaced by :data:`UNKNOWN` so the rule can decide whether
    it matters.
    """
    if isinstance(value, Mapping):
        out = {}
        for key in list(value.__iter__()):
            out[key] = plain(_item(value, key, strict), strict)
        return out
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Sequence):
        return [plain(_item(value, index, strict), strict) for index in range(len(value))]
    return value


def _item(container: Any, key: Any, strict: bool) -> Any:
    if strict:
        return container[key]
    try:
        return container[key]
    except Exception as exc:  # pulumi_policy.proxy.UnknownValueError, without importing the SDK here
        if type(exc).__name__ == "UnknownValueError":
            return UNKNOWN
        raise


def has_key(mapping: Any, key: str) -> bool:
    """Whether ``key`` is present, without reading its (possibly unknown) value."""
    return isinstance(mapping, Mapping) and key in list(mapping.__iter__())


def peek(mapping: Any, key: str, default: Any = None) -> Any:
    """``mapping[key]``, or :data:`UNKNOWN` when that value is unknown at preview (never raises for it)."""
    if not has_key(mapping, key):
        return default
    return _item(mapping, key, strict=False)


def dig(data: Any, *path: Any, default: Any = None) -> Any:
    node = data
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            return default
    return node


# --------------------------------------------------------------------------- policy config
def cfg_number(config: Mapping[str, Any], key: str, default: float) -> float:
    value = number(config.get(key)) if config else None
    return default if value is None else value


def cfg_ladder(config: Mapping[str, Any], key: str, default: Sequence[int]) -> list[int]:
    """A weight ladder: sorted distinct ints that always include 0 and 100."""
    raw = config.get(key) if config else None
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raw = default
    rungs = {int(round(v)) for v in (number(x) for x in raw) if v is not None and 0 <= v <= 100}
    return sorted(rungs | {0, 100})


def next_rung(ladder: Sequence[int], weight: float) -> int:
    """The first rung strictly above ``weight`` (100 when already at or above the top)."""
    for rung in ladder:
        if rung > weight:
            return rung
    return ladder[-1]


def rung_passed(ladder: Sequence[int], old: float, new: float) -> Optional[int]:
    """The next rung above ``old`` when ``new`` rises past it (a skipped rung), else None; decreases are free."""
    rung = next_rung(ladder, old)
    return rung if new > old and new > rung else None


# --------------------------------------------------------------------------- the transition check
def is_gate(resource_type: str, props: Any) -> bool:
    """Whether this resource is the transition check (registered first; every gate policy reads it)."""
    if resource_type != GATE_TYPE or not isinstance(props, Mapping):
        return False
    return has_key(props, "gate") and props["gate"] == GATE_MARKER


@dataclass(frozen=True)
class Transition:
    """The transition check's view of this update: last applied record -> target record.

    ``now`` is when the policy judges (never a resource input: an input that changes
    between preview and update breaks ``pulumi up --plan``).
    """

    step_names: dict[str, list[str]]
    target: dict[str, Any]
    previous: Optional[dict[str, Any]]
    previous_source: str
    override: Optional[str]
    now: datetime
    step_requires: Optional[dict[str, dict[str, dict[str, str]]]] = None
    step_digests: Optional[dict[str, list[list[str]]]] = None
    track_keys: Optional[dict[str, str]] = None  # track -> its step key (bazbii:<key>), for fixes that name it

    @classmethod
    def from_gate(cls, props: Any, now: Optional[datetime] = None) -> "Transition":
        """Build from the check's props. Every value read here is config-derived, hence known at preview."""
        return cls.from_data(plain(props), now)

    @classmethod
    def from_data(cls, data: dict[str, Any], now: Optional[datetime] = None) -> "Transition":
        """Build from the check's props as plain data of the caller's own (kept, not copied)."""
        previous = data.get("previous")
        if not (isinstance(previous, dict) and isinstance(previous.get("state"), dict)
                and isinstance(previous.get("steps"), dict)):
            previous = None
        return cls(
            step_names={k: list(v) for k, v in (data.get("stepNames") or {}).items()},
            target=data.get("target") or {},
            previous=previous,
            previous_source=str(data.get("previousSource") or "none"),
            override=data.get("override") or None,
            now=now or datetime.now(timezone.utc),
            step_requires=data.get("stepRequires"),
            step_digests=data.get("stepDigests"),
            track_keys=data.get("trackKeys"),
        )

    @property
    def applied_digests(self) -> Optional[dict[str, list[list[str]]]]:
        return applied_digests(self.previous)

    # --- what judges the steps (bazbii_plan.judging) -------------------
    @cached_property
    def applied_judging(self) -> Optional[Judging]:
        """How steps are judged, as the applied record says (None: it predates ``judgedBy``)."""
        return Judging.of_record(self.previous)

    @cached_property
    def target_judging(self) -> Optional[Judging]:
        """How steps are judged, as this update proposes (what the next update will be judged by)."""
        return Judging.of_record(self.target)

    # --- states -------------------------------------------------------
    @property
    def target_state(self) -> dict[str, Any]:
        return self.target.get("state") or {}

    @property
    def previous_state(self) -> Optional[dict[str, Any]]:
        return self.previous.get("state") if self.previous else None

    @property
    def target_steps(self) -> dict[str, str]:
        return self.target.get("steps") or {}

    @property
    def previous_steps(self) -> Optional[dict[str, str]]:
        return self.previous.get("steps") if self.previous else None

    # --- moves --------------------------------------------------------
    def moves(self) -> list[Move]:
        if self.previous is None:
            return []
        return moves(self.step_names, self.previous_steps or {}, self.target_steps)

    @property
    def is_rollback(self) -> bool:
        """Exactly one track goes back exactly one step: the target is a state that was already checked."""
        return is_one_step_rollback(self.step_names, self.previous_steps, self.target_steps)

    def moving_description(self) -> str:
        return describe_moves(self.step_names, self.previous_steps, self.target_steps) or "no track moves"


# --------------------------------------------------------------------------- images
# Image tags and versions have one meaning everywhere: bazbii_plan.facts.
