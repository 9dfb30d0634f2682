"""Which track pointers an update moves, and how far: the one definition every layer reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Move:
    track: str
    before: str
    after: str
    distance: int  # +1 forward one step, -1 back one step, 0 unchanged

    @property
    def is_rollback(self) -> bool:
        return self.distance == -1


def moves(step_names: dict[str, list[str]], previous: dict[str, str], target: dict[str, str]) -> list[Move]:
    """The tracks whose step differs, with how far they moved (None-safe for unknown names)."""
    out = []
    for track, names in step_names.items():
        before, after = previous.get(track), target.get(track)
        if before == after:
            continue
        if before in names and after in names:
            out.append(Move(track, before, after, names.index(after) - names.index(before)))
        else:
            out.append(Move(track, str(before), str(after), 0))
    return out


def describe_moves(step_names: dict[str, list[str]], previous: Optional[dict[str, str]], target: dict[str, str]) -> str:
    """``infra traffic-10 -> traffic-50`` for the tracks that move (empty when none does, or nothing is applied)."""
    if previous is None:
        return ""
    return ", ".join(f"{m.track} {m.before} -> {m.after}" for m in moves(step_names, previous, target))
