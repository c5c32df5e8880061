"""The ensemble's level carried along the step its weekly profile foresees.

The default ensemble's level member is an EWMA with about 50 points of memory; its band is
tight. Where a series steps from one phase of its week to the next (traffic that drops by
40 % at the start of a quiet day, as it does every week), the weekly profile expects the
step but the level still sits where the series was, and the ensemble's band, which is
where the members' bands meet, opens an anomaly on the step the profile foresaw: every
week, for as long as the level needs to catch up (request rates every 30 s: 10 of 10
series, about two hours each, on every third-week quiet day of
``benchmarks/incidents.py --step 30 --intervals``).

So between a slot's consecutive points the level's mean moves by the change in the weekly
profile's expected value, where the profile was ready at both (a level on the series less
its weekly profile, as in Holt-Winters' additive model). The step itself may not happen
(the profile can be wrong: a holiday, a phase it learned from an incident), so the level's
band also takes in ``min(step, profile spread)`` squared as extra variance, which fades
as the level learns (by ``(1 - alpha)`` squared a point). A wrong step then widens the
level's band towards the value instead of leaving it far off.

Only a weekly (or longer) profile is followed. Following the daily profile as well was
measured: it carried every daily phase's noise into the level, and, before the weekly
profile is ready, the daily profile's mistake at each busy/quiet change of the week (NAB
``flag`` column, tuning half: 50.7 -> 28.6).

Per slot: the profile's expected value at the slot's last point (NaN: not ready) and the
borrowed variance. ``follow_row`` is one row's step; the array kernels call it in the same
order, so the ensemble's three paths (``Ensemble._round``, ``ensemble_round``,
``ensemble_row``) give the same bits.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel

__all__ = ["follow_row", "follow_rows", "followed_row", "learn_follow"]


@row_kernel
def follow_row(e0: float, up0: float, lo0: float, e_p: float, up_p: float, ref: float,
               borrowed: float) -> tuple[float, float, float, float, float, float]:
    """The level's unit band ``(e0, up0, lo0)`` carried along the profile's step.

    ``e_p``/``up_p``: the followed profile's expected value and upper edge now (NaN edge:
    not ready); ``ref``: its expected value at the slot's last point (NaN: not ready then);
    ``borrowed``: the level's extra variance so far. Returns the level's expected value,
    upper and lower edge, the step, the profile's expected value to keep (NaN if not
    ready) and the extra variance after this row (before learning fades it).
    """
    ready = up_p == up_p  # noqa: PLR0124 -- NaN while the profile warms up
    step = e_p - ref if ready and ref == ref else 0.0  # noqa: PLR0124
    if step != step:  # noqa: PLR0124 -- an infinite expected value
        step = 0.0
    keep = e_p if ready else math.nan
    spread = up_p - e_p if ready else 0.0
    extra = borrowed
    if step != 0.0:
        extra = max(borrowed, min(step * step, spread * spread))
    e = e0 + step
    if up0 != up0:  # noqa: PLR0124 -- the level warms up: no band to widen
        return e, up0, lo0, step, keep, extra
    half = math.sqrt((up0 - e0) * (up0 - e0) + extra)
    return e, e + half, e - half, step, keep, extra


@row_kernel
def followed_row(mean: float, step: float, extra: float, alpha: float,
                 ) -> tuple[float, float]:
    """The level's mean moved by ``step``, and the extra variance faded by one point."""
    fade = (1.0 - alpha) * (1.0 - alpha)
    return mean + step, extra * fade


@kernel
def follow_rows(
    slots: NDArray[np.intp], expected: NDArray[np.float64], upper: NDArray[np.float64],
    lower: NDArray[np.float64], ref: NDArray[np.float64], borrowed: NDArray[np.float32],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``follow_row`` of each row: column 0 (the level) moved in place, along the last column.

    Returns per row the step, the profile's expected value to keep and the extra variance.
    """
    rows = len(slots)
    last = expected.shape[1] - 1
    step, keep, extra = np.empty(rows), np.empty(rows), np.empty(rows)
    for i in range(rows):
        s = slots[i]
        expected[i, 0], upper[i, 0], lower[i, 0], step[i], keep[i], extra[i] = follow_row(
            expected[i, 0], upper[i, 0], lower[i, 0], expected[i, last], upper[i, last],
            ref[s], float(borrowed[s]))
    return step, keep, extra


@kernel
def learn_follow(
    slots: NDArray[np.intp], mean: NDArray[np.float64], ref: NDArray[np.float64],
    borrowed: NDArray[np.float32], step: NDArray[np.float64], keep: NDArray[np.float64],
    extra: NDArray[np.float64], alpha: float,
) -> None:
    """Before the level learns its rows: its mean moved, the profile's value and variance kept."""
    for i in range(len(slots)):
        s = slots[i]
        mean[s], faded = followed_row(mean[s], step[i], extra[i], alpha)
        borrowed[s] = faded
        ref[s] = keep[i]
