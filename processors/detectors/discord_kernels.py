"""The per-row loops of ``Discord``: measure a round's distances, band them, learn the round.

The buffer of a slot holds its last ``span`` values, oldest first (shifted by one at each
learned point). Candidate ``c`` is ``buffer[c : c + length]``; the query is the last
``length - 1`` values held and the row's own value. Distances use dot products accumulated
one lag at a time over all candidates (a loop without a reduction, which the compiler can
vectorise without reordering float additions), and window sums of the centred buffer.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.kernel_math import maximum

TYPICAL_ABS_Z = float(np.sqrt(2.0 / np.pi))  # mean |z| of a standard normal
DISTANCE_FLOOR = 0.05
"""Smallest usual distance, in spreads of the buffer: a noise-free periodic series repeats
itself to float precision, and only a change beyond this counts as one."""
FLAT = 1e-7
"""A buffer whose spread is below this share of its level is flat (distances are then in
units of that share, above the rounding of the sums)."""
EPS = 1e-300  # a buffer of zeros
MAX_POINTS = int(np.iinfo(np.int32).max) - 1  # points per slot saturate (int32 storage)


@kernel
def _mean_var(x: NDArray[np.float64], count: int) -> tuple[float, float]:
    """Mean and population variance of ``x[:count]`` (two passes: no cancellation)."""
    total = 0.0
    for k in range(count):
        total += x[k]
    mean = total / count
    square = 0.0
    for k in range(count):
        square += (x[k] - mean) ** 2
    return mean, square / count


@kernel
def _offset_d2(q_mean: float, q_var: float, dot: float, total: float, squares: float,
               m: int) -> float:
    """Mean squared difference of a query and a candidate, each minus its own mean."""
    c_mean = total / m
    return q_var + (squares / m - c_mean * c_mean) - 2.0 * (dot / m - q_mean * c_mean)


@kernel
def _centred(buffer: NDArray[np.float64], r: NDArray[np.float64], sums: NDArray[np.float64],
             squares: NDArray[np.float64]) -> tuple[float, float]:
    """Fill ``r`` with the buffer minus its mean and the prefix sums of ``r`` and ``r**2``.

    Returns the mean and the spread (floored). Centred first: the sums then lose no
    precision to the series' level.
    """
    span = len(buffer)
    centre, var = _mean_var(buffer, span)
    spread = math.sqrt(var)
    spread = maximum(spread, FLAT * (abs(centre) + spread) + EPS)
    sums[0] = squares[0] = 0.0
    for k in range(span):
        r[k] = buffer[k] - centre
        sums[k + 1] = sums[k] + r[k]
        squares[k + 1] = squares[k] + r[k] * r[k]
    return centre, spread


@kernel
def _nearest(r: NDArray[np.float64], q: NDArray[np.float64], sums: NDArray[np.float64],
             squares: NDArray[np.float64], dots: NDArray[np.float64],
             d2s: NDArray[np.float64]) -> tuple[float, float, float]:
    """The query's least mean squared offset distance to a candidate, and its forecast.

    The forecast (centred) is the mean of the query's first ``m - 1`` points plus what
    followed the candidate whose first ``m - 1`` points are nearest to them, offset from
    their mean (both returned). ``dots`` and ``d2s`` are scratch.
    """
    m, history = len(q), len(dots)
    ctx_mean, ctx_var = _mean_var(q, m - 1)
    dots[:] = 0.0
    for k in range(m - 1):
        qk = q[k]
        for c in range(history):
            dots[c] += qk * r[c + k]
    # Distances into an array first, then scanned: a loop without branches, which the
    # compiler vectorises (its divisions dominate the cost otherwise).
    for c in range(history):
        d2s[c] = _offset_d2(ctx_mean, ctx_var, dots[c], sums[c + m - 1] - sums[c],
                            squares[c + m - 1] - squares[c], m - 1)
    best, best_d2 = 0, np.inf
    for c in range(history):
        if d2s[c] < best_d2:  # the first on a tie, as np.argmin
            best, best_d2 = c, d2s[c]
    follow = r[best + m - 1] - (sums[best + m - 1] - sums[best]) / (m - 1)
    # The whole query: the nearest candidate's distance.
    q_mean, q_var = _mean_var(q, m)
    for c in range(history):
        d2s[c] = _offset_d2(q_mean, q_var, dots[c] + q[m - 1] * r[c + m - 1],
                            sums[c + m] - sums[c], squares[c + m] - squares[c], m)
    least = np.inf
    for c in range(history):
        d2 = d2s[c]
        least = d2 if d2 < least or d2 != d2 else least  # noqa: PLR0124 - NaN wins
    return least, ctx_mean, follow


@kernel
def measure(
    slots: NDArray[np.intp], values: NDArray[np.float64], length: int, history: int,
    warm: int, n_col: NDArray[np.int32], mean_col: NDArray[np.float64],
    recent_col: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per row: the discord distance (NaN until the buffer is full), score and forecast.

    The score is 0 while the slot has fewer than ``warm`` points and NaN where the value
    is not finite; the forecast does not depend on the row's value.
    """
    rows, m, span = len(slots), length, recent_col.shape[1]
    dist = np.full(rows, np.nan)
    score = np.zeros(rows)
    forecast = np.full(rows, np.nan)
    r = np.empty(span)  # the centred buffer
    q = np.empty(m)  # the centred query
    sums = np.empty(span + 1)  # prefix sums of r and of its squares
    squares = np.empty(span + 1)
    dots, d2s = np.empty(history), np.empty(history)
    for i in range(rows):
        s, x = slots[i], values[i]
        if n_col[s] >= span:
            centre, spread = _centred(recent_col[s], r, sums, squares)
            for k in range(m - 1):
                q[k] = r[span - m + 1 + k]
            q[m - 1] = x - centre
            least, ctx_mean, follow = _nearest(r, q, sums, squares, dots, d2s)
            dist[i] = math.sqrt(maximum(least, 0.0)) / spread
            forecast[i] = centre + ctx_mean + follow
        if n_col[s] >= warm:
            usual = maximum(mean_col[s], DISTANCE_FLOOR)
            score[i] = TYPICAL_ABS_Z * dist[i] / usual
        if not np.isfinite(x):
            score[i] = np.nan
    return dist, score, forecast


