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
profile's expected value, where the profile had seen both phases (a level on the series
less its weekly profile, as in Holt-Winters' additive model). The step itself may not
happen (the profile can be wrong: a holiday, a phase it learned from an incident), so the
level's band also takes in the step's own uncertainty as extra variance, which fades as
the level learns (by ``(1 - alpha)`` squared a point): the step is the difference of two
phases' means, so that is both phases' spreads squared and added, or the step squared if
smaller. A wrong step then widens the level's band towards the value instead of leaving
it far off. (With the new phase's spread alone, a step out of a phase the profile knew
badly, learned from an anomaly's clipped lessons, opened: 2 of 180 series-days of request
rates every 30 s, each held 12 to 16 hours.)

The second week is followed too: a phase seen once has a mean but no spread yet, so a step
from or to it is followed only when the level's band could not hold it (``ONCE_SEEN_STEP``
of its spreads: one week's phase means are noisy, and step by the day's shape too; a
weekday's start is a step the level would alarm on), and the whole step is borrowed as
variance. (Beyond one spread instead, each hour's step of a daily shape widened the level's
band through the second week: a +30 % level shift at 8 days opened in 6 of 10 series, not
8; ``benchmarks/incidents.py --days 11``.) Waiting for the profile to be ready (two weeks)
was measured first: the second week's first busy day then opened on the lagging level,
the anomaly was held all day against the band it opened against, and the weekly profile
learned that day from its clipped lessons, so it under-predicted that day from then on
(request rates judged as gauges every 30 s, ``benchmarks/incidents.py --step 30``: 31
false opens in 180 series-days, 10 of 10 series at each of the first three weeks' first
busy day; now 10, all at the first week's, before the profile has seen a week).

Only a weekly (or longer) profile is followed. Following the daily profile as well was
measured: it carried every daily phase's noise into the level, and, before the weekly
profile is ready, the daily profile's mistake at each busy/quiet change of the week (NAB
``flag`` column, tuning half: 50.7 -> 28.6).

Per slot: the profile's expected value and spread at the slot's last point (NaN: not
seen, not ready) and the borrowed variance. ``follow_row`` is one row's step; the array
kernels call it in the same order, so the ensemble's three paths (``Ensemble._round``,
``ensemble_round``, ``ensemble_row``) give the same bits.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel

__all__ = ["ONCE_SEEN_STEP", "follow_row", "follow_rows", "followed_row", "learn_follow"]

ONCE_SEEN_STEP = 3.5
"""A step from or to a phase seen once is followed beyond this many of the level's spreads:
the default ensemble rules' band (``settings.SEASONAL_ALERT``), a step the level alone would
alarm on."""


@row_kernel
def follow_row(e0: float, up0: float, lo0: float, e_p: float, up_p: float, ref: float,
               ref_spread: float, borrowed: float,
               ) -> tuple[float, float, float, float, float, float, float]:
    """The level's unit band ``(e0, up0, lo0)`` carried along the profile's step.

    ``e_p``/``up_p``: the followed profile's expected value and upper edge now (NaN value:
    the phase not seen yet; NaN edge: seen once, no spread yet); ``ref``: its expected
    value at the slot's last point (NaN: not seen then) and ``ref_spread`` its spread there
    (NaN: seen once then); ``borrowed``: the level's extra variance so far. Returns the
    level's expected value, upper and lower edge, the step, the profile's expected value
    and spread to keep (NaN if not seen, not ready) and the extra variance after this row
    (before learning fades it).
    """
    seen = e_p == e_p  # noqa: PLR0124 -- NaN until the phase was seen once
    ready = up_p == up_p  # noqa: PLR0124 -- NaN until it was seen twice (a spread)
    step = e_p - ref if seen and ref == ref else 0.0  # noqa: PLR0124
    if step != step:  # noqa: PLR0124 -- an infinite expected value
        step = 0.0
    spread = up_p - e_p if ready else math.nan
    known = ready and ref_spread == ref_spread  # noqa: PLR0124
    if not known and not (up0 == up0 and abs(step) > ONCE_SEEN_STEP * (up0 - e0)):  # noqa: PLR0124
        # A phase seen once: only a step the level's band would alarm on is followed (one
        # week's phase means step by noise and by the day's shape too), all of it borrowed.
        step = 0.0
    keep = e_p if seen else math.nan
    # The step is the difference of two phases' means: both spreads count.
    variance = spread * spread + ref_spread * ref_spread if known else step * step
    extra = borrowed
    if step != 0.0:
        extra = max(borrowed, min(step * step, variance))
    e = e0 + step
    if up0 != up0:  # noqa: PLR0124 -- the level warms up: no band to widen
        return e, up0, lo0, step, keep, spread, extra
    half = math.sqrt((up0 - e0) * (up0 - e0) + extra)
    return e, e + half, e - half, step, keep, spread, extra


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

    Returns per row the step, the profile's expected value and spread to keep (two
    columns, as ``ref``) and the extra variance.
    """
    rows = len(slots)
    last = expected.shape[1] - 1
    step, keep, extra = np.empty(rows), np.empty((rows, 2)), np.empty(rows)
    for i in range(rows):
        s = slots[i]
        (expected[i, 0], upper[i, 0], lower[i, 0], step[i], keep[i, 0], keep[i, 1],
         extra[i]) = follow_row(expected[i, 0], upper[i, 0], lower[i, 0], expected[i, last],
                                upper[i, last], ref[s, 0], ref[s, 1], float(borrowed[s]))
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
        ref[s, 0], ref[s, 1] = keep[i, 0], keep[i, 1]
