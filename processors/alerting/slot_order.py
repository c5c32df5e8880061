"""A batch's rows grouped by slot, each slot's rows in batch order, in one pass.

Round planning and row sampling read a batch slot by slot. A stable sort by slot gives
that order but costs two thirds of them on a live request of 1,000 rows; the rows of each
slot only need to be together, in batch order, not the slots in any order. This numbers
the slots in order of their first row (an open-addressing table sized by the batch) and
places the rows by a counting sort on those numbers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel

_MIX = np.uint64(0x9E3779B97F4A7C15)


@kernel
def rows_by_slot(slots: NDArray[np.int64], order: NDArray[np.int64]) -> int:
    """Fill ``order`` with the rows, slot by slot; return how many distinct slots there are.

    Slots come in order of their first row; each slot's rows in batch order.

    Examples
    --------
    >>> order = np.empty(6, np.int64)
    >>> rows_by_slot(np.array([9, 2, 9, 5, 2, 9]), order), order.tolist()
    (3, [0, 2, 5, 1, 4, 3])
    """
    n = len(slots)
    capacity = 16
    while capacity < 2 * n:
        capacity *= 2
    mask = capacity - 1
    table = np.full(capacity, -1, np.int64)  # a slot's place in ``first``, by hash
    first = np.empty(n, np.int64)  # the first row of each slot, in order of appearance
    group = np.empty(n, np.int64)
    sizes = np.zeros(n + 1, np.int64)
    groups = 0
    for i in range(n):
        at = int((np.uint64(slots[i]) * _MIX) >> np.uint64(40)) & mask
        while table[at] >= 0 and slots[first[table[at]]] != slots[i]:
            at = (at + 1) & mask
        if table[at] < 0:
            table[at] = groups
            first[groups] = i
            groups += 1
        group[i] = table[at]
        sizes[table[at] + 1] += 1
    for g in range(groups):  # each slot's first place in ``order``
        sizes[g + 1] += sizes[g]
    for i in range(n):
        order[sizes[group[i]]] = i
        sizes[group[i]] += 1
    return groups