@kernel
def band(
    values: NDArray[np.float64], score: NDArray[np.float64], forecast: NDArray[np.float64],
    ready: NDArray[np.bool_], band: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper edge: where the row's own score would be ``band`` (NaN while warming)."""
    rows = len(values)
    lower, upper = np.full(rows, np.nan), np.full(rows, np.nan)
    for i in range(rows):
        if ready[i]:
            b = band[0] if len(band) == 1 else band[i]
            width = abs(values[i] - forecast[i]) * b / score[i]
            width = width if np.isfinite(width) else np.inf
            lower[i], upper[i] = forecast[i] - width, forecast[i] + width
    return lower, upper


@kernel
def learn(
    slots: NDArray[np.intp], values: NDArray[np.float64], dist: NDArray[np.float64],
    history: int, n_col: NDArray[np.int32], mean_col: NDArray[np.float64],
    recent_col: NDArray[np.float64],
) -> None:
    """Learn one round (distinct slots, finite values) in place.

    The usual distance is a plain average of the first ``history`` distances, then an
    exponential one with weight ``1 / history``; the row's value enters the buffer.
    """
    span = recent_col.shape[1]
    for i in range(len(slots)):
        s = slots[i]
        d = dist[i]
        if d == d:  # noqa: PLR0124 - measured (the buffer was full)
            count = n_col[s] - span + 1.0
            weight = maximum(1.0 / count, 1.0 / history)
            mean_col[s] += weight * (d - mean_col[s])
        for k in range(span - 1):
            recent_col[s, k] = recent_col[s, k + 1]
        recent_col[s, span - 1] = values[i]
        n_col[s] = min(n_col[s], MAX_POINTS) + 1
