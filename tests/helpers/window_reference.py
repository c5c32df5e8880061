"""The event-time windows item by item, as ``WindowAggregator`` kept them before it counted
them in columns: a dict of cells per window, each cell's durations a list.

Tests compare the product's batched, columnar aggregator with this model: the same items
must give the same ``state_dict`` and the same closed cells (``test_window_batches.py``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otel_anomaly.processors.signals.windows import ClosedCell

_NEVER = -(2**62)
_FORGET_AFTER_NS = 6 * 3600 * 1_000_000_000


@dataclass(slots=True)
class _Cell:
    count: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Source:
    """One source's open windows and how far each of its senders got (event time)."""

    newest: int
    senders: dict[Hashable, int] = field(default_factory=dict)
    open: dict[int, dict[Hashable, _Cell]] = field(default_factory=dict)
    # Ranges of window starts the source did not cover whole: where it went quiet, through
    # where it began again (a straggler may land before the first window it sent to).
    incomplete: list[tuple[int, int]] = field(default_factory=list)
    last_active: dict[Hashable, int] = field(default_factory=dict)
    closed_before: int = _NEVER  # windows starting before this are closed


class ReferenceWindows:
    """Item-by-item windows: the state and closed cells the product must match."""

    def __init__(self, window_ns: int, lateness_ns: int) -> None:
        self.window_ns, self.lateness_ns = window_ns, lateness_ns
        self.zero_fill_windows = 60  # the product's defaults
        self.gap_ns = window_ns + lateness_ns
        self.forget_after_ns = max(_FORGET_AFTER_NS, 60 * window_ns)
        self._sources: dict[Hashable, _Source] = {}
        # Insertion-ordered, so checkpoints and the close order do not depend on hashing.
        self._touched: dict[Hashable, None] = {}
        self._newest = self._forget_at = _NEVER

    def add(
        self, group: Hashable, ts_unix_nano: int, *, source: Hashable = None,
        sender: Hashable = None, error: bool = False, duration: float | None = None,
    ) -> bool:
        """Count one item; False if its window has closed."""
        start = ts_unix_nano - ts_unix_nano % self.window_ns
        src = self._sources.get(source)
        if src is None:
            src = self._sources[source] = _Source(newest=ts_unix_nano)
            src.incomplete.append((_NEVER, start))
        elif ts_unix_nano > src.newest + self.gap_ns:
            src.incomplete.append((src.newest - src.newest % self.window_ns, start))
        if start < src.closed_before:
            return False
        cells = src.open.get(start)
        if cells is None:
            cells = src.open[start] = {}
        cell = cells.get(group)
        if cell is None:
            cell = cells[group] = _Cell()
        cell.count += 1
        cell.errors += error
        if duration is not None:
            cell.durations.append(duration)
        src.newest = max(src.newest, ts_unix_nano)
        src.senders[sender] = max(src.senders.get(sender, ts_unix_nano), ts_unix_nano)
        self._newest = max(self._newest, ts_unix_nano)
        self._touched[source] = None
        return True

    def close_ready(self) -> list[ClosedCell]:
        """Close the windows their sources' watermarks passed; complete ones, in time order."""
        closed: list[ClosedCell] = []
        touched, self._touched = self._touched, {}
        for source in touched:
            src = self._sources.get(source)
            if src is not None:
                closed += self._close(src)
        self._forget_quiet()
        closed.sort(key=lambda cell: cell.end_unix_nano)
        return closed

    def _close(self, src: _Source) -> list[ClosedCell]:
        # Senders a gap behind the newest stopped: the source no longer waits for them.
        active = src.newest - self.gap_ns
        for sender in [s for s, newest in src.senders.items() if newest < active]:
            del src.senders[sender]
        horizon = min(src.senders.values()) - self.lateness_ns
        closed: list[ClosedCell] = []
        for start in sorted(s for s in src.open if s + self.window_ns <= horizon):
            cells = src.open.pop(start)
            end = start + self.window_ns
            src.closed_before = end
            oldest_active = start - self.zero_fill_windows * self.window_ns
            for group, last in list(src.last_active.items()):
                if group not in cells and last < oldest_active:
                    del src.last_active[group]
            for group, cell in cells.items():
                if cell.count:
                    src.last_active[group] = start
            if any(low <= start <= high for low, high in src.incomplete):
                continue
            for group in sorted(src.last_active, key=repr):
                cell = cells.get(group) or _Cell()
                closed.append(
                    ClosedCell(group, end, cell.count, cell.errors, np.asarray(cell.durations))
                )
        src.incomplete = [(low, high) for low, high in src.incomplete
                          if high >= src.closed_before]
        return closed

    def state_dict(self) -> dict[str, Any]:
        """Every source's open windows and progress; the window settings are not saved."""
        sources = [
            (source, src.newest, list(src.senders.items()),
             [(start, [(group, c.count, c.errors, list(c.durations)) for group, c in cells.items()])
              for start, cells in src.open.items()],
             list(src.incomplete), list(src.last_active.items()), src.closed_before)
            for source, src in self._sources.items()]
        return {"sources": sources, "touched": list(self._touched), "newest": self._newest,
                "forget_at": self._forget_at}

    def _forget_quiet(self) -> None:
        """Drop sources quiet for ``forget_after_ns`` of event time (bounds the memory)."""
        if self._newest < self._forget_at:
            return
        self._forget_at = self._newest + self.forget_after_ns // 10
        oldest = self._newest - self.forget_after_ns
        for source in [s for s, src in self._sources.items() if src.newest < oldest]:
            del self._sources[source]
