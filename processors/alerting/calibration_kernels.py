"""Compiled row loops of ``calibration`` (and the numpy scalar rules they share).

Each kernel does for one round what the numpy version did with a dozen array calls, row by
row, with the same arithmetic: ``nan_max``/``nan_min`` are ``np.maximum``/``np.minimum``
(NaN wins), and stores into float32 columns round as numpy's casts do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.kernel_math import maximum, minimum

DIRECTIONS = {"both": 0, "up": 1, "down": 2}
"""A policy's ``direction`` as the kernels take it."""
_UP, _DOWN = 1, 2
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@kernel
def whole(value: float) -> bool:
    """Whether ``value`` is a whole number (NaN is not; infinities are)."""
    return bool(value == np.floor(value))


_COUNT_TOLERANCE = 1e-9
"""How far (relative) a rate times its exposure may be from a whole number and still be a
count: ``k / dt * dt`` is ``k`` only to a few float roundings."""


@row_kernel
def resolved_whole(value: Any, exposure: Any) -> bool:
    """Whether a row is a whole number of its series' resolution.

    A rate with its ``exposure`` (the seconds it was counted over; NaN: none) is whole when
    it counted a whole number of events (``value * exposure``); any other value when it
    is a whole number itself.
    """
    if exposure > 0:
        events = np.float64(value) * np.float64(exposure)
        return bool(abs(events - np.round(events)) <= _COUNT_TOLERANCE * maximum(1.0, abs(events)))
    return whole(value)


@row_kernel
def count_width(expected: Any, exposure: Any, k: Any) -> Any:
    """The band half-width above ``expected`` that Poisson noise alone needs.

    A rate counted over ``exposure`` seconds at an expected ``expected`` per second holds
    ``mu = expected * exposure`` events on average; its upper edge at ``k`` Gaussian-
    equivalent sigmas is the Cornish-Fisher quantile ``mu + k sqrt(mu) + (k^2 - 1) / 6``
    events (the skew term keeps a rate resting near 0 at about 2 events, where the exact
    Poisson tail is: at ``mu = 0.02`` two events are 3.5 sigmas out). Returned per second;
    0 without an exposure.

    Only the upper side: a count's upper tail is longer than a band learned from its
    spread allows (its skew), its lower tail shorter. A floor below as well changed no
    false open of Poisson series at 0.02 to 100 events a window (one-minute and 10-second
    windows, 10 series each), and hid sustained drops that the learned band catches (5
    events a window falling to 0 for 30 minutes: 2 of 10 caught without it, 0 with it).
    """
    if not (exposure > 0 and np.isfinite(expected) and np.isfinite(k)):
        return 0.0
    mu = maximum(np.float64(expected), 0.0) * np.float64(exposure)
    return (k * np.sqrt(mu) + (k * k - 1.0) / 6.0) / exposure


@kernel
def _calibrate_row(  # noqa: PLR0913 -- a row, its floors and the policy's
    value: Any, expected: Any, lower: Any, upper: Any, floor: Any,
    min_abs: float, min_rel: float, direction: int, min_width: float, count_up: Any,
) -> Any:
    """One row of ``calibrate``: its band's lower and upper edge, and its score.

    ``count_up``: the least half-width above that a count's noise needs (``count_width``;
    0 for no count).
    """
    floor = maximum(maximum(min_abs, floor), min_rel * np.abs(expected))
    up_width = maximum(maximum(maximum(upper - expected, floor), count_up), min_width)
    down_width = maximum(maximum(expected - lower, floor), min_width)
    deviation = value - expected
    score = deviation / up_width if deviation >= 0 else -deviation / down_width
    if (direction == _UP and deviation < 0) or (direction == _DOWN and deviation > 0):
        score = 0.0
    if np.isnan(upper) or np.isnan(lower):  # warming up
        score = 0.0
    if not np.isfinite(value):
        score = np.nan
    return expected - down_width, expected + up_width, score


@kernel
def calibrate_rows(
    values: Any, expected: Any, lower: Any, upper: Any, floor: Any,
    min_abs: float, min_rel: float, direction: int, min_width: float,
) -> Any:
    """``calibrate`` of each row, ``floor`` given per row: the band's edges and the scores."""
    n = len(values)
    band_lower, band_upper, score = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        band_lower[i], band_upper[i], score[i] = _calibrate_row(
            values[i], expected[i], lower[i], upper[i], floor[i], min_abs, min_rel, direction,
            min_width, 0.0)
    return band_lower, band_upper, score


@row_kernel
def floor_of(value: Any, magnitude: Any, fractional: Any, min_rel: float,
             exposure: Any) -> Any:
    """A row's band floor from its slot's usual magnitude (see ``calibrate_slots``).

    A rate with its exposure gets no floor of 1: its resolution is an event, which
    ``count_floor`` judges.
    """
    floor: float = min_rel * np.float64(magnitude)
    if fractional == 0 and not exposure > 0 and whole(value):
        floor = maximum(floor, 1.0)
    return floor


@row_kernel
def count_floor(value: Any, expected: Any, exposure: Any, fractional: Any, k: Any) -> Any:
    """A rate's least half-width above (``count_width``), or 0.

    Only for a row with an exposure that counted a whole number of events, on a slot whose
    every row has (``fractional`` 0): a counter of seconds or bytes, with fractional
    increments, is no count of events, and its band stays its own.
    """
    if fractional == 0 and exposure > 0 and resolved_whole(value=value, exposure=exposure):
        return count_width(expected=expected, exposure=exposure, k=k)
    return 0.0


