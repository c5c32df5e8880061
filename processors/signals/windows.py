"""Event-time tumbling windows: counts, errors and durations per group (spans, log records).

Every group belongs to a source (a service), and a source's windows close when its own
watermark passes their end plus the allowed lateness: replayed or delayed data is
aggregated as it happened, and one service's batches never close windows that another
service's batch exporter has not delivered yet. A source's watermark is the oldest of its
senders' (its instances), leaving out a sender more than a gap behind the newest one: a
stopped instance must not hold its service's windows open.

A group seen recently but absent from a closing window of its source reports a zero count:
the source is still reporting, so a drop in throughput is visible instead of silent. A
source that goes quiet closes nothing: its windows wait, and its silence is a signal of its
own, not a rate of zero. A window its source did not cover from start to end is incomplete
and is dropped, not scored: the window a source went quiet in (when it sends again after a
gap of more than a window plus the lateness) and the window it started or resumed in.
Windows still open at shutdown are never closed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

_NEVER = -(2**62)
_NO_NUMBERS = np.zeros(0, np.intp)
_FORGET_AFTER_NS = 6 * 3600 * 1_000_000_000


class _OpenWindow:
    """One open window's items as they came, in chunks (a batch each), by group number.

    Groups are numbered in the order their first item came (as cells were created item
    by item); a window is counted and its durations grouped once, when it closes.
    """

    __slots__ = ("chunks", "groups", "number", "_last_groups", "_last_local")

    def __init__(self) -> None:
        self.number: dict[Hashable, int] = {}
        self.groups: list[Hashable] = []
        # The last batch's list of groups (a sender passes the same list object batch
        # after batch) and its numbers here: a known list's groups are not hashed again.
        self._last_groups: Sequence[Hashable] | None = None
        self._last_local = _NO_NUMBERS
        # Per batch: its items' group numbers, errors and durations (None: not given).
        self.chunks: list[tuple[NDArray[np.intp], NDArray[np.bool_] | None,
                                NDArray[np.float64] | None]] = []

    def numbers(self, groups: Sequence[Hashable], used: NDArray[np.intp],
                ) -> NDArray[np.intp]:
        """Each of ``groups``' number here (-1 where not known yet), numbering new ones in order.

        ``used``: the group indices of the batch's items, in order. The array returned may
        be updated by the next batch that passes the same ``groups``.
        """
        if groups is self._last_groups:
            local = self._last_local
            used = used[local[used] < 0]
            if not len(used):
                return local
        else:
            local = np.full(len(groups), -1, np.intp)
            self._last_groups, self._last_local = groups, local
        distinct, first = np.unique(used, return_index=True)
        number = self.number
        for g in distinct[np.argsort(first)].tolist():
            group = groups[g]
            found = number.get(group)
            if found is None:
                found = number[group] = len(self.groups)
                self.groups.append(group)
            local[g] = found
        return local

    def totals(self) -> tuple[list[int], list[int], list[NDArray[np.float64]]]:
        """Per group number: its items, its errors and its durations in item order."""
        n = len(self.groups)
        ids = [chunk[0] for chunk in self.chunks]
        counts = np.bincount(np.concatenate(ids), minlength=n).tolist()
        errors = np.zeros(n, np.int64)
        for chunk_ids, chunk_errors, _ in self.chunks:
            if chunk_errors is not None:
                errors += np.bincount(chunk_ids[chunk_errors], minlength=n)
        timed = [(chunk_ids, durations) for chunk_ids, _, durations in self.chunks
                 if durations is not None]
        if not timed:
            return counts, errors.tolist(), [_NO_DURATIONS] * n
        timed_ids = np.concatenate([chunk_ids for chunk_ids, _ in timed])
        order = np.argsort(timed_ids, kind="stable")  # stable: each group's items in order
        durations = np.concatenate([d for _, d in timed])[order]
        ends = np.cumsum(np.bincount(timed_ids, minlength=n)).tolist()
        # Copies, not views: a quiet operation's durations wait in its quantile pool for
        # minutes, and a view would keep the whole window's durations alive with them.
        # (Slices, not ``np.split``: its Python steps per part cost 2 us each.)
        return counts, errors.tolist(), [durations[a:b].copy()
                                         for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def cells(self) -> list[tuple[Hashable, int, int, list[float]]]:
        """``(group, count, errors, durations)`` per group, as ``state_dict`` saves them."""
        counts, errors, durations = self.totals()
        return [(group, count, error, d.tolist()) for group, count, error, d
                in zip(self.groups, counts, errors, durations, strict=True)]

    @classmethod
    def of_cells(cls, cells: list[tuple[Hashable, int, int, list[float]]]) -> _OpenWindow:
        """A window holding ``cells`` (``cells()``'s form), one chunk per cell."""
        window = cls()
        for group, count, errors, durations in cells:
            window.number[group] = len(window.groups)
            ids = np.full(int(count), len(window.groups), np.intp)
            window.groups.append(group)
            flags = np.arange(int(count)) < int(errors)
            timed = len(durations)  # items added without a duration come after (none, here)
            if timed:
                window.chunks.append((ids[:timed], flags[:timed],
                                      np.asarray(durations, np.float64)))
            if timed < len(ids):
                window.chunks.append((ids[timed:], flags[timed:], None))
        return window


_NO_DURATIONS = np.zeros(0, np.float64)
_ONE_ITEM = np.zeros(1, np.intp)


@dataclass(slots=True)
class _Source:
    """One source's open windows and how far each of its senders got (event time)."""

    newest: int
    senders: dict[Hashable, int] = field(default_factory=dict)
    open: dict[int, _OpenWindow] = field(default_factory=dict)
    # Ranges of window starts the source did not cover whole: where it went quiet, through
    # where it began again (a straggler may land before the first window it sent to).
    incomplete: list[tuple[int, int]] = field(default_factory=list)
    last_active: dict[Hashable, int] = field(default_factory=dict)
    # Each group's place among the source's groups (its repr), kept while it is active:
    # closed cells come in that order.
    order_keys: dict[Hashable, str] = field(default_factory=dict)
    closed_before: int = _NEVER  # windows starting before this are closed


@dataclass(frozen=True, slots=True)
class ClosedCell:
    """One group's aggregate over one closed window."""

    group: Hashable
    end_unix_nano: int
    count: int
    errors: int
    durations: NDArray[np.float64]


class WindowAggregator:
    """Tumbling windows of ``window_ns`` keyed by group, closed per source.

    Examples
    --------
    >>> agg = WindowAggregator(window_ns=10, lateness_ns=0)
    >>> for t in (5, 11, 15, 25):  # the source starts mid-window: [0, 10) is incomplete
    ...     _ = agg.add("a", t, source="svc", error=(t == 15))
    >>> _ = agg.add("b", 12, source="svc")
    >>> [(c.group, c.end_unix_nano, c.count, c.errors) for c in agg.close_ready()]
    [('a', 20, 2, 1), ('b', 20, 1, 0)]
    >>> agg.add("a", 13, source="svc")  # its window has closed
    False
    >>> _ = agg.add("a", 31, source="svc")
    >>> [(c.group, c.end_unix_nano, c.count) for c in agg.close_ready()]  # b fell quiet
    [('a', 30, 1), ('b', 30, 0)]
    >>> _ = agg.add("x", 8, source="other")  # another source's time closes nothing here
    >>> agg.close_ready()
    []
    """

    def __init__(
        self, window_ns: int, lateness_ns: int, zero_fill_windows: int = 60,
        forget_after_ns: int = _FORGET_AFTER_NS,
    ) -> None:
        if window_ns <= 0:
            msg = f"window must be > 0 ns; got {window_ns}"
            raise ValueError(msg)
        self.window_ns = window_ns
        self.lateness_ns = lateness_ns
        self.zero_fill_windows = zero_fill_windows
        # A source quiet for longer than this has left its windows open: it ran a whole
        # window without sending, so what it sends next starts a new run.
        self.gap_ns = window_ns + lateness_ns
        self.forget_after_ns = max(forget_after_ns, zero_fill_windows * window_ns)
        self._sources: dict[Hashable, _Source] = {}
        # Insertion-ordered, so checkpoints and the close order do not depend on hashing.
        self._touched: dict[Hashable, None] = {}
        self._newest = _NEVER
        self._forget_at = _NEVER

    def add(
        self, group: Hashable, ts_unix_nano: int, *, source: Hashable = None,
        sender: Hashable = None, error: bool = False, duration: float | None = None,
    ) -> bool:
        """Count one item of ``source`` (sent by ``sender``); False if its window has closed.

        ``source`` is what windows close by (a service); ``sender`` one of its instances
        (a resource), whose own progress the source waits for.
        """
        counted = self.add_many(
            [group], _ONE_ITEM, np.array([ts_unix_nano], np.int64), source=source,
            sender=sender, errors=np.array([error], np.bool_),
            durations=None if duration is None else np.array([duration], np.float64))
        return bool(counted[0])

    def add_many(
        self, groups: Sequence[Hashable], group_of: NDArray[np.intp],
        ts_unix_nano: NDArray[np.int64],
        *, source: Hashable = None, sender: Hashable = None,
        errors: NDArray[np.bool_] | None = None, durations: NDArray[np.float64] | None = None,
    ) -> NDArray[np.bool_]:
        """``add`` of many items of one source and sender, in order; True where counted.

        Item ``i`` belongs to ``groups[group_of[i]]``; a sender passing the same list object
        batch after batch (never changed) spares each window hashing its groups again. The
        same state and closed cells as adding the items one by one
        (``tests/helpers/window_reference.py`` keeps that model): items are counted and
        their durations grouped by group, in one go per window, when it closes.
        """
        n = len(ts_unix_nano)
        if not n:
            return np.zeros(0, np.bool_)
        ts = np.asarray(ts_unix_nano, np.int64)
        starts = ts - ts % self.window_ns
        src = self._sources.get(source)
        if src is None:
            src = self._sources[source] = _Source(newest=int(ts[0]))
            src.incomplete.append((_NEVER, int(starts[0])))
        accepted = starts >= src.closed_before
        rows = np.flatnonzero(accepted)
        if not len(rows):
            return accepted
        kept_ts, kept_starts = ts[rows], starts[rows]
        # The source's newest time as each accepted item arrives: a jump of more than a gap
        # past it starts a new run, whose windows before it were not covered whole.
        before = np.maximum.accumulate(np.concatenate(([src.newest], kept_ts[:-1])))
        for i in np.flatnonzero(kept_ts > before + self.gap_ns).tolist():
            newest = int(before[i])
            src.incomplete.append((newest - newest % self.window_ns, int(kept_starts[i])))
        kept_groups = np.asarray(group_of, np.intp)[rows]
        kept_errors = None if errors is None else np.asarray(errors, np.bool_)[rows]
        kept_durations = None if durations is None else np.asarray(durations, np.float64)[rows]
        first_start, last_start = int(kept_starts.min()), int(kept_starts.max())
        if first_start == last_start:  # the usual batch: one window
            self._add_to(src, first_start, groups, kept_groups, kept_errors, kept_durations)
        else:
            # Windows in the order their first item came, as item-by-item adds open them.
            distinct, first = np.unique(kept_starts, return_index=True)
            for start in distinct[np.argsort(first)].tolist():
                part = kept_starts == start
                self._add_to(src, start, groups, kept_groups[part],
                             None if kept_errors is None else kept_errors[part],
                             None if kept_durations is None else kept_durations[part])
        newest = int(kept_ts.max())
        src.newest = max(src.newest, newest)
        src.senders[sender] = max(src.senders.get(sender, newest), newest)
        self._newest = max(self._newest, newest)
        self._touched[source] = None
        return accepted

    @staticmethod
    def _add_to(
        src: _Source, start: int, groups: Sequence[Hashable], group_of: NDArray[np.intp],
        errors: NDArray[np.bool_] | None, durations: NDArray[np.float64] | None,
    ) -> None:
        """Append one batch's items of the window at ``start`` (opening it) to it."""
        window = src.open.get(start)
        if window is None:
            window = src.open[start] = _OpenWindow()
        window.chunks.append((window.numbers(groups, group_of)[group_of], errors, durations))

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
            window = src.open.pop(start)
            end = start + self.window_ns
            src.closed_before = end
            oldest_active = start - self.zero_fill_windows * self.window_ns
            for group, last in list(src.last_active.items()):
                if last < oldest_active and group not in window.number:
                    del src.last_active[group]
                    del src.order_keys[group]
            for group in window.groups:  # every group of a window has items in it
                if group not in src.last_active:
                    src.order_keys[group] = repr(group)
                src.last_active[group] = start
            if any(low <= start <= high for low, high in src.incomplete):
                continue
            counts, errors, durations = window.totals()
            number = window.number
            for group in sorted(src.last_active, key=src.order_keys.__getitem__):
                k = number.get(group)
                closed.append(
                    ClosedCell(group, end, 0, 0, _NO_DURATIONS) if k is None else
                    ClosedCell(group, end, counts[k], errors[k], durations[k]))
        src.incomplete = [(low, high) for low, high in src.incomplete
                          if high >= src.closed_before]
        return closed

    def state_dict(self) -> dict[str, Any]:
        """Every source's open windows and progress; the window settings are not saved."""
        sources = [
            (source, src.newest, list(src.senders.items()),
             [(start, window.cells()) for start, window in src.open.items()],
             list(src.incomplete), list(src.last_active.items()), src.closed_before)
            for source, src in self._sources.items()]
        return {"sources": sources, "touched": list(self._touched), "newest": self._newest,
                "forget_at": self._forget_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        sources: dict[Hashable, _Source] = {}
        for source, newest, senders, windows, incomplete, last_active, closed in state["sources"]:
            src = sources[source] = _Source(newest=int(newest), closed_before=int(closed))
            src.senders = {sender: int(ts) for sender, ts in senders}
            src.open = {int(start): _OpenWindow.of_cells(cells) for start, cells in windows}
            src.incomplete = [(int(low), int(high)) for low, high in incomplete]
            src.last_active = {group: int(start) for group, start in last_active}
            src.order_keys = {group: repr(group) for group in src.last_active}
        self._sources = sources
        self._touched = dict.fromkeys(state["touched"])
        self._newest, self._forget_at = int(state["newest"]), int(state["forget_at"])

    def _forget_quiet(self) -> None:
        """Drop sources quiet for ``forget_after_ns`` of event time (bounds the memory)."""
        if self._newest < self._forget_at:
            return
        self._forget_at = self._newest + self.forget_after_ns // 10
        oldest = self._newest - self.forget_after_ns
        for source in [s for s, src in self._sources.items() if src.newest < oldest]:
            del self._sources[source]
