"""Two plain streaming baselines for the labelled benchmarks: EWMA and rolling median/MAD.

Both are prequential (a point is scored against the state before it) and return an
absolute z-score per point, 0 during warm-up. A zero spread is floored at ``TINY`` so a
change on a flat series scores huge but finite, as a naive detector would.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

TINY = 1e-12
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


def ewma_zscore(
    values: NDArray[np.float64], *, alpha: float = 0.05, warmup: int = 30
) -> NDArray[np.float64]:
    """|x - mean| / std with exponentially weighted mean and variance (finite values only)."""
    out = np.zeros(len(values))
    mean, var = (float(values[0]), 0.0) if len(values) else (0.0, 0.0)
    for i, x in enumerate(values.tolist()):
        diff = x - mean
        if i >= warmup:
            out[i] = abs(diff) / max(math.sqrt(var), TINY)
        mean += alpha * diff
        var = (1.0 - alpha) * (var + alpha * diff * diff)
    return out


def rolling_mad_zscore(values: NDArray[np.float64], *, window: int = 100) -> NDArray[np.float64]:
    """|x - median| / (1.4826 MAD) over the ``window`` points before x; 0 until it is full."""
    out = np.zeros(len(values))
    if len(values) <= window:
        return out
    past = sliding_window_view(values, window)[:-1]  # row k: points k .. k+window-1
    median = np.median(past, axis=1)
    mad = np.median(np.abs(past - median[:, None]), axis=1)
    spread = np.maximum(MAD_TO_SIGMA * mad, TINY)
    out[window:] = np.abs(values[window:] - median) / spread
    return out