@kernel
def calibrate_slots(  # noqa: PLR0913 -- a round's rows, the slots' state and the policy
    values: Any, expected: Any, lower: Any, upper: Any, slots: Any, magnitude: Any,
    fractional: Any, k: Any, scale_floor: Any, min_abs: float, min_rel: float, direction: int,
    min_width: float, exposure: Any, received: Any,
) -> Any:
    """``Calibrator.step``'s floor and ``calibrate`` in one loop.

    The floor is ``min_rel`` times the slot's usual magnitude and, when ``scale_floor``
    has rows (a tail-calibrated detector), at least ``k`` times it; for a whole value on a
    slot whose values have all been whole numbers (``fractional`` 0), at least 1: the
    series' own resolution, so a count resting at 0 puts a single 1 on the band's edge, not
    1e9 widths past it. A fractional value shows the series is no count (an error ratio
    leaving 0): it is scored without that floor. A rate whose row has an ``exposure``
    (seconds; empty: no row has) is whole when it counted whole events, and its band is at
    least as wide above as Poisson noise at ``k`` sigmas (``count_floor``). Both judge the
    value as ``received`` (empty: as ``values``): a deploy's level offset, taken out of
    ``values`` and ``expected`` alike, does not make a count fractional.
    """
    n = len(values)
    band_lower, band_upper, score = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        seconds = exposure[i] if len(exposure) else np.nan
        got = received[i] if len(received) else values[i]
        floor = floor_of(value=got, magnitude=magnitude[slots[i]],
                         fractional=fractional[slots[i]], min_rel=min_rel, exposure=seconds)
        if len(scale_floor):
            floor = maximum(floor, k[i] * scale_floor[i])
        count_up = count_floor(value=got, expected=expected[i] + (got - values[i]),
                               exposure=seconds, fractional=fractional[slots[i]], k=k[i])
        band_lower[i], band_upper[i], score[i] = _calibrate_row(
            values[i], expected[i], lower[i], upper[i], floor, min_abs, min_rel, direction,
            min_width, count_up)
    return band_lower, band_upper, score


@kernel
def clip_rows(values: Any, lower: Any, upper: Any) -> Any:
    """``np.clip`` of each value into its band; a NaN edge does not bound (warming rows)."""
    out = np.empty(len(values))
    for i in range(len(values)):
        low = -np.inf if np.isnan(lower[i]) else lower[i]
        high = np.inf if np.isnan(upper[i]) else upper[i]
        out[i] = minimum(maximum(values[i], low), high)
    return out


@kernel
def learn_magnitude_rows(  # noqa: PLR0913 -- the rows and the slots' three columns
    slots: Any, values: Any, received: Any, magnitude: Any, points: Any, fractional: Any,
    memory: int, exposure: Any,
) -> bool:
    """Move each finite row's slot's usual ``|value|`` toward it, over ``memory`` points.

    ``magnitude`` and ``points`` are float32 columns. ``fractional`` (uint8) becomes 1 for
    a slot whose row as ``received`` is finite and not a whole number (of events, for a
    row with an ``exposure``: see ``resolved_whole``; empty: no row has one).

    Returns False, changing nothing, when a finite row's slot is past the columns (the
    caller grows them and calls again).
    """
    for i in range(len(slots)):
        if np.isfinite(values[i]) and slots[i] >= len(magnitude):
            return False
    for i in range(len(slots)):
        if not np.isfinite(values[i]):
            continue
        s = slots[i]
        magnitude[s], points[s], fractional[s] = magnitude_after(
            value=values[i], received=received[i], magnitude=magnitude[s], points=points[s],
            fractional=fractional[s], memory=memory,
            exposure=exposure[i] if len(exposure) else np.nan)
    return True


@row_kernel
def magnitude_after(  # noqa: PLR0913 -- a finite row and its slot's three cells
    value: Any, received: Any, magnitude: Any, points: Any, fractional: Any, memory: int,
    exposure: Any,
) -> Any:
    """A slot's usual ``|value|``, points seen and fractional flag after a finite row."""
    if np.isfinite(received) and not resolved_whole(value=received, exposure=exposure):
        fractional = 1
    seen = minimum(np.float64(points) + 1.0, np.float64(memory))
    weight = maximum(1.0 / seen, 1.0 / memory)
    typical = np.float64(magnitude)
    learned = typical + weight * (np.abs(value) - typical)
    if np.isfinite(learned):  # ``saturated``: finite values stay finite in float32
        learned = minimum(maximum(learned, -_FLOAT32_MAX), _FLOAT32_MAX)
    return learned, seen, fractional


@kernel
def ready_rows(upper: Any, score: Any, mask: Any, quiet: Any) -> Any:
    """Rows with a band and a finite score (and, where given, ``mask`` and ``quiet``)."""
    rows = np.empty(len(upper), np.intp)
    n = 0
    for i in range(len(upper)):
        if (not np.isnan(upper[i]) and np.isfinite(score[i])
                and (len(mask) == 0 or mask[i]) and (len(quiet) == 0 or quiet[i])):
            rows[n] = i
            n += 1
    return rows[:n]


@kernel
def scale_lesson(rows: Any, slots: Any, score: Any, k: Any, values: Any, expected: Any) -> Any:
    """What the deviation scale learns from ``rows``: slots, spread units, absolute sizes."""
    n = len(rows)
    at, z, size = np.empty(n, slots.dtype), np.empty(n), np.empty(n)
    for j in range(n):
        i = rows[j]
        at[j], z[j], size[j] = slots[i], score[i] * k[i], np.abs(values[i] - expected[i])
    return at, z, size
