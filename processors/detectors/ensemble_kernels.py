"""Compiled per-row steps of ``Ensemble``: combine the members' views of a round.

Every kernel takes the members' raw views of the round as ``(rows, members)`` arrays:
``expected``, ``upper`` and ``lower`` (each member's band one spread unit wide, NaN while
it warms up), ``floor`` (the member's smallest spread, in the series' units), ``mult`` (its
tail multiplier) and, for the narrowed band, the persistence factors ``narrow_up`` and
``narrow_down``. A member's unit spread on each side is its band's half-width, floored at
``floor`` and at ``TINY`` of the expected value, so resting-at-zero series stay finite.

The arithmetic follows the numpy code it replaced operation for operation (same order,
``fmax``/``fmin`` where NaN is ignored, ``maximum`` where it propagates), so scores are
the same to the last bit.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.kernel_math import fmax, fmin

TINY = 1e-12
F32_MAX = float(np.finfo(np.float32).max)
MAX_STRETCH = 10.0  # the refractory stretch of an excursion of 35 sigmas or more
REFRACTORY_STEP_S = 300.0
"""Event time that counts as one point of refractory age at most: the 5-minute spacing of
NAB's series, on which ``refractory_hold`` and ``refractory_decay`` were set."""
MAX_AGE = int(np.iinfo(np.int32).max)  # points since the last excursion saturate (int32)
TAIL_MEMORY_NS = 7 * 86400 * 10**9
"""Event time the members' tail statistics remember: a week, the longest cycle the default
members model (``tail_window`` points at a slot's first row and after a silence)."""
SILENCE_NS = 2 * 3600 * 10**9
"""A gap longer than this is a silence, not a spacing: two of the weekly profile's hourly
phases, so an hourly series' jitter or one missed point is still its spacing."""
USUAL_MEMORY_NS = 86400 * 10**9
"""Event time the usual size of the persistence averages remembers at least: a day, so it
has seen the day's quiet and busy hours (``persistence_window`` is the least in points)."""


@row_kernel
def time_window(window: float, gap_ns: float, span_ns: float) -> float:
    """Points an exponential memory keeps at a row ``gap_ns`` after its slot's previous one.

    ``window`` points, or as many as ``span_ns`` of event time holds at that gap, whichever
    is more: each row then decays the memory by at most its share of ``span_ns`` (the
    exponential forgetting of a clock, not of a count). A row without a previous one (0)
    keeps ``window``; so does one after a long gap (it is not ``span_ns``' decay on its own).
    """
    if gap_ns > 0.0:
        return max(float(window), float(span_ns) / float(gap_ns))
    return float(window)


@row_kernel
def tail_memory(window: float, gap_ns: float) -> float:
    """Points the tails remember at a row ``gap_ns`` after its slot's previous one.

    A week of event time at that gap, not a count: ``window`` points were 17 days at
    5-minute points and 208 at hourly ones, where a regime weeks gone (a week of wide
    swings, then three calm ones) still set the floor and tail of every member. A slot's
    first row (0) keeps ``window``; so does a row after a silence (over ``SILENCE_NS``):
    a silence is not a week's decay on its own.
    """
    if 0.0 < gap_ns <= SILENCE_NS:
        return float(TAIL_MEMORY_NS) / float(gap_ns)
    return float(window)


@row_kernel
def memories(usual_window: float, tail_window: float, gap_ns: float) -> tuple[float, float]:
    """Points a row's persistence usual sizes and tails remember (each its own clock)."""
    return (time_window(usual_window, gap_ns, USUAL_MEMORY_NS),
            tail_memory(tail_window, gap_ns))


@kernel
def _spreads(expected: float, upper: float, lower: float, floor: float) -> tuple[float, float]:
    """One member's unit spreads above and below (NaN while it warms up)."""
    if upper != upper:  # noqa: PLR0124
        return math.nan, math.nan
    least = TINY * (1.0 + abs(expected))
    # np.maximum: a NaN floor propagates (then fmax keeps the half-width).
    least = floor if (floor != floor or floor > least) else least  # noqa: PLR0124
    return fmax(upper - expected, least), fmax(expected - lower, least)


@kernel
def _z(value: float, expected: float, up: float, down: float) -> float:
    dev = value - expected
    return dev / up if dev >= 0 else -dev / down


@kernel
def recent_peak(
    peak: NDArray[np.float32], age: NDArray[np.int32], peak_ns: NDArray[np.int64],
    slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64], step_ns: float, hold: int,
    decay: float,
) -> NDArray[np.float64]:
    """The last excursion's score per row, held ``hold`` points then decaying."""
    out = np.empty(len(slots))
    for row in range(len(slots)):
        s = slots[row]
        out[row] = recent_of(float(peak[s]), age[s], peak_ns[s], ts_unix_nano[row], step_ns,
                             hold, decay)
    return out


