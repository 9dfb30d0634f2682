"""What the backfill's batches cost the application: slow requests per second of batches, counted
from which requests overlapped a batch.

Measured on the benchmark (docs/schema-migrations.md, "What a batch costs"): the requests that ran
while no batch did were slow (over 1.5x the baseline p99) at about the baseline's own share,
0.2-0.6 %, at every fixed setting from 33 to 22,000 rows/s; the backfill's effect was on the
requests that overlapped a batch, 9-18 % of which were slow. So the slow requests the batches add
can be counted: those among the overlapping requests beyond the share of the others in the same
quarter window. Per second of batches, pooled over a horizon of hundreds of batches, this cost
came out 90-210 at every setting of one day, where the share of slow requests in a 2 s window swung
with the batches' own impact (0.4-1.9 % at one fixed setting).

With the cost known, the rate is arithmetic: the aimed-at share of slow requests, less the share
that is slow anyway, times the requests per second, is how many slow requests a second the
backfill may add; over the cost of a second of batches, the share of the time batches may run.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

SLOW_BUSY, BUSY, SLOW_IDLE, IDLE = range(4)  # the columns of a bin (throttle.overlap_by_bin)


@dataclass(frozen=True)
class BatchCost:
    per_batch_second: float  # the slow requests a second of batches adds
    error: float  # its standard error (from the spread between bins; never under the Poisson error)
    background: float  # the share of requests slow while no batch ran, over the horizon
    requests_per_s: float

    def plain(self, z: float) -> bool:
        """The batches plainly cost slow requests: ``z`` standard errors over none."""
        return self.per_batch_second - z * self.error > 0

    def duty(self, share: float, background: float) -> float:
        """The share of the time batches may run and keep the share of slow requests at ``share``,
        where ``background`` is slow with no batch running: the slow requests the backfill may add a
        second, over what a second of batches adds (0: the background alone is over it)."""
        room = max(0.0, share - background) * self.requests_per_s
        return room / self.per_batch_second if self.per_batch_second > 0 else math.inf


class CostLedger:
    """One source's counts per ``bin_s`` bin, with the time batches ran that ended in it; each bin
    counted once, as it completes, and kept for ``horizon_s``: the cost is a property of the
    batches, the machine and the load, pooled over hundreds of batches."""

    def __init__(self, since: float, bin_s: float, horizon_s: float):
        self.cursor, self.bin_s, self.horizon_s = since, bin_s, horizon_s
        self.bins: deque[tuple[float, list[int], float]] = deque()  # (bin start, counts, batch seconds)

    def account(self, count: Callable[[float], list[list[int]]], spans: Sequence[tuple[float, float]],
                now: float) -> None:
        """Take the bins completed since the last call: ``count(since)`` gives the source's bins
        (``throttle.overlap_by_bin``); the last one may still fill, and is taken next time. ``spans``:
        the batches' (start, end), in time order."""
        complete = count(self.cursor)[:-1]
        ends = [end for _, end in spans]
        for k, counts in enumerate(complete):
            start = self.cursor + k * self.bin_s
            ran = spans[bisect_left(ends, start):bisect_left(ends, start + self.bin_s)]
            self.bins.append((start, counts, sum(end - begin for begin, end in ran)))
        self.cursor += len(complete) * self.bin_s
        while self.bins and self.bins[0][0] < now - self.horizon_s:
            self.bins.popleft()

    def cost(self) -> BatchCost | None:
        """What a second of batches costs over the horizon; None before any batch or request."""
        ran = sum(b for _, _, b in self.bins)
        requests = sum(c[BUSY] + c[IDLE] for _, c, _ in self.bins)
        if not ran or not requests:
            return None
        idle = sum(c[IDLE] for _, c, _ in self.bins)
        background = sum(c[SLOW_IDLE] for _, c, _ in self.bins) / idle if idle else 0.0
        # each bin's busy requests against the same bin's idle ones: a burst from elsewhere lands on both
        excess = [(c[SLOW_BUSY] - c[BUSY] * (c[SLOW_IDLE] / c[IDLE] if c[IDLE] else background), b)
                  for _, c, b in self.bins]
        per_batch_second = sum(e for e, _ in excess) / ran
        error = math.sqrt(max(sum(c[SLOW_BUSY] for _, c, _ in self.bins), 1.0)) / ran  # Poisson
        spread = spread_error(excess, per_batch_second)  # slow requests come in bursts: where it is wider
        error = error if spread is None else max(spread, error)
        # requests a second while there were requests: a stretch with none (the source's samples lost
        # while the backfill waited on a lag or lock-wait throttle) is no quieter application
        served = sum(1 for _, c, _ in self.bins if c[BUSY] + c[IDLE])
        return BatchCost(per_batch_second, error, background, requests / (served * self.bin_s))


def spread_error(bins: Sequence[tuple[float, float]], ratio: float) -> float | None:
    """The standard error of ``ratio``, the sum of the bins' numerators over the sum of their
    denominators, from the spread between the (numerator, denominator) ``bins``: slow requests come
    in bursts, so they are not independent; None under two bins."""
    n = len(bins)
    if n < 2:
        return None
    return math.sqrt(n / (n - 1) * sum((k - ratio * d) ** 2 for k, d in bins)) / sum(d for _, d in bins)
