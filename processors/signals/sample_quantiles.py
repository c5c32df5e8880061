"""Quantiles of many small samples in one compiled call, equal to ``numpy.quantile``'s.

Every closed traces window gives each operation's p50, p95 and p99 of its span durations:
one ``numpy.quantile`` call per operation and window costs about 20 µs of Python around a
sort of a few dozen numbers. ``quantiles`` sorts each sample once and interpolates as
``numpy.quantile``'s default (``method="linear"``) does, operation for operation, so the
values are the same to the last bit (``tests/processors/test_sample_quantiles.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel


@kernel
def _linear(ordered: NDArray[np.float64], q: float) -> float:
    """The q-quantile of sorted values, with ``numpy.quantile``'s arithmetic (linear method)."""
    n = len(ordered)
    if n == 0:  # numpy raises; no window with calls has no durations
        return math.nan
    index = (n - 1) * q
    below = math.floor(index)
    if index >= n - 1:  # numpy takes the last value for both neighbours (t is irrelevant)
        return float(ordered[n - 1])
    a, b = ordered[int(below)], ordered[int(below) + 1]
    t = index - below
    diff = b - a
    # numpy's _lerp: from the nearer end, so that t = 1 gives b exactly.
    return float(b - diff * (1.0 - t)) if t >= 0.5 else float(a + diff * t)  # noqa: PLR2004


@kernel
def quantiles(
    values: NDArray[np.float64], bounds: NDArray[np.int64], sample_of: NDArray[np.int64],
    qs: NDArray[np.float64], out: NDArray[np.float64],
) -> None:
    """``out[j]``: the ``qs[j]``-quantile of sample ``sample_of[j]``.

    Sample ``s`` is ``values[bounds[s]:bounds[s + 1]]`` (not empty); each is sorted once,
    for every quantile asked of it (``sample_of`` groups a sample's quantiles together).
    """
    current = -1
    ordered = np.empty(0, np.float64)
    for j in range(len(qs)):
        s = sample_of[j]
        if s != current:
            ordered = np.sort(values[bounds[s]:bounds[s + 1]])
            current = s
        out[j] = _linear(ordered, qs[j])