@row_kernel
def recent_of(peak: float, age: int, peak_ns: int, t: int, step_ns: float, hold: int,
              decay: float) -> float:
    """``recent_peak`` of one row: its slot's peak, age and peak time, at time ``t``."""
    steps = (t - peak_ns) / step_ns - 1.0
    points = max(float(age), math.floor(steps))
    late = max(points - hold, 0.0)
    held: float = peak * decay ** late
    return held


@kernel
def widening(  # noqa: PLR0913 -- the excursion memory, the rows and the settings
    recent: NDArray[np.float64], age: NDArray[np.int32], peak_ns: NDArray[np.int64],
    slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64], step_ns: float, level: float,
    max_stretch: float, grace: int,
) -> NDArray[np.float64]:
    """``clip(recent / level, 1, max_stretch)``; 1 just after a peak (``grace`` points or steps)."""
    out = np.empty(len(slots))
    for row in range(len(slots)):
        s = slots[row]
        out[row] = widening_of(recent[row], age[s], peak_ns[s], ts_unix_nano[row], step_ns,
                               level, max_stretch, grace)
    return out


@row_kernel
def widening_of(recent: float, age: int, peak_ns: int, t: int, step_ns: float, level: float,
                max_stretch: float, grace: int) -> float:
    """``widening`` of one row: its recent peak, its slot's age and peak time, at time ``t``."""
    stretch = recent / level
    if stretch == stretch:  # noqa: PLR0124 - np.clip keeps NaN
        stretch = min(max(stretch, 1.0), max_stretch)
    # A peak of unknown time (saved before times were kept) is "never": points only.
    since = t - peak_ns
    graced = age < grace or (grace > 0 and 0 <= since <= grace * step_ns)
    return 1.0 if graced else stretch


@kernel
def band(
    expected: NDArray[np.float64], upper: NDArray[np.float64], lower: NDArray[np.float64],
    floor: NDArray[np.float64], mult: NDArray[np.float64], narrow_up: NDArray[np.float64],
    narrow_down: NDArray[np.float64], width: NDArray[np.float64], combine_max: bool,
    centre: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
           NDArray[np.float64]]:
    """The combined band ``width`` (per row, in sigmas) wide, and the expected value in it.

    Also the baseline: the most specific ready member's expected value, not kept in the band.
    """
    rows, members = expected.shape
    out_expected, out_lower, out_upper = np.empty(rows), np.empty(rows), np.empty(rows)
    out_baseline = np.empty(rows)
    for row in range(rows):
        so_far = BAND_START
        for m in range(members):
            so_far = band_step(
                so_far, expected[row, m], upper[row, m], lower[row, m], floor[row, m],
                mult[row, m], narrow_up[row, m], narrow_down[row, m], width[row], combine_max)
        out_expected[row], out_lower[row], out_upper[row], out_baseline[row] = band_end(
            so_far, centre)
    return out_expected, out_lower, out_upper, out_baseline


BAND_START = (math.nan,) * 6
"""``band_step``'s state before the first member: the band so far (lower, upper edge), the
last ready member's expected value, the first member's, and the last ready member's own
lower and upper edge."""


@row_kernel
def band_step(  # noqa: PLR0913 -- the band so far, one member's view, the width
    so_far: tuple[float, float, float, float, float, float], e: float, upper: float,
    lower: float, floor: float, mult: float, narrow_up: float, narrow_down: float,
    width: float, combine_max: bool,
) -> tuple[float, float, float, float, float, float]:
    """``band`` so far (``BAND_START`` before the first member), one member more."""
    lo, hi, ready_expected, first, ready_lo, ready_hi = so_far
    up, down = _spreads(e, upper, lower, floor)
    up = up * mult * narrow_up
    down = down * mult * narrow_down
    member_lo, member_hi = e - width * down, e + width * up
    ready = upper == upper  # noqa: PLR0124
    if combine_max:
        lo, hi = fmax(lo, member_lo), fmin(hi, member_hi)
    elif ready:
        lo, hi = member_lo, member_hi
    if ready:
        ready_expected, ready_lo, ready_hi = e, member_lo, member_hi
    if first != first:  # noqa: PLR0124
        first = e
    return lo, hi, ready_expected, first, ready_lo, ready_hi


@row_kernel
def band_end(so_far: tuple[float, float, float, float, float, float], centre: float,
             ) -> tuple[float, float, float, float]:
    """``band``'s expected value, lower and upper edge and baseline after every member."""
    lo, hi, ready_expected, first, ready_lo, ready_hi = so_far
    mid = first if ready_expected != ready_expected else ready_expected  # noqa: PLR0124
    if lo > hi:
        # The members disagree by more than their bands: one of them is wrong, most often
        # the level, lagging a step its seasonal profiles foresee (a weekend's end), so the
        # most specific ready member's band stands alone.
        lo, hi = ready_lo, ready_hi
    margin = centre * (hi - lo)
    return fmin(fmax(mid, lo + margin), hi - margin), lo, hi, mid


