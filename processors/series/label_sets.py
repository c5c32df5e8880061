"""Every live series' Prometheus labels, kept apart: the one owner of series labels.

Two series must never share a label set on ``/metrics``: Prometheus refuses a scrape with
duplicate samples, so one of them would be hidden. ``prometheus_labels`` already adds
``host.name`` and the other identifying resource attributes; when two series still collide
(replicas told apart only by ``process.pid``, say), the series seen later gets, as extra
labels, the resource attributes whose values differ from the series it collides with. The
series seen first keeps its labels: a label set never changes under a live series, so its
history in Prometheus stays one series. Only collisions that no resource attribute can tell
apart (point attributes equal after name sanitising) remain, and are counted downstream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.prometheus_names import (
    attribute_label_name,
    prometheus_labels,
)
from otel_anomaly.processors.state.codec import pack_labels, unpack_labels
from otel_anomaly.processors.types import Labels, SeriesKey

_PAIR_CACHE_SIZE = 4096
"""Distinct ``(name, value)`` pairs kept for sharing between label sets (then cleared)."""


class LabelSets:
    """Labels per slot, distinct among live slots whenever their resources allow it.

    Storage is one list entry per slot (the labels tuple, shared with the outputs) plus one
    dict entry per distinct label set. ``key_of``, when given, answers a live slot's
    ``SeriesKey`` (the series index's own), so the keys are not kept a second time here;
    without it the keys of assigned slots are kept.

    Examples
    --------
    >>> sets = LabelSets()
    >>> a = SeriesKey("load", (("process.pid", "1"), ("service.name", "api")), ())
    >>> b = SeriesKey("load", (("process.pid", "2"), ("service.name", "api")), ())
    >>> sets.assign(0, a, "ensemble"), sets.assign(1, b, "ensemble")
    ((('detector', 'ensemble'), ('job', 'api'), ('metric', 'load')), \
(('detector', 'ensemble'), ('job', 'api'), ('metric', 'load'), ('process_pid', '2')))
    """

    def __init__(self, promote: tuple[str, ...] = (),
                 key_of: Callable[[int], SeriesKey] | None = None) -> None:
        self.promote = promote
        self.key_of = key_of
        # By slot (room for more: ``_size`` slots were ever assigned); None: not assigned.
        # An array, so a round's thousand slots are looked up in one fancy index.
        self._labels: NDArray[np.object_] = np.full(0, None, object)
        self._size = 0
        self._keys: dict[int, SeriesKey] = {}  # only without ``key_of``
        self._slot_of: dict[Labels, int] = {}
        self._unresolved: dict[Labels, set[int]] = {}  # later slots that still collide
        # Label pairs many series have (metric, detector, job, host): one tuple for all.
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def assign(self, slot: int, key: SeriesKey, detector: str) -> Labels:
        """Labels for ``slot``, now holding ``key`` (a reused slot is forgotten first)."""
        self.forget(slot)
        labels = prometheus_labels(key, detector, self.promote)
        other = self._slot_of.get(labels)
        if other is not None:
            labels = self._told_apart(labels, key, self._key(other))
        labels = self._shared(labels)
        self._put(slot, labels, key)
        if labels in self._slot_of:
            self._unresolved.setdefault(labels, set()).add(slot)
        else:
            self._slot_of[labels] = slot
        return labels

    def _told_apart(self, labels: Labels, key: SeriesKey, other: SeriesKey) -> Labels:
        mine, theirs = dict(key.resource), dict(other.resource)
        differing = sorted(name for name in mine.keys() | theirs.keys()
                           if mine.get(name) != theirs.get(name))
        taken = dict(labels)
        extra = {}
        for name in differing:
            # Named as any attribute label is (a resource attribute "__name__" or "job"
            # made the whole page unscrapable, or re-labelled the series' job), and only
            # with a value: Prometheus reads an empty one as no label.
            label = attribute_label_name(name)
            value = mine.get(name, "")
            if label not in taken and value:
                extra[label] = value
        if not extra:
            return labels
        told = tuple(sorted({**taken, **extra}.items()))
        return told if told not in self._slot_of else labels

    def _shared(self, labels: Labels) -> Labels:
        """``labels`` made of the pair tuples other label sets already hold, where cached."""
        pairs = self._pairs
        if len(pairs) >= _PAIR_CACHE_SIZE:
            pairs.clear()  # bounded: pairs come from clients; shared ones stay shared
        return tuple([pairs.setdefault(pair, pair) for pair in labels])

    def _key(self, slot: int) -> SeriesKey:
        return self._keys[slot] if self.key_of is None else self.key_of(slot)

    def _put(self, slot: int, labels: Labels, key: SeriesKey) -> None:
        if slot >= len(self._labels):
            grown = np.full(max(slot + 1, 2 * len(self._labels)), None, object)
            grown[:len(self._labels)] = self._labels
            self._labels = grown
        self._size = max(self._size, slot + 1)
        self._labels[slot] = labels
        if self.key_of is None:
            self._keys[slot] = key

    def forget(self, slot: int) -> None:
        """Drop ``slot``'s labels (evicted or reused)."""
        if not 0 <= slot < len(self._labels):
            return
        labels = self._labels[slot]
        self._labels[slot] = None
        self._keys.pop(slot, None)
        if labels is None:
            return
        spare = self._unresolved.get(labels)
        if spare is not None:
            spare.discard(slot)
        if self._slot_of.get(labels) == slot:
            del self._slot_of[labels]
            if spare:  # a slot that collided with it now owns the label set
                self._slot_of[labels] = spare.pop()
        if spare is not None and not spare:
            del self._unresolved[labels]

    def of(self, slot: int) -> Labels:
        """The labels of ``slot`` (empty for a slot never assigned)."""
        labels = self._labels[slot] if 0 <= slot < len(self._labels) else None
        return () if labels is None else labels

    def of_many(self, slots: NDArray[np.intp]) -> NDArray[np.object_]:
        """Each of ``slots``' labels (None: never assigned), a copy: one fancy index.

        >>> sets = LabelSets()
        >>> _ = sets.assign(2, SeriesKey("up", (), ()), "ensemble")
        >>> sets.of_many(np.array([2, 0, 9])).tolist()
        [(('detector', 'ensemble'), ('metric', 'up')), None, None]
        """
        if len(slots) and not 0 <= int(slots.min()) <= int(slots.max()) < len(self._labels):
            found: NDArray[np.object_] = np.full(len(slots), None, object)
            inside = (slots >= 0) & (slots < len(self._labels))
            found[inside] = self._labels[slots[inside]]
            return found
        out: NDArray[np.object_] = self._labels[slots]
        return out

    def state_dict(self) -> dict[str, Any]:
        """Each slot's labels, as ``codec.pack_labels`` columns (none for a slot without).

        Saved, not recomputed: who was told apart depends on the order series came.
        """
        return {"labels": pack_labels(self._labels[:self._size].tolist())}

    def load_state_dict(self, state: dict[str, Any], keys: dict[int, SeriesKey]) -> None:
        """Restore the labels saved by ``state_dict`` for the live slots ``keys`` names."""
        labels: list[Labels | None] = [
            None if row is None or slot not in keys else row
            for slot, row in enumerate(unpack_labels(state["labels"]))]
        self._labels, self._size, self._unresolved = np.full(len(labels), None, object), 0, {}
        for slot, row in enumerate(labels):
            if row is not None:  # one by one: numpy would unpack the tuples as a sequence
                self._labels[slot] = row
        self._size = len(labels)
        self._keys = ({} if self.key_of is not None else
                      {slot: keys[slot] for slot, row in enumerate(labels) if row is not None})
        # The first slot of a label set owns it (built backwards: the first one written wins).
        self._slot_of = {row: slot for slot, row in reversed(list(enumerate(labels)))
                         if row is not None}
        if len(self._slot_of) < sum(row is not None for row in labels):
            for slot, row in enumerate(labels):
                if row is not None and self._slot_of[row] != slot:
                    self._unresolved.setdefault(row, set()).add(slot)
