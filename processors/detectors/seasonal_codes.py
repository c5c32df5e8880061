"""Two-byte codes for a seasonal profile's per-phase mean and spread, relative to the slot.

A profile keeps, per phase bucket, a mean and a mean absolute deviation. Stored as float32
they cost 8 bytes a phase; here they cost 4, relative to two float32 scalars of the slot:

- the mean is ``centre + unit * q`` with ``q`` an int16: fixed point over the slot's own
  range of phase means, which a refit spreads over ``+-FILL`` codes (room to double before
  the next refit). The error is at most one ``unit``, ``range / 32768``: far below the
  spread of any phase (``spread_mix`` of the all-phase spread is the least a phase has)
  unless the phase means span tens of thousands of those spreads;
- the spread is ``unit * (1 + m / 1024) * 2 ** (e - 32)``, a float with a 10-bit mantissa
  and a 6-bit exponent packed in a uint16 (relative error below 1/1024, like float16, but
  relative to the slot's unit, so a bytes/s series does not overflow it); code 0 is 0.

Learning moves a mean by ``weight * residual``, which for a point every 10 s in an hour's
phase is under a thousandth of the residual: rounded to the nearest code such steps would
often vanish. Mean codes are therefore rounded up or down at random in proportion
(stochastic rounding, unbiased), with a dither drawn from the point's timestamp
(deterministic, the same for a batch and a loop). Dithering adds noise to a phase's mean,
about ``sqrt(|residual| * unit / 2)``: small while the unit is far below the noise.
Spread codes are rounded to the nearest: a step of a thousandth of the spread still moves
their 10-bit mantissa (steps ten times smaller, an hour's phase learning a point a second,
can vanish), and dithering them too moved NAB's B-half rows by up to 0.6 points where the
nearest code left every A and B row as it was. Everything here is exact float arithmetic
(``frexp``, ``ldexp``), so the compiled kernels give the bits of the plain Python.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel

MEAN_CODES = 32767  # int16 codes used: -32767 .. 32767
FILL = 16384  # a refit puts the slot's means within +-FILL codes of its centre
DEV_MANTISSA = 1024  # 10 bits of mantissa
DEV_BIAS = 32  # exponents 0 .. 63 are 2**-32 .. 2**31 units
DEV_EXPONENTS = 64
DEV_HEADROOM = 2.0 ** -30  # a refit keeps the largest spread below 2**30 units
REACH = 256.0  # a new mean lands at most this many spans beyond the slot's range (refit)
Counts = NDArray[np.unsignedinteger[Any]]  # only ``> 0`` is read: one-byte codes or counts
_GOLDEN = 0.6180339887498949  # a Weyl step: successive multiples spread evenly over [0, 1)


@kernel
def dither(ts: int) -> float:
    """A number in [0, 1) from a timestamp (ns): successive points spread evenly over it."""
    k = (ts // 1000) % 1000003  # microseconds, folded by a prime: a Weyl sequence
    return (k * _GOLDEN) % 1.0


@kernel
def decode_mean(code: int, centre: float, unit: float) -> float:
    """The mean a code stands for."""
    # np.float64, not float(): compiled, float() keeps a float32 (or int16) as it is.
    return np.float64(centre) + np.float64(unit) * np.float64(code)


@kernel
def decode_dev(code: int, unit: float) -> float:
    """The spread a code stands for (code 0 is 0)."""
    if code == 0:
        return 0.0
    e, m = int(code) >> 10, int(code) & (DEV_MANTISSA - 1)
    return np.float64(unit) * math.ldexp(1.0 + m / DEV_MANTISSA, e - DEV_BIAS)


@kernel
def mean_code(value: float, centre: float, unit: float, u: float) -> float:
    """``(value - centre) / unit`` rounded down after adding ``u`` (may not fit int16)."""
    if not unit > 0:
        return 0.0 if value == centre else math.inf
    x = (np.float64(value) - np.float64(centre)) / np.float64(unit) + u
    # Far out of range (or NaN): no floor to take, the caller refits.
    return float(math.floor(x)) if abs(x) < 1e9 else math.inf


@kernel
def dev_code(value: float, unit: float, u: float) -> int:
    """The code of a spread, rounded down after adding ``u``; -1 if it does not fit."""
    if not value > 0:
        return 0
    if not unit > 0:
        return -1
    ratio = np.float64(value) / np.float64(unit)
    if not ratio < 2.0 ** (DEV_EXPONENTS - DEV_BIAS):
        return -1
    mant, exp = math.frexp(ratio)  # value / unit = (2 * mant) * 2**(exp - 1)
    e = exp - 1 + DEV_BIAS
    if e < 0:
        return 0  # below 2**-32 units: reads as 0
    m = int(math.floor((2.0 * mant - 1.0) * DEV_MANTISSA + u))
    if m >= DEV_MANTISSA:
        m, e = 0, e + 1
    if e >= DEV_EXPONENTS:
        return -1
    return e * DEV_MANTISSA + m


@kernel
def _seen_range(
    s: int, b: int, means: NDArray[np.float64], devs: NDArray[np.float64],
    count_col: Counts,
) -> tuple[float, float, float]:
    """Lowest and highest mean and largest spread of the phases seen (and phase ``b``).

    ``(inf, -inf, 0)`` when no phase was seen.
    """
    lo, hi, top = math.inf, -math.inf, 0.0
    for k in range(len(means)):
        if k == b or count_col[s, k] > 0:
            lo, hi, top = min(lo, means[k]), max(hi, means[k]), max(top, devs[k])
    return lo, hi, top


@kernel
def _scale(lo: float, hi: float, top: float) -> tuple[float, float]:
    """Centre and unit for means in ``[lo, hi]`` and spreads up to ``top`` (as stored)."""
    if lo > hi:  # nothing seen
        lo = hi = 0.0
    # The centre as stored (float32), so that the codes are measured from what is read.
    centre = np.float64(np.float32(0.5 * lo + 0.5 * hi))
    # Room for the means to move by a spread or so before the next refit: one phase seen
    # (a series' first hour in the weekly profile) spans nothing, and a unit set by its
    # spread's headroom alone (2**-30 of it) made every later point refit the slot.
    half = max(hi - centre, centre - lo, top)
    return centre, np.float64(np.float32(max(half / FILL, top * DEV_HEADROOM)))


@kernel
def fit(
    s: int, b: int, means: NDArray[np.float64], devs: NDArray[np.float64],
    centre_col: NDArray[np.float32], unit_col: NDArray[np.float32],
    mean_col: NDArray[np.int16], dev_col: NDArray[np.uint16], count_col: Counts,
) -> None:
    """Encode slot ``s``'s phase means and spreads, choosing its centre and unit.

    The centre is the middle of the means of the phases seen (``count > 0``, and phase
    ``b`` if >= 0), the unit the smallest that keeps them within ``FILL`` codes of it and
    the largest spread within the exponents; codes are rounded to the nearest.
    """
    centre, unit = _scale(*_seen_range(s, b, means, devs, count_col))
    centre_col[s], unit_col[s] = centre, unit
    for k in range(len(means)):
        q = mean_code(means[k], centre, unit, 0.5)
        mean_col[s, k] = int(min(max(q, -MEAN_CODES), MEAN_CODES))
        d = dev_code(devs[k], unit, 0.5)
        dev_col[s, k] = d if d >= 0 else DEV_EXPONENTS * DEV_MANTISSA - 1


@kernel
def refit(
    s: int, b: int, new_mean: float, new_dev: float, u: float,
    centre_col: NDArray[np.float32], unit_col: NDArray[np.float32],
    mean_col: NDArray[np.int16], dev_col: NDArray[np.uint16], count_col: Counts,
) -> None:
    """Write phase ``b``'s new values; re-encode slot ``s`` if needed or four times finer.

    A new mean that does not fit and lies more than ``REACH`` spans (the range of the
    slot's means or its largest spread) beyond that range is learned at that distance: a
    first value of a phase is learned raw, and one spike would otherwise widen the unit of
    every phase for as long as its phase remembers it. ``REACH`` is wide (256: the unit
    then stays below 1/64 of the span) because the clamp changes what is learned: at 3
    spans it cost msmon two false opens. A lasting shift still widens the range, by up to
    2 * REACH + 1 times a point.
    """
    centre, unit = np.float64(centre_col[s]), np.float64(unit_col[s])
    buckets = mean_col.shape[1]
    means = np.empty(buckets)
    devs = np.empty(buckets)
    for k in range(buckets):
        means[k] = decode_mean(int(mean_col[s, k]), centre, unit)
        devs[k] = decode_dev(int(dev_col[s, k]), unit)
    q = mean_code(new_mean, centre, unit, u)
    d = dev_code(new_dev, unit, 0.5)
    fits = abs(q) <= MEAN_CODES and d >= 0
    if not fits:
        lo, hi, top = _seen_range(s, -1, means, devs, count_col)
        span = max(hi - lo, top) if lo <= hi else 0.0
        if span > 0:
            new_mean = min(max(new_mean, lo - REACH * span), hi + REACH * span)
    means[b], devs[b] = new_mean, new_dev
    if fits and 4.0 * _scale(*_seen_range(s, b, means, devs, count_col))[1] > unit:
        mean_col[s, b], dev_col[s, b] = int(q), d
        return
    fit(s, b, means, devs, centre_col, unit_col, mean_col, dev_col, count_col)


@kernel
def encode_profiles(
    mean: NDArray[np.float32], dev: NDArray[np.float32], count: Counts,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int16], NDArray[np.uint16]]:
    """Codes for float profiles (one row per slot): centre, unit, mean and spread codes."""
    rows, buckets = mean.shape
    centre = np.zeros(rows, np.float32)
    unit = np.zeros(rows, np.float32)
    mean_col = np.zeros((rows, buckets), np.int16)
    dev_col = np.zeros((rows, buckets), np.uint16)
    means = np.empty(buckets)
    devs = np.empty(buckets)
    for s in range(rows):
        for k in range(buckets):
            means[k], devs[k] = float(mean[s, k]), float(dev[s, k])
        fit(s, -1, means, devs, centre, unit, mean_col, dev_col, count)
    return centre, unit, mean_col, dev_col


@row_kernel
def store(
    s: int, b: int, new_mean: float, new_dev: float, ts: int, review: bool,
    centre_col: NDArray[np.float32], unit_col: NDArray[np.float32],
    mean_col: NDArray[np.int16], dev_col: NDArray[np.uint16], count_col: Counts,
) -> None:
    """Write a phase's new mean and spread, refitting the slot if they do not fit.

    With ``review`` (the slot's first point of a cycle), the slot is also re-encoded if its
    unit can be four times finer: the range a spike widened narrows again once its phase
    has forgotten it. One pass over the phases a cycle.
    """
    centre, unit = np.float64(centre_col[s]), np.float64(unit_col[s])
    u = dither(ts)
    q = mean_code(new_mean, centre, unit, u)
    d = dev_code(new_dev, unit, 0.5)
    if abs(q) > MEAN_CODES or d < 0 or review:
        refit(s, b, new_mean, new_dev, u, centre_col, unit_col, mean_col, dev_col, count_col)
        return
    mean_col[s, b] = int(q)
    dev_col[s, b] = d
