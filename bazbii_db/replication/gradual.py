"""Gradual connection move for clients that do *not* go through PgBouncer.

The migration plan asks to move the API's connections "starting with part of
the pool". With PgBouncer in the path this is unnecessary: PAUSE makes the
switch atomic for every client at once (see :mod:`.switchover`). Without a
pooler, the application holds two direct pools and moves a growing share of
checkouts (10 % -> 50 % -> 100 %) from the old to the new server, watching the
new side's error rate and latency at each step and rolling back to 0 % when
they exceed the limits (the plan's rollback rule: error rate above 1 %).

The trade-off, stated plainly:

* Only **read** traffic can move gradually before the switchover: the replica
  is read-only, and readers on it see data up to the replication lag (stale
  reads). This is useful to warm the new server's cache and prove it answers.
* **Writes cannot be split.** Two writable primaries at once means divergent
  data. Writers must move in one step at promotion: a multi-host DSN with
  ``target_session_attrs=read-write`` plus retries. Every transaction in flight
  at the switch fails and must be retried by the application, and the write
  stall is the shutdown + promotion + reconnect time (the ``naive`` mode of
  ``bench/bench_switchover.py``: several failed transactions and ~0.4 s).
* After promotion, connections of the old share still reach the fenced old
  primary: their writes fail read-only until they are recycled. A gradual
  write move therefore converts the stall into errors; it is never better than
  PgBouncer's PAUSE, which is why the planned switchover requires PgBouncer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import psycopg
from psycopg_pool import ConnectionPool


@dataclass
class TargetStats:
    ok: int = 0
    errors: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=5000))

    def snapshot(self) -> dict:
        lat = sorted(self.latencies_ms)
        p95 = lat[int(0.95 * (len(lat) - 1))] if lat else None
        total = self.ok + self.errors
        return {"ok": self.ok, "errors": self.errors, "requests": total,
                "error_rate": (self.errors / total) if total else 0.0, "p95_ms": p95}


class WeightedPools:
    """Two direct pools; ``share`` of checkouts go to the new server (smooth, deterministic split)."""

    def __init__(self, old_dsn: str, new_dsn: str, *, min_size: int = 1, max_size: int = 4, timeout: float = 5.0):
        kwargs = {"autocommit": True, "prepare_threshold": None}
        self.pools = {
            "old": ConnectionPool(old_dsn, min_size=min_size, max_size=max_size, kwargs=kwargs, timeout=timeout,
                                  open=True, name="bazbii-old"),
            "new": ConnectionPool(new_dsn, min_size=0, max_size=max_size, kwargs=kwargs, timeout=timeout,
                                  open=True, name="bazbii-new"),
        }
        self._share = 0.0
        self._credit = 0.0
        self._lock = threading.Lock()
        self.stats = {"old": TargetStats(), "new": TargetStats()}

    @property
    def share(self) -> float:
        return self._share

    def set_share(self, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError("share must be within [0, 1]")
        with self._lock:
            self._share = share
            self._credit = 0.0

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = {"old": TargetStats(), "new": TargetStats()}

    def _pick(self) -> str:
        with self._lock:
            self._credit += self._share
            if self._credit >= 1.0 - 1e-9:
                self._credit -= 1.0
                return "new"
            return "old"

    @contextmanager
    def connection(self) -> Iterator[tuple[psycopg.Connection, str]]:
        """Check out a connection from the side chosen by the current share; records outcome and latency."""
        target = self._pick()
        start = time.monotonic()
        stats = self.stats[target]
        try:
            with self.pools[target].connection() as conn:
                yield conn, target
        except Exception:
            with self._lock:
                stats.errors += 1
            raise
        with self._lock:
            stats.ok += 1
            stats.latencies_ms.append((time.monotonic() - start) * 1000.0)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close(timeout=5)


@dataclass
class MoveStep:
    share: float
    new: dict
    old: dict
    passed: bool
    reason: str


@dataclass
class GradualMoveReport:
    completed: bool
    rolled_back: bool
    final_share: float
    steps: list[MoveStep]
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def gradual_move(pools: WeightedPools, *, steps: tuple[float, ...] = (0.1, 0.5, 1.0), hold_seconds: float = 60.0,
                 max_error_rate: float = 0.01, max_p95_ms: float | None = None, min_requests: int = 20,
                 sleep: Callable[[float], None] = time.sleep) -> GradualMoveReport:
    """Raise the new server's share step by step while live traffic flows through ``pools``.

    After each hold the new side must have served at least ``min_requests`` with an error rate
    <= ``max_error_rate`` (and p95 <= ``max_p95_ms`` when given); otherwise the share goes back
    to 0 (everything on the old server) and the report says which step failed and why.
    """
    done: list[MoveStep] = []
    for share in steps:
        pools.reset_stats()
        pools.set_share(share)
        sleep(hold_seconds)
        new, old = pools.stats["new"].snapshot(), pools.stats["old"].snapshot()
        reason = ""
        if new["requests"] < min_requests:
            reason = f"only {new['requests']} requests reached the new server at {share:.0%} (need {min_requests})"
        elif new["error_rate"] > max_error_rate:
            reason = f"new server error rate {new['error_rate']:.1%} > {max_error_rate:.1%} at {share:.0%}"
        elif max_p95_ms is not None and new["p95_ms"] is not None and new["p95_ms"] > max_p95_ms:
            reason = f"new server p95 {new['p95_ms']:.1f} ms > {max_p95_ms:.1f} ms at {share:.0%}"
        done.append(MoveStep(share=share, new=new, old=old, passed=not reason, reason=reason or "ok"))
        if reason:
            pools.set_share(0.0)
            return GradualMoveReport(completed=False, rolled_back=True, final_share=0.0, steps=done,
                                     reason=f"rolled back to 0%: {reason}")
    return GradualMoveReport(completed=True, rolled_back=False, final_share=pools.share, steps=done,
                             reason="all steps within limits")
