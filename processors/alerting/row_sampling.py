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

import numpy as np
from numpy.typing import NDArray

UP, DOWN, BOTH = 1, -1, 0
"""The side of a rule's alert, as ``sample_rows`` takes it (``AlertPolicy.direction``)."""


def sample_rows(
    slots: NDArray[np.intp], values: NDArray[np.float64], limits: NDArray[np.intp],
    sides: NDArray[np.int8],
) -> tuple[NDArray[np.intp], NDArray[np.bool_]] | None:
    """The rows to score, in batch order, and which of them are learned; None: every row.

    ``limits`` and ``sides`` are per row (its rule's cap, 0 for none, and its alert side).
    A slot with more rows than its cap keeps ``cap`` of them evenly spread, learned, and
    its largest (``UP``), smallest (``DOWN``) or both (``BOTH``) values, scored only
    unless they are in the spread.

    Examples
    --------
    >>> rows, learned = sample_rows(np.array([7, 7, 7, 7, 7, 3]),
    ...                             np.array([1.0, 9.0, 2.0, 3.0, 4.0, 5.0]),
    ...                             np.array([2, 2, 2, 2, 2, 2]), np.full(6, UP, np.int8))
    >>> rows.tolist(), learned.tolist()
    ([0, 1, 3, 5], [True, False, True, True])
    """
    n = len(slots)
    capped = limits > 0
    if n < 2 or not np.count_nonzero(capped):
        return None
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, n])
    size = np.repeat(sizes, sizes)
    limit = limits[order]
    over = capped[order] & (size > limit)
    if not np.count_nonzero(over):
        return None
    rank = np.arange(n) - np.repeat(starts, sizes)
    # Rank r is kept when floor(r * K / n) steps up: K ranks, evenly spread, the first kept.
    spread = ~over | ((rank * limit) % np.maximum(size, 1) < limit)
    extreme = np.zeros(n, np.bool_)
    group = np.repeat(np.arange(len(starts)), sizes)
    side = sides[order]
    ordered_values = values[order]
    for wanted, sign in ((UP, -1.0), (DOWN, 1.0)):
        # Within each group, sorted by value (largest first for UP): the first is the extreme.
        by_value = np.lexsort((sign * ordered_values, group))
        first = by_value[starts]
        extreme[first] = over[first] & ((side[first] == wanted) | (side[first] == BOTH))
    keep_sorted = spread | extreme
    keep = np.empty(n, np.bool_)
    keep[order] = keep_sorted
    learned_all = np.empty(n, np.bool_)
    learned_all[order] = spread
    rows = np.flatnonzero(keep)
    return rows, learned_all[rows]
