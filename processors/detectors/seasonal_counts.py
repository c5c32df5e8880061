"""One-byte counts of the points a seasonal profile's phase has learned.

The count of a phase is read three ways: ``count > 0`` (the phase was seen),
``count >= 2`` (it is scored, its spread is learned) and, in the learning weight
``max(alpha * share, 1 / (count + 1))``, as plain averaging over the phase's first cycles.
The last stops mattering once ``count + 1 >= 1 / (alpha * share)``, about ``1 / alpha``
cycles' worth of points: 240 for a point a minute in an hour's phase with the default
``alpha`` of 0.25, which no smaller exact range covers.

So codes ``0 .. EXACT - 1`` are the counts themselves, and the last ``256 - EXACT`` codes
step by about ``RATIO`` each, up to ``VALUES[-1]``, where the count saturates (as the
uint16 count did at 65535). A code above the exact range advances with probability one
over the gap to the next value (a Morris counter), drawn from the point's timestamp
(deterministic, the same for a batch and a loop): the expected count stays the number of
points, and the weight of a series with points seconds apart stays within about one step
of plain averaging. Everywhere else (with the default ``alpha``: points at least 60 s apart
in an hour's phase, 5 s in a 5-minute one) a phase's weights are exactly the uint16 count's.
"""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.compiled import kernel

EXACT = 240
RATIO = 1.25
VALUES = np.array([*range(EXACT), *(round(EXACT * RATIO**j) for j in range(1, 257 - EXACT))],
                  np.float64)
"""The count each one-byte code stands for."""
TOP = len(VALUES) - 1
_SILVER = 0.41421356237309515  # a Weyl step other than the mean codes' (seasonal_codes)


@kernel
def count_of(code: int) -> float:
    """The count a code stands for."""
    return float(VALUES[code])


@kernel
def advanced(code: int, ts: int) -> int:
    """The code after one more point at ``ts`` (ns)."""
    if code < EXACT - 1:
        return code + 1
    if code >= TOP:
        return TOP
    k = (ts // 1000) % 1000003  # microseconds, folded by a prime: a Weyl sequence
    u = (k * _SILVER) % 1.0
    return code + 1 if u * (VALUES[code + 1] - VALUES[code]) < 1.0 else code


def encode_counts(counts: np.ndarray) -> np.ndarray:
    """Codes for counts (any integer array): the largest value not above each count."""
    clipped = np.clip(np.asarray(counts, np.float64), 0, VALUES[-1])
    return (np.searchsorted(VALUES, clipped, side="right") - 1).astype(np.uint8)
