"""Event-time tumbling windows: counts, errors and durations per group (spans, log records).

A window closes when the newest timestamp seen (the watermark) passes its end plus the
allowed lateness, so replayed or delayed data is aggregated as it happened. A group seen
recently but absent from a closing window reports a zero count, so a drop in throughput
is visible instead of silent.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(slots=True)
class _Cell:
    count: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClosedCell:
    """One group's aggregate over one closed window."""

    group: Hashable
    end_unix_nano: int
    count: int
    errors: int
    durations: NDArray[np.float64]


class WindowAggregator:
    """Tumbling windows of ``window_ns`` keyed by group.

    Examples
    --------
    >>> agg = WindowAggregator(window_ns=10, lateness_ns=0)
    >>> agg.add("a", 1), agg.add("a", 5, error=True), agg.add("b", 12)
    (True, True, True)
    >>> [(c.group, c.end_unix_nano, c.count, c.errors) for c in agg.close_ready()]
    [('a', 10, 2, 1)]
    >>> agg.add("a", 3)  # its window has closed
    False
    >>> _ = agg.add("b", 25)
    >>> [(c.group, c.end_unix_nano, c.count) for c in agg.close_ready()]
    [('a', 20, 0), ('b', 20, 1)]
    """

    def __init__(self, window_ns: int, lateness_ns: int, zero_fill_windows: int = 60) -> None:
        if window_ns <= 0:
            msg = f"window must be > 0 ns; got {window_ns}"
            raise ValueError(msg)
        self.window_ns = window_ns
        self.lateness_ns = lateness_ns
        self.zero_fill_windows = zero_fill_windows
        self._open: dict[int, dict[Hashable, _Cell]] = {}
        self._last_active: dict[Hashable, int] = {}
        self._closed_before = -(2**62)  # windows starting before this are closed
        self.watermark = -(2**62)

    def add(
        self, group: Hashable, ts_unix_nano: int, *, error: bool = False,
        duration: float | None = None,
    ) -> bool:
        """Count one item; False if its window has already closed (too late)."""
        start = ts_unix_nano - ts_unix_nano % self.window_ns
        if start < self._closed_before:
            return False
        cells = self._open.get(start)
        if cells is None:
            cells = self._open[start] = {}
        cell = cells.get(group)
        if cell is None:
            cell = cells[group] = _Cell()
        cell.count += 1
        cell.errors += error
        if duration is not None:
            cell.durations.append(duration)
        self.watermark = max(self.watermark, ts_unix_nano)
        return True

    def close_ready(self) -> list[ClosedCell]:
        """Close every window the watermark has passed; return their cells in time order."""
        horizon = self.watermark - self.lateness_ns
        ready = sorted(s for s in self._open if s + self.window_ns <= horizon)
        closed: list[ClosedCell] = []
        for start in ready:
            cells = self._open.pop(start)
            end = start + self.window_ns
            oldest_active = start - self.zero_fill_windows * self.window_ns
            for group, last in list(self._last_active.items()):
                if group not in cells and last < oldest_active:
                    del self._last_active[group]
            for group in sorted(set(cells) | set(self._last_active), key=repr):
                cell = cells.get(group) or _Cell()
                if cell.count:
                    self._last_active[group] = start
                closed.append(
                    ClosedCell(group, end, cell.count, cell.errors, np.asarray(cell.durations))
                )
            self._closed_before = end
        return closed
