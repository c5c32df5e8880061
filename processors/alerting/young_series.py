"""Young series alert only on larger deviations: their spreads and tails rest on little data."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel

YOUNG_POINTS = 100
"""A series' first scored points alert only on larger deviations, fading to normal over
this many points: its spreads and tails are still estimated from little data."""


@kernel
def young_damped(
    age: NDArray[np.uint8], slots: NDArray[np.intp], score: NDArray[np.float64],
    upper: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Scores of young series divided by up to 2, fading out over ``YOUNG_POINTS``.

    ``age`` counts the scored points of each slot (those with a band: ``upper`` not NaN),
    up to ``YOUNG_POINTS``; it is advanced here.
    """
    out = np.empty(len(slots))
    for row in range(len(slots)):
        age[slots[row]], out[row] = damped(points=age[slots[row]], score=score[row],
                                           upper=upper[row])
    return out


@row_kernel
def damped(points: Any, score: Any, upper: Any) -> Any:
    """A slot's age after a row (``young_damped``) and the row's damped score."""
    seen = int(points)
    ready = not np.isnan(upper)
    damped_score = (score / (1.0 + max(0.0, 1.0 - seen / YOUNG_POINTS))
                    if seen < YOUNG_POINTS else score)
    return min(seen + int(ready), YOUNG_POINTS), damped_score
