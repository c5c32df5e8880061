"""SeriesIndex: series identity to a dense slot, with a hard cap and idle expiry."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.state.codec import (
    pack_labels,
    pack_strings,
    unpack_labels,
    unpack_strings,
)
from otel_anomaly.processors.types import Labels, SeriesKey

_RESOURCE_CACHE_SIZE = 16384


class SeriesIndex:
    """Maps ``SeriesKey`` to a dense slot; frees slots of series idle past the TTL.

    Freed slots are reused, so per-slot state elsewhere must be reset when
    ``lookup`` reports a slot as new.

    The keys kept share their parts: metric names are interned and equal resources are one
    tuple, however many series (and requests) carry them, so a series costs its own
    attributes and one dict entry, not a copy of its resource (up to 16,384 distinct
    resources at a time; beyond, sharing starts over).

    Examples
    --------
    >>> index = SeriesIndex(max_series=2)
    >>> a, b, c = (SeriesKey(m, (), ()) for m in "abc")
    >>> index.lookup([a, b, a, c], now=0.0)
    (array([ 0,  1,  0, -1]), array([0, 1]))
    >>> index.expire(now=10.0, ttl=5.0)
    array([0, 1])
    >>> len(index)
    0
    """

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self._slot_of: dict[SeriesKey, int] = {}
        self._keys: list[SeriesKey | None] = []
        self._free: list[int] = []
        self._seen = SlotArrays(last=Column(np.float64, 0.0))  # ingest time, per slot
        # Resources seen lately, each as the one tuple the keys kept share. Bounded (and
        # then cleared): it costs nothing per series, and a clear only stops new keys
        # from sharing the tuples of older ones.
        self._resources: dict[Labels, Labels] = {}
        # Changes whenever a slot is freed or the index reloaded: caches of slots
        # (``signals.wire_cache``) start over then.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def capacity(self) -> int:
        """Slots ever allocated (live or free)."""
        return len(self._keys)

    def lookup(
        self, keys: Sequence[SeriesKey], now: float
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """Return the slot of each key (-1 past ``max_series``) and the slots created now."""
        found = list(map(self._slot_of.get, keys))
        created: list[int] = []
        try:
            # The common case, every key known: one dict probe per row, no Python loop.
            slots = np.array(found, np.intp)
            live = slots
        except TypeError:  # a None: some keys are new, insert them in row order
            slots = self._insert_missing(keys, found, created)
            live = slots[slots >= 0]
        if len(live):
            self._seen.grow(self.capacity)
            self._seen.last[live] = now
        return slots, np.asarray(created, np.intp)

    def slot(self, key: SeriesKey) -> int | None:
        """The slot of ``key`` if it has one (nothing changes)."""
        return self._slot_of.get(key)

    def holds(self, slot: int, key: SeriesKey) -> bool:
        """Whether ``slot`` holds this very key object (the one ``key(slot)`` gave)."""
        return 0 <= slot < len(self._keys) and self._keys[slot] is key

    def touch(self, slots: NDArray[np.intp], now: float) -> None:
        """Mark live ``slots`` seen at ``now``, as ``lookup`` does for the keys it finds."""
        if len(slots):
            self._seen.grow(self.capacity)
            self._seen.last[slots] = now

    def _insert_missing(
        self, keys: Sequence[SeriesKey], found: list[int | None], created: list[int]
    ) -> NDArray[np.intp]:
        slot_of = self._slot_of
        for i in [i for i, slot in enumerate(found) if slot is None]:
            key = keys[i]
            # A key new in this batch may occur again further on.
            slot = slot_of.get(key)
            if slot is None:
                slot = self._insert(key)
                if slot >= 0:
                    created.append(slot)
            found[i] = slot
        return np.array(found, np.intp)

    def _shared(self, key: SeriesKey) -> SeriesKey:
        """``key`` with its metric interned and its resource the kept keys' own tuple."""
        resources = self._resources
        resource = resources.get(key.resource)
        if resource is None:
            if len(resources) >= _RESOURCE_CACHE_SIZE:
                resources.clear()
            resource = resources[key.resource] = key.resource
        return SeriesKey(sys.intern(key.metric), resource, key.attributes)

    def _insert(self, key: SeriesKey) -> int:
        if len(self._slot_of) >= self.max_series:
            return -1
        key = self._shared(key)
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            self._keys.append(key)
        self._slot_of[key] = slot
        return slot

    def key(self, slot: int) -> SeriesKey:
        """Identity of a live slot."""
        key = self._keys[slot]
        if key is None:
            msg = f"slot {slot} is not in use"
            raise KeyError(msg)
        return key

    def live_slots(self) -> NDArray[np.intp]:
        """Slots currently in use, ascending."""
        return np.asarray(sorted(self._slot_of.values()), np.intp)

    def expire(self, now: float, ttl: float) -> NDArray[np.intp]:
        """Free every slot not seen for more than ``ttl``; return the freed slots."""
        live = self.live_slots()
        if not len(live):
            return live
        stale = live[self._seen.last[live] < now - ttl]
        for slot in stale.tolist():
            key = self._keys[slot]
            if key is not None:
                del self._slot_of[key]
            self._keys[slot] = None
            self._free.append(slot)
        if len(stale):
            self.generation += 1
        return stale

    def shift_clock(self, delta: float) -> None:
        """Move every "last seen" by ``delta`` seconds (after a restore)."""
        self._seen.last[:] += delta

    def state_dict(self) -> dict[str, Any]:
        """Keys by slot as columns (``codec.pack_labels``), the free list, last-seen times.

        ``metric``: each slot's metric name (``""`` for a free slot); ``resource``: each
        slot's code into ``resources``, the distinct resources (-1 for a free slot);
        ``attributes``: each slot's attributes (none for a free slot).
        """
        keys = self._keys
        resources: dict[Labels, int] = {}
        codes = np.fromiter(
            (-1 if key is None else resources.setdefault(key.resource, len(resources))
             for key in keys), np.int32, len(keys))
        return {"metric": pack_strings(["" if key is None else key.metric for key in keys]),
                "resource": codes, "resources": pack_labels(list(resources)),
                "attributes": pack_labels([None if key is None else key.attributes
                                           for key in keys]),
                "free": np.asarray(self._free, np.int64), **self._seen.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict`` (keys come back as ``SeriesKey``).

        Raises
        ------
        ValueError
            If the columns do not fit together.
        """
        metrics = [sys.intern(metric) for metric in unpack_strings(state["metric"])]
        resources = unpack_labels(state["resources"])
        attributes = unpack_labels(state["attributes"])
        codes = np.asarray(state["resource"], np.int64).tolist()
        if not len(metrics) == len(codes) == len(attributes):
            msg = "series index: key columns have different lengths"
            raise ValueError(msg)
        # Equal resources are one tuple already (one per distinct resource saved).
        keys: list[SeriesKey | None] = [
            None if code < 0 or attrs is None else SeriesKey(metric, resources[code] or (), attrs)
            for metric, code, attrs in zip(metrics, codes, attributes, strict=True)]
        self._resources = {resource: resource for resource in resources[:_RESOURCE_CACHE_SIZE]
                           if resource is not None}
        self._keys = keys
        self.generation += 1
        self._free = np.asarray(state["free"], np.int64).tolist()
        self._slot_of = {key: slot for slot, key in enumerate(keys) if key is not None}
        if len(self._slot_of) != len(keys) - len(self._free):
            msg = "series index: the free list does not match the free slots"
            raise ValueError(msg)
        self._seen.load_state_dict(state)
