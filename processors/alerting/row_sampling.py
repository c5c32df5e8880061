"""Which of a request's many points of one series are scored, when its rule caps them.

A Collector batch of 1,000 spans of one endpoint is 1,000 points of that operation's
span-duration series. Scored one by one, each is a scoring round of its own (rows of one
series are scored in arrival order), about 140 us each: the request then costs 140 ms. A
rule with ``max_points_per_request`` K scores at most K of a series' points per request,
an even spread of them (every (n/K)-th in arrival order, so the learned baseline stays an
unbiased sample of the series), plus its most extreme point on the alert's side, which is
scored but not learned: the slowest span of the request is always judged (a request whose
worst span leaves the band opens its operation's anomaly), but the tail is not learned
more often than it occurs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.slot_order import rows_by_slot
from otel_anomaly.processors.compiled import kernel

UP, DOWN, BOTH = 1, -1, 0
"""The side of a rule's alert, as ``sample_rows`` takes it (``AlertPolicy.direction``)."""


def sample_rows(  # noqa: PLR0913 -- the rows, and per slot and per rule what caps them
    slots: NDArray[np.intp], values: NDArray[np.float64], rule_of: NDArray[np.int16],
    age: NDArray[np.uint8], caps: NDArray[np.intp], sides: NDArray[np.int8], young: int,
) -> tuple[NDArray[np.intp], NDArray[np.bool_]] | None:
    """The rows to score, in batch order, and which of them are learned; None: every row.

    ``rule_of`` and ``age`` are per slot, ``caps`` (0 for none) and ``sides`` (the alert's
    side) per rule. A slot with more rows than its rule's cap keeps ``cap`` of them evenly
    spread, learned, and its largest (``UP``), smallest (``DOWN``) or both (``BOTH``)
    values, scored only unless they are in the spread. A capped slot younger than
    ``young`` points keeps up to the points it still needs, if that is more. One
    compiled call.

    Examples
    --------
    >>> rule_of, age = np.array([0, 0, 0, 0, 0, 0, 0, 0], np.int16), np.zeros(8, np.uint8)
    >>> rows, learned = sample_rows(np.array([7, 7, 7, 7, 7, 3]),
    ...                             np.array([1.0, 9.0, 2.0, 3.0, 4.0, 5.0]), rule_of, age,
    ...                             np.array([2]), np.array([UP], np.int8), young=0)
    >>> rows.tolist(), learned.tolist()
    ([0, 1, 3, 5], [True, False, True, True])
    """
    n = len(slots)
    if n < 2:  # noqa: PLR2004 -- one row is never over a cap
        return None
    keep = np.empty(n, np.bool_)
    learned = np.empty(n, np.bool_)
    if not _capped_marks(np.asarray(slots, np.int64), values, rule_of, age, caps, sides,
                           young, keep, learned):
        return None
    rows = np.flatnonzero(keep)
    return rows, learned[rows]


@kernel
def _capped_marks(slots: Any, values: Any, rule_of: Any, age: Any, caps: Any, sides: Any,
                    young: int, keep: Any, learned: Any) -> bool:
    """``sample_rows``' marks: each row's cap and side, then ``_sample``."""
    n = len(slots)
    limits = np.empty(n, np.int64)
    row_sides = np.empty(n, np.int8)
    for i in range(n):
        rule = rule_of[slots[i]]
        cap = caps[rule]
        limits[i] = max(cap, young - np.int64(age[slots[i]])) if cap > 0 else 0
        row_sides[i] = sides[rule]
    order = np.empty(n, np.int64)
    rows_by_slot(slots, order)
    return _sample(slots, values, limits, row_sides, order, keep, learned)


@kernel
def _sample(slots: Any, values: Any, limits: Any, sides: Any, order: Any, keep: Any,
            learned: Any) -> bool:
    """``sample_rows``' marks, one pass over the rows grouped by slot (``rows_by_slot``).

    ``learned`` (the even spread) and ``keep`` (the spread and the extremes); False when
    no slot is over its cap. Within a slot, rows keep their arrival order: the spread
    counts ranks in it, and the extreme is the first row holding the largest (smallest)
    value, NaN only where every value is (as a stable sort by value would pick).
    """
    n = len(order)
    any_over = False
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and slots[order[stop]] == slots[order[start]]:
            stop += 1
        size = stop - start
        top = low = order[start]
        for rank in range(size):
            row = order[start + rank]
            limit = limits[row]
            over = limit > 0 and size > limit
            any_over = any_over or over
            spread = (not over) or (rank * limit) % size < limit
            learned[row] = spread
            keep[row] = spread
            v = values[row]
            if not np.isnan(v):
                if np.isnan(values[top]) or v > values[top]:
                    top = row
                if np.isnan(values[low]) or v < values[low]:
                    low = row
        # The extremes are kept where their own row is over its cap, on the alert's side.
        if limits[top] > 0 and size > limits[top] and sides[top] != DOWN:
            keep[top] = True
        if limits[low] > 0 and size > limits[low] and sides[low] != UP:
            keep[low] = True
        start = stop
    return any_over
