"""Known number streams by wire hash: (resource, metric, attribute bytes) → stream id and slot.

The compiled metrics path (``signals.wire_path``) finds a point's series from hashes of
its bytes (``signals.metrics_wire``) instead of a ``SeriesKey`` built attribute by
attribute. This table remembers, for each 128-bit key, the source stream (``SourceTable``
id) and the series slot (``SeriesIndex``) the Python path resolved the first time. The same
series sent with its attributes in another byte order is a second key to the same ids.

It is a cache, never saved: it starts over whenever a stream id or a slot may have been
freed or reloaded (``generation`` of either changed), and when it fills. Open addressing
with linear probing over arrays, so kernels probe it; capacity is a power of two, at most
``4 * max_entries`` rows, kept at most half full.

A key is two independent 64-bit hashes: two series whose keys collide would share a slot,
which for a million live keys happens with a probability near 1e-26.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel

_MIN_CAPACITY = 1024
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@kernel
def mix(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser: every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@kernel
def combine(resource: np.int64, metric: np.int64, attributes: np.int64) -> np.int64:
    """One key word from the resource, metric and attribute hashes of a point."""
    x = mix(np.uint64(resource))
    x = mix(x ^ np.uint64(metric))
    return np.int64(mix(x ^ np.uint64(attributes)))


# Columns of the table: a row is one 32-byte entry, so a probe touches one cache line.
KEY1, KEY2, SID, SLOT = range(4)


@kernel
def probe(table: NDArray[np.int64], a: np.int64, b: np.int64) -> np.int64:
    """The row of key ``(a, b)``, or of the empty row where it would go (``SID`` < 0)."""
    mask = len(table) - 1
    row = a & mask  # non-negative, as mask is
    while table[row, SID] >= 0 and not (table[row, KEY1] == a and table[row, KEY2] == b):
        row = (row + 1) & mask
    return row


@kernel
def _insert_all(
    table: NDArray[np.int64], a: NDArray[np.int64], b: NDArray[np.int64],
    new_ids: NDArray[np.int64],
) -> int:
    """Insert keys (replacing ids of keys present); return how many were new."""
    added = 0
    for i in range(len(a)):
        row = probe(table, a[i], b[i])
        if table[row, SID] < 0:
            added += 1
        table[row, KEY1], table[row, KEY2] = a[i], b[i]
        table[row, SID], table[row, SLOT] = new_ids[i, 0], new_ids[i, 1]
    return added


class WireCache:
    """The table (see the module doc): rows of ``(KEY1, KEY2, SID, SLOT)``, ``SID`` -1 if empty.

    Parameters
    ----------
    max_entries
        Keys kept at most (the engine's ``max_series``); past it the table starts over.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, max_entries)
        self.generations: tuple[int, int] = (-1, -1)
        self._allocate(_MIN_CAPACITY)

    def _allocate(self, capacity: int) -> None:
        self.table = np.full((capacity, 4), -1, np.int64)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        """Forget every key (capacity shrinks back)."""
        self._allocate(_MIN_CAPACITY)

    def follow(self, generations: tuple[int, int]) -> None:
        """Start over if the id owners' generations moved since the keys were stored."""
        if generations != self.generations:
            if self.size:
                self.clear()
            self.generations = generations

    def insert(self, a: NDArray[np.int64], b: NDArray[np.int64], ids: NDArray[np.int64]) -> None:
        """Remember that key ``(a[i], b[i])`` is stream and slot ``ids[i]``."""
        if self.size + len(a) > self.max_entries:
            self.clear()
            a, b, ids = a[-self.max_entries:], b[-self.max_entries:], ids[-self.max_entries:]
        while 2 * (self.size + len(a)) > len(self.table):
            self._grow()
        self.size += _insert_all(self.table, a, b, ids)

    def _grow(self) -> None:
        live = self.table[self.table[:, SID] >= 0]
        self._allocate(2 * len(self.table))
        self.size = _insert_all(self.table, live[:, KEY1].copy(), live[:, KEY2].copy(),
                                live[:, SID:].copy())
