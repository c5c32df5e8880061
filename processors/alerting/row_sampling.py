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

The slowest of a thousand spans is not one span: ordinary spans make it slower the more
of them there are, and judged against one span's band it would open ever more often on
busy, healthy operations. It is judged against the band one span leaves as rarely as the
slowest of its ``n`` leaves this one (Sidak's correction for the extreme of ``n``
independent draws, the band read as sigmas of a normal tail, as the calibration makes it):
``max_of_n_band``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.slot_order import rows_by_slot
from otel_anomaly.processors.compiled import kernel, row_kernel

UP, DOWN, BOTH = 1, -1, 0
"""The side of a rule's alert, as ``sample_rows`` takes it (``AlertPolicy.direction``)."""


def sample_rows(  # noqa: PLR0913 -- the rows, and per slot and per rule what caps them
    slots: NDArray[np.intp], values: NDArray[np.float64], rule_of: NDArray[np.int16],
    age: NDArray[np.uint8], caps: NDArray[np.intp], sides: NDArray[np.int8], young: int,
) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.float64]] | None:
    """The rows to score in batch order, which are learned, and of how many each is the extreme.

    None: every row.

    ``rule_of`` and ``age`` are per slot, ``caps`` (0 for none) and ``sides`` (the alert's
    side) per rule. A slot with more rows than its rule's cap keeps ``cap`` of them evenly
    spread, learned, and its largest (``UP``), smallest (``DOWN``) or both (``BOTH``)
    values, scored only unless they are in the spread: their ``drawn`` is the slot's row
    count in the batch, in the spread or not (1 for every other row; see
    ``max_of_n_band``). A capped slot younger than ``young`` points keeps up to the points
    it still needs, if that is more. One compiled call.

    Examples
    --------
    >>> rule_of, age = np.array([0, 0, 0, 0, 0, 0, 0, 0], np.int16), np.zeros(8, np.uint8)
    >>> rows, learned, drawn = sample_rows(np.array([7, 7, 7, 7, 7, 3]),
    ...                                    np.array([1.0, 9.0, 2.0, 3.0, 4.0, 5.0]), rule_of,
    ...                                    age, np.array([2]), np.array([UP], np.int8), young=0)
    >>> rows.tolist(), learned.tolist(), drawn.tolist()
    ([0, 1, 3, 5], [True, False, True, True], [1.0, 5.0, 1.0, 1.0])
    """
    n = len(slots)
    if n < 2:  # noqa: PLR2004 -- one row is never over a cap
        return None
    keep = np.empty(n, np.bool_)
    learned = np.empty(n, np.bool_)
    drawn = np.empty(n)
    if not _capped_marks(np.asarray(slots, np.int64), values, rule_of, age, caps, sides,
                           young, keep, learned, drawn):
        return None
    rows = np.flatnonzero(keep)
    return rows, learned[rows], drawn[rows]


@kernel
def _capped_marks(slots: Any, values: Any, rule_of: Any, age: Any, caps: Any, sides: Any,
                    young: int, keep: Any, learned: Any, drawn: Any) -> bool:
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
    return _sample(slots, values, limits, row_sides, order, keep, learned, drawn)


@kernel
def _sample(slots: Any, values: Any, limits: Any, sides: Any, order: Any, keep: Any,
            learned: Any, drawn: Any) -> bool:
    """``sample_rows``' marks, one pass over the rows grouped by slot (``rows_by_slot``).

    ``learned`` (the even spread), ``keep`` (the spread and the extremes) and ``drawn``
    (an extreme, in the spread or not: the slot's row count; any other row: 1); False when
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
            drawn[row] = 1.0
            v = values[row]
            if not np.isnan(v):
                if np.isnan(values[top]) or v > values[top]:
                    top = row
                if np.isnan(values[low]) or v < values[low]:
                    low = row
        # The extremes are kept where their own row is over its cap, on the alert's side.
        # An extreme is the extreme of all the slot's rows, also when the spread has it.
        if limits[top] > 0 and size > limits[top] and sides[top] != DOWN:
            drawn[top] = size
            keep[top] = True
        if limits[low] > 0 and size > limits[low] and sides[low] != UP:
            drawn[low] = size
            keep[low] = True
        start = stop
    return any_over


def max_of_n_factors(band: float, drawn: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per row, how much wider its band is as the extreme of ``drawn`` rows (1 for one row).

    >>> max_of_n_factors(6.0, np.array([1.0, 1000.0])).round(3).tolist()
    [1.0, 1.173]
    """
    out: NDArray[np.float64] = _factors(float(band), drawn)
    return out


@kernel
def _factors(band: float, drawn: Any) -> Any:
    out = np.empty(len(drawn))
    for i in range(len(drawn)):
        out[i] = max_of_n_factor(band, drawn[i])
    return out


@row_kernel
def max_of_n_factor(band: float, drawn: float) -> float:
    """``max_of_n_band(band, drawn) / band``: how much wider the extreme's band is."""
    return max_of_n_band(band, drawn) / band if band > 0.0 else 1.0


_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_NEWTON_STEPS = 30  # at most; a few reach float64's resolution


@row_kernel
def max_of_n_band(band: float, drawn: float) -> float:
    """The band one draw leaves as rarely as the largest of ``drawn`` draws leaves ``band``.

    In sigmas of a normal's upper tail: ``1 - Phi(b') ** n = 1 - Phi(band)`` (Sidak).
    ``band`` itself for one draw (or fewer, or NaN); above 30 sigmas (a tail no float
    resolves) its large-band limit ``sqrt(band**2 + 2 log n)``.

    >>> round(max_of_n_band(6.0, 1.0), 6), round(max_of_n_band(6.0, 1000.0), 3)
    (6.0, 7.036)
    """
    if not drawn > 1.0 or not band > 0.0:
        return band
    limit = math.sqrt(band * band + 2.0 * math.log(drawn))
    if band > 30.0:  # noqa: PLR2004 -- erfc(30 / sqrt 2) is still a normal float; beyond, the limit
        return limit
    one = 0.5 * math.erfc(band / _SQRT2)  # P(one draw > band)
    # P(one draw > b') = 1 - (1 - one) ** (1 / n), exact also where ``one`` is tiny.
    goal = math.log(-math.expm1(math.log1p(-one) / drawn))
    # Newton on log P(Z > z) = goal: concave in z, so from the limit (right of the root)
    # every step stays right of it and the steps shrink to nothing.
    z = limit
    for _ in range(_NEWTON_STEPS):
        tail = 0.5 * math.erfc(z / _SQRT2)
        density = math.exp(-0.5 * z * z - _LOG_SQRT_2PI)
        step = (math.log(tail) - goal) * tail / density
        z += step
        if abs(step) <= 1e-13 * z:  # noqa: PLR2004 -- float64's resolution, with a margin
            break
    return z
