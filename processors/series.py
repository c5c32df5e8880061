"""SeriesIndex: series identity to a dense slot, with a hard cap and idle expiry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.types import SeriesKey


def grown(array: NDArray[np.generic], needed: int, fill: object) -> NDArray[np.generic]:
    """Return ``array`` grown geometrically so that index ``needed - 1`` exists."""
    if needed <= len(array):
        return array
    size = max(needed, 2 * len(array), 64)
    out = np.full(size, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def grown_rows(array: NDArray[np.generic], needed: int, fill: object) -> NDArray[np.generic]:
    """Like ``grown`` for a 2-D array with one row per slot."""
    if needed <= len(array):
        return array
    size = max(needed, 2 * len(array), 64)
    out = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


class SeriesIndex:
    """Maps ``SeriesKey`` to a dense slot; frees slots of series idle past the TTL.

    Freed slots are reused, so per-slot state elsewhere must be reset when
    ``lookup`` reports a slot as new.

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
        self.last_seen: NDArray[np.float64] = np.zeros(0, np.float64)

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
            self.last_seen = grown(self.last_seen, self.capacity, 0.0)  # type: ignore[assignment]
            self.last_seen[live] = now
        return slots, np.asarray(created, np.intp)

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

    def _insert(self, key: SeriesKey) -> int:
        if len(self._slot_of) >= self.max_series:
            return -1
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
        stale = live[self.last_seen[live] < now - ttl]
        for slot in stale.tolist():
            key = self._keys[slot]
            if key is not None:
                del self._slot_of[key]
            self._keys[slot] = None
            self._free.append(slot)
        return stale
