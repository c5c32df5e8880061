"""Quantiles only from enough observations: windows with too few are pooled with the next.

The q-quantile of n observations is set by the data only when about one of them is
expected above it, ``n * (1 - q) >= 1``. Below that, the "p99" of five calls is their
maximum: it measures how many calls there were, not how slow they were, and on a
heavy-tailed latency it is the noisiest series the sidecar derives (at low traffic it
raised most false opens of ``benchmarks/traces.py`` and ``benchmarks/histograms.py``). So
each quantile of a series is emitted once the observations since its last emission number
at least ``ceil(1 / (1 - q))``: 2 for p50, 20 for p95, 100 for p99. A busy window emits
every quantile at once; quiet windows are pooled with the next ones, for at most
``max_span_ns`` of event time, after which the oldest are dropped: too few calls for a
quantile is reported as no point, never as a number.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

Sample = TypeVar("Sample")

MAX_SPAN_S = 300.0
"""Event time one pooled quantile may cover: five minutes, the range Grafana's latency
panels usually take a histogram's rate over. An operation with fewer than 100 calls in
five minutes has no p99 series."""


def observations_needed(q: float) -> int:
    """Observations for which about one is expected above the q-quantile.

    >>> [observations_needed(q) for q in (0.5, 0.95, 0.99)]
    [2, 20, 100]
    """
    if not 0.0 < q < 1.0:
        msg = f"quantile must be in (0, 1); got {q}"
        raise ValueError(msg)
    return math.ceil(1.0 / (1.0 - q) - 1e-9)


class QuantilePools(Generic[Sample]):
    """Per series, the observations each quantile has not been emitted from yet.

    ``add`` takes one window's sample (its observation count and whatever the caller
    computes quantiles from) and returns, per quantile that has enough now, the samples to
    compute it from; the caller merges them.

    Examples
    --------
    >>> pools = QuantilePools((0.5, 0.99), max_span_ns=300)
    >>> pools.add("op", 10, 1, "a")  # one call: not enough for any quantile
    []
    >>> pools.add("op", 20, 3, "b")  # p50 from both windows; p99 keeps waiting
    [(0, ['a', 'b'])]
    >>> pools.add("op", 400, 120, "c")  # "a" and "b" are too old for the p99 now
    [(0, ['c']), (1, ['c'])]
    """

    def __init__(self, quantiles: Sequence[float], max_span_ns: int) -> None:
        self.needed = tuple(observations_needed(q) for q in quantiles)
        self.max_span_ns = max_span_ns
        self._most_needed = max(self.needed, default=0)
        # Per series: its pending windows (event time, observations, sample), and per
        # quantile the index of the first window it has not been emitted from.
        self._pools: dict[Hashable, tuple[list[tuple[int, float, Sample]], list[int]]] = {}
        self._swept_at: int | None = None

    def __len__(self) -> int:
        return len(self._pools)

    def add(self, key: Hashable, ts: int, count: float,
            sample: Sample) -> list[tuple[int, list[Sample]]]:
        """Pool one window of ``key``; the quantiles (by index) that are ready, with samples."""
        pool = self._pools.get(key)
        if pool is None and count >= self._most_needed:  # a busy window: every quantile
            self._sweep(ts)
            return [(i, [sample]) for i in range(len(self.needed))]
        entries, starts = pool or ([], [0] * len(self.needed))
        entries.append((int(ts), float(count), sample))
        oldest = ts - self.max_span_ns
        ready: list[tuple[int, list[Sample]]] = []
        for i, needed in enumerate(self.needed):
            start = starts[i]
            while entries[start][0] <= oldest:  # the newest entry is never too old
                start += 1
            if sum(n for _, n, _ in entries[start:]) >= needed:
                ready.append((i, [s for _, _, s in entries[start:]]))
                start = len(entries)
            starts[i] = start
        done = min(starts)
        if done == len(entries):
            self._pools.pop(key, None)
        else:
            del entries[:done]
            self._pools[key] = (entries, [s - done for s in starts])
        self._sweep(ts)
        return ready

    def _sweep(self, now: int) -> None:
        # Series that stopped reporting would otherwise keep their pools forever.
        if self._swept_at is not None and now - self._swept_at < self.max_span_ns:
            return
        self._swept_at = now
        oldest = now - self.max_span_ns
        stale = [key for key, (entries, _) in self._pools.items() if entries[-1][0] <= oldest]
        for key in stale:
            del self._pools[key]

    def state_dict(self) -> dict[str, Any]:
        """The pending windows of every series."""
        return {"pools": [(key, list(entries), list(starts))
                          for key, (entries, starts) in self._pools.items()],
                "swept_at": self._swept_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        self._pools = {
            key: ([(int(ts), float(n), sample) for ts, n, sample in entries],
                  [int(s) for s in starts])
            for key, entries, starts in state["pools"]
        }
        swept_at = state["swept_at"]
        self._swept_at = None if swept_at is None else int(swept_at)
