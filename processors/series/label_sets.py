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

from typing import Any

from otel_anomaly.processors.series.prometheus_names import (
    prometheus_label_name,
    prometheus_labels,
)
from otel_anomaly.processors.types import Labels, SeriesKey


class LabelSets:
    """Labels per slot, distinct among live slots whenever their resources allow it.

    Examples
    --------
    >>> sets = LabelSets()
    >>> a = SeriesKey("load", (("process.pid", "1"), ("service.name", "api")), ())
    >>> b = SeriesKey("load", (("process.pid", "2"), ("service.name", "api")), ())
    >>> sets.assign(0, a, "ensemble"), sets.assign(1, b, "ensemble")
    ((('detector', 'ensemble'), ('job', 'api'), ('metric', 'load')), \
(('detector', 'ensemble'), ('job', 'api'), ('metric', 'load'), ('process_pid', '2')))
    """

    def __init__(self, promote: tuple[str, ...] = ()) -> None:
        self.promote = promote
        self._labels: dict[int, Labels] = {}
        self._keys: dict[int, SeriesKey] = {}
        self._slot_of: dict[Labels, int] = {}
        self._unresolved: dict[Labels, set[int]] = {}  # later slots that still collide

    def assign(self, slot: int, key: SeriesKey, detector: str) -> Labels:
        """Labels for ``slot``, now holding ``key`` (a reused slot is forgotten first)."""
        self.forget(slot)
        labels = prometheus_labels(key, detector, self.promote)
        other = self._slot_of.get(labels)
        if other is not None:
            labels = self._told_apart(labels, key, self._keys[other])
        self._labels[slot], self._keys[slot] = labels, key
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
            label = prometheus_label_name(name)
            if label not in taken:
                extra[label] = mine.get(name, "")
        if not extra:
            return labels
        told = tuple(sorted({**taken, **extra}.items()))
        return told if told not in self._slot_of else labels

    def forget(self, slot: int) -> None:
        """Drop ``slot``'s labels (evicted or reused)."""
        labels = self._labels.pop(slot, None)
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
        return self._labels.get(slot, ())

    def state_dict(self) -> dict[str, Any]:
        """Each live slot's labels: who was told apart depends on the order series came."""
        return {"labels": [[slot, [list(pair) for pair in labels]]
                           for slot, labels in sorted(self._labels.items())]}

    def load_state_dict(self, state: dict[str, Any], keys: dict[int, SeriesKey]) -> None:
        """Restore the labels saved by ``state_dict`` for the live slots ``keys`` names."""
        self._labels, self._keys, self._slot_of, self._unresolved = {}, {}, {}, {}
        for saved_slot, pairs in state["labels"]:
            slot = int(saved_slot)
            if slot not in keys:
                continue
            labels = tuple((str(k), str(v)) for k, v in pairs)
            self._labels[slot], self._keys[slot] = labels, keys[slot]
            if labels in self._slot_of:
                self._unresolved.setdefault(labels, set()).add(slot)
            else:
                self._slot_of[labels] = slot