@kernel
def member_z(
    values: NDArray[np.float64], expected: NDArray[np.float64], upper: NDArray[np.float64],
    lower: NDArray[np.float64], floor: NDArray[np.float64], mult: NDArray[np.float64],
    narrow_up: NDArray[np.float64], narrow_down: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Per row and member the deviation in (scaled, narrowed) spreads; 0 while warming."""
    rows, members = expected.shape
    out = np.zeros((rows, members))
    for row in range(rows):
        for m in range(members):
            out[row, m] = member_z_cell(values[row], expected[row, m], upper[row, m],
                                        lower[row, m], floor[row, m], mult[row, m],
                                        narrow_up[row, m], narrow_down[row, m])
    return out


@row_kernel
def member_z_cell(value: float, e: float, upper: float, lower: float, floor: float,
                  mult: float, narrow_up: float, narrow_down: float) -> float:
    """``member_z`` of one row and member."""
    if upper == upper:  # noqa: PLR0124 - ready
        up, down = _spreads(e, upper, lower, floor)
        return _z(value, e, up * mult * narrow_up, down * mult * narrow_down)
    return 0.0


@kernel
def combine(z: NDArray[np.float64], upper: NDArray[np.float64], combine_max: bool
            ) -> NDArray[np.float64]:
    """The members' deviations combined per row.

    ``combine_max``: the largest (a NaN propagates, as ``np.maximum``); otherwise the last
    ready member's (0 where none is ready).
    """
    rows, members = z.shape
    out = np.zeros(rows)
    for row in range(rows):
        combined = 0.0
        for m in range(members):
            combined = combine_step(combined, z[row, m], upper[row, m], combine_max)
        out[row] = combined
    return out


@row_kernel
def combine_step(combined: float, z_m: float, upper: float, combine_max: bool) -> float:
    """``combine`` so far (start from 0), one member more (members in order)."""
    if combine_max:
        if combined == combined and (z_m != z_m or z_m > combined):  # noqa: PLR0124
            return z_m
    elif upper == upper:  # noqa: PLR0124
        return z_m
    return combined


@kernel
def lessons(
    values: NDArray[np.float64], expected: NDArray[np.float64], upper: NDArray[np.float64],
    lower: NDArray[np.float64], floor: NDArray[np.float64], mult: NDArray[np.float64],
    combine_max: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
           NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
    """What learning a round needs, per row and member (scaled, never narrowed).

    Returns the combined scaled deviation per row (the excursion memory's), the signed
    scaled deviation (persistence's), the unscaled deviation and the absolute residual
    (the member's tail scale's), whether the member is ready, and per member how many rows
    it is ready on.
    """
    rows, members = expected.shape
    ones = np.ones((rows, members))
    scaled = member_z(values, expected, upper, lower, floor, mult, ones, ones)
    combined = combine(scaled, upper, combine_max)
    unit = member_z(values, expected, upper, lower, floor, ones, ones, ones)
    signed, resid = np.empty((rows, members)), np.empty((rows, members))
    ready = np.empty((rows, members), np.bool_)
    ready_rows = np.zeros(members, np.int64)
    for row in range(rows):
        for m in range(members):
            e = expected[row, m]
            signed[row, m] = scaled[row, m] if values[row] >= e else -scaled[row, m]
            resid[row, m] = abs(values[row] - e)
            ready[row, m] = upper[row, m] == upper[row, m]  # noqa: PLR0124
            ready_rows[m] += ready[row, m]
    return combined, signed, unit, resid, ready, ready_rows


@kernel
def learn_peak(
    peak: NDArray[np.float32], age: NDArray[np.int32], peak_ns: NDArray[np.int64],
    slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64], z: NDArray[np.float64],
    recent: NDArray[np.float64], max_age: int,
) -> None:
    """A bigger excursion than the recent peak becomes the new peak; else the peak ages."""
    for row in range(len(slots)):
        s = slots[row]
        peak[s], age[s], peak_ns[s] = peak_after(float(peak[s]), age[s], peak_ns[s], z[row],
                                                 recent[row], ts_unix_nano[row], max_age)


@row_kernel
def peak_after(peak: float, age: int, peak_ns: int, z: float, recent: float, t: int,
               max_age: int) -> tuple[float, int, int]:
    """A slot's peak, its age and time after excursion ``z`` at time ``t`` (``learn_peak``)."""
    if z >= recent:
        if math.isfinite(z):  # saturated(): finite values clip to float32's range
            z = min(max(z, -F32_MAX), F32_MAX)
        return z, 0, t
    return peak, min(age, max_age - 1) + 1, peak_ns
