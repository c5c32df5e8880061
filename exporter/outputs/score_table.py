"""ScoreTable: the latest score row and the label set of every scored series, by slot."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.types import Labels, ScoreBatch

# Snapshot column -> ScoreBatch field.
_FLOAT_COLUMNS = {
    "value": "values",
    "expected": "expected",
    "lower": "lower",
    "upper": "upper",
    "score": "score",
}
_T = TypeVar("_T", bound=np.generic)


@dataclass(frozen=True, slots=True)
class ScoreSnapshot:
    """Copies of the table's rows at one instant, row ``i`` for the series ``labels[i]``.

    ``labels`` dicts are shared with the table and must not be modified. ``total`` is the
    number of series in the table, which can exceed the rows when a limit applied or
    ``duplicates`` series were left out for having the same labels as another one.
    ``label_text`` is each row's label set as exposition text (``{a="1",b="2"}``) when the
    table renders them (``ScoreTable(render_labels=...)``), else empty. ``resources`` is
    each row's OpenTelemetry resource attributes when the table keeps them
    (``ScoreTable(keep_resources=True)``), else empty.
    """

    slots: NDArray[np.intp]
    labels: list[dict[str, str]]
    ts_unix_nano: NDArray[np.int64]
    value: NDArray[np.float64]
    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]
    flag: NDArray[np.bool_]
    total: int
    duplicates: int = 0
    label_text: list[str] = field(default_factory=list)
    resources: list[Labels] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def warming(self) -> NDArray[np.bool_]:
        """True for series whose detector has no band yet: still learning, never flagged."""
        out: NDArray[np.bool_] = ~(np.isfinite(self.lower) & np.isfinite(self.upper))
        return out


class ScoreTable:
    """Latest ``(value, expected, lower, upper, score, flag, ts)`` per slot, in numpy arrays.

    Written by one thread (``update``, ``remove``): the pipeline's for the Prometheus
    output, the output's own for a queued one. Read by scrapes and exporters through
    ``snapshot``, which copies under the lock, so a reader never holds the lock while it
    formats output. Arrays grow geometrically to the highest slot seen.
    A series' labels are stored when its slot is first seen, and dropped when it is
    removed (a reused slot gets its new series' labels).

    Two series can have the same labels (e.g. two replicas of a service without
    ``service.instance.id``, whose other resource attributes are not labels). A scrape with
    duplicate samples is rejected as a whole, so snapshots keep one series per label set
    (an open anomaly first) and count the others as ``duplicates``.

    Examples
    --------
    >>> from otel_anomaly.processors.types import ScoreBatch
    >>> table = ScoreTable()
    >>> f = np.array([1.0, 2.0, 3.0])
    >>> batch = ScoreBatch(np.array([0, 2, 0]), np.array([1, 2, 3]), f, f, f, f, f,
    ...                    np.array([False, True, False]))
    >>> table.update(batch, {0: (("metric", "m0"),), 2: (("metric", "m2"),)})
    >>> snap = table.snapshot()
    >>> snap.labels, snap.value.tolist(), snap.flag.tolist()
    ([{'metric': 'm0'}, {'metric': 'm2'}], [3.0, 2.0], [False, True])
    >>> table.remove(np.array([0])); len(table)
    1
    """

    def __init__(self, render_labels: Callable[[Labels], str] | None = None, *,
                 keep_resources: bool = False) -> None:
        self._lock = threading.Lock()
        self._render_labels = render_labels
        self._keep_resources = keep_resources
        # Object arrays, not lists: a snapshot copies the rows it needs with one fancy
        # index under the lock instead of a Python loop.
        self._labels: NDArray[Any] = np.full(0, None, object)
        self._keys: NDArray[Any] = np.full(0, None, object)
        self._text: NDArray[Any] = np.full(0, None, object)
        self._resources: NDArray[Any] = np.full(0, None, object)
        self._key_counts: dict[Labels, int] = {}
        self._duplicates = 0
        self._present = np.zeros(0, np.bool_)
        self._ts = np.zeros(0, np.int64)
        self._flag = np.zeros(0, np.bool_)
        self._floats = {name: np.zeros(0, np.float64) for name in _FLOAT_COLUMNS}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def update(self, batch: ScoreBatch, labels: Mapping[int, Labels],
               resources: Mapping[int, Labels] | None = None) -> None:
        """Keep the last row of each slot in ``batch`` as that series' latest state.

        ``labels`` has the labels of every slot in ``batch`` (``ScoringRound.labels``);
        they are read only for slots the table does not hold yet, as are ``resources``
        (``ScoringRound.resources``, kept with ``keep_resources``).
        """
        if not len(batch):
            return
        reversed_slots = batch.slots[::-1]
        slots, first_from_end = np.unique(reversed_slots, return_index=True)
        rows = len(batch) - 1 - first_from_end
        keep = slots >= 0
        slots, rows = slots[keep], rows[keep]
        # Outside the lock: only this (the writer) thread mutates _present and _labels, so
        # reading them here without the lock is safe. A slot holds labels exactly while it
        # is present; the test is vectorised (a Python step per slot of every round was
        # 3.5 % of the pipeline thread).
        held = np.zeros(len(slots), np.bool_)
        inside = slots < len(self._present)
        held[inside] = self._present[slots[inside]]
        fresh = {slot: tuple(labels[slot]) for slot in slots[~held].tolist()}
        # A series' label text is rendered once, when it is first seen, and outside the lock.
        render = self._render_labels
        texts = {slot: render(key) for slot, key in fresh.items()} if render else {}
        with self._lock:
            if len(slots):
                self._grow(int(slots[-1]) + 1)
            for slot, key in fresh.items():
                self._add_key(slot, key, texts.get(slot))
            if self._keep_resources:
                for slot in fresh:
                    self._resources[slot] = (resources or {}).get(slot, ())
            self._count += len(fresh)
            self._present[slots] = True
            self._ts[slots] = batch.ts_unix_nano[rows]
            self._flag[slots] = batch.flag[rows]
            for name, column in self._floats.items():
                column[slots] = getattr(batch, _FLOAT_COLUMNS[name])[rows]

    def remove(self, slots: NDArray[np.intp]) -> None:
        """Forget evicted series: they vanish from the next snapshot."""
        if not len(slots):
            return
        with self._lock:
            for slot in np.unique(slots).tolist():
                if 0 <= slot < len(self._labels) and self._labels[slot] is not None:
                    self._drop_key(slot)
                    self._present[slot] = False
                    self._count -= 1

    def _add_key(self, slot: int, key: Labels, text: str | None) -> None:
        self._labels[slot] = dict(key)
        self._keys[slot] = key
        self._text[slot] = text
        seen = self._key_counts.get(key, 0)
        self._key_counts[key] = seen + 1
        if seen:
            self._duplicates += 1

    def _drop_key(self, slot: int) -> None:
        key = self._keys[slot]
        self._labels[slot] = None
        self._keys[slot] = None
        self._text[slot] = None
        self._resources[slot] = None
        if key is None:
            return
        seen = self._key_counts.pop(key, 1)
        if seen > 1:
            self._key_counts[key] = seen - 1
            self._duplicates -= 1

    def snapshot(self, limit: int | None = None) -> ScoreSnapshot:
        """Copy up to ``limit`` rows (flagged series first, then by slot).

        The lock is held only for vectorised copies of the live rows, never for a loop
        over series: the pipeline's ``update`` waits for a snapshot at 1M series about as
        long as numpy takes to copy its columns. Ordering the duplicates out, applying the
        limit and making the label lists happen on the copies, outside the lock.
        """
        with self._lock:
            live = np.flatnonzero(self._present)
            total = len(live)
            duplicates = self._duplicates
            flag = self._flag[live]
            if duplicates or (limit is not None and total > limit):
                order = np.concatenate([np.flatnonzero(flag), np.flatnonzero(~flag)])
                live, flag = live[order], flag[order]
            if not duplicates and limit is not None:
                # Without duplicates the limit can apply before copying the columns.
                live, flag = live[:limit], flag[:limit]
            keys = self._keys[live] if duplicates else None
            labels, texts = self._labels[live], self._text[live]
            resources = self._resources[live] if self._keep_resources else None
            ts = self._ts[live]
            floats = {name: column[live] for name, column in self._floats.items()}
        rows: slice | NDArray[np.intp] = slice(None)
        if keys is not None:
            rows = _first_of_each_key(keys)
            if limit is not None:
                rows = rows[:limit]
        live = live[rows]
        return ScoreSnapshot(
            slots=live,
            labels=labels[rows].tolist(),
            ts_unix_nano=ts[rows],
            flag=flag[rows],
            total=total,
            duplicates=duplicates,
            label_text=texts[rows].tolist() if self._render_labels else [],
            resources=[] if resources is None else resources[rows].tolist(),
            **{name: column[rows] for name, column in floats.items()},
        )

    def _grow(self, needed: int) -> None:
        size = len(self._present)
        if needed <= size:
            return
        size = max(needed, 2 * size, 64)
        self._labels = _resized(self._labels, size, None)
        self._keys = _resized(self._keys, size, None)
        self._text = _resized(self._text, size, None)
        self._resources = _resized(self._resources, size, None)
        self._present = _resized(self._present, size, False)
        self._ts = _resized(self._ts, size, 0)
        self._flag = _resized(self._flag, size, False)
        for name, column in self._floats.items():
            self._floats[name] = _resized(column, size, np.nan)


def _resized(array: NDArray[_T], size: int, fill: object) -> NDArray[_T]:
    out: NDArray[_T] = np.full(size, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def _first_of_each_key(keys: NDArray[Any]) -> NDArray[np.intp]:
    """Positions of the first row of each label set, in order."""
    seen: set[Labels | None] = set()
    keep = []
    for position, key in enumerate(keys.tolist()):
        if key not in seen:
            seen.add(key)
            keep.append(position)
    return np.asarray(keep, np.intp)
