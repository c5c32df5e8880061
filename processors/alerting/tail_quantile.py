"""Running upper quantile of a non-negative score, per slot, in a decayed log histogram."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays

# Geometric bins from _LOW up by _RATIO each: 0.5 ... ~1.3e5 in 56 bins (plus the two open
# ends). The resolution only matters around and above a Gaussian tail (|z| >= 3). Above the
# top edge the estimate answers the edge: deviations in spread units floored at half their
# plain mean absolute deviation (DeviationScale) put a burst among resting points at about
# 1.6 / p spreads for a share p of such points, so a 0.999 quantile stays near 1,600 or
# below (30 more bins, up to 1.1e8, changed no NAB, msmon or incidents figure).
_LOW = 0.5
_RATIO = 1.25
_BINS = 56
_LOG_RATIO = float(np.log(_RATIO))
TAIL_BINS = _BINS
"""Closed bins of a tail histogram (checkpoint migrations fold older, longer ones)."""
TAIL_TOP = _LOW * _RATIO**_BINS
"""The top edge: estimates past it answer it."""
# Rather than decaying every bin each point, the increment grows by 1 / decay each point,
# so the newest point weighs most and never rounds off. Bins are 24-bit counts of a unit
# of the slot's own (its first point weighs _FIRST_INC units), kept as a uint16 and a
# uint8 column (3 bytes a bin; float32 took 4): when a bin would pass _CODE_MAX, every bin
# and the increment are halved (old mass that halves to nothing weighs nothing next to
# the recent points). The quantile only reads ratios of bins. With 16 bits instead of 24
# the estimates moved by up to 0.4 % and NAB's tuning half lost 0.3 points.
_CODE_MAX = (1 << 24) - 1
_FIRST_INC = float(1 << 20)
# Points per slot are counted in an int32 that wraps back by a multiple of the refresh
# cadence, well past the first exact updates.
_WRAP_AT = 1 << 30
# The estimate moves slowly (a window of thousands of points), so after the first points it
# is recomputed every few updates, and at once when a score exceeds it (the tail grows);
# the rest of the time queries read the cached value.
_EXACT_FOR = 64
_REFRESH_EVERY = 8


def integer_bins(
    hist: NDArray[Any], inc: NDArray[Any]
) -> tuple[NDArray[np.uint16], NDArray[np.uint8], NDArray[np.float64]]:
    """Float histograms (one row per slot) and next weights as 24-bit bins in units.

    Each row's largest bin becomes half of ``_CODE_MAX`` (room to grow before a halving),
    the others to the nearest unit; an empty row starts afresh. Returns the high and low
    columns and the increments in the same units.
    """
    hist = np.asarray(hist, np.float64)
    top = hist.max(axis=1, initial=0.0)
    units = np.where(top > 0, (_CODE_MAX + 1) / 2 / np.where(top > 0, top, 1.0), 0.0)
    codes = np.rint(hist * units[:, None]).astype(np.int64)
    inc = np.where(top > 0, np.asarray(inc, np.float64) * units, _FIRST_INC)
    return (codes >> 8).astype(np.uint16), (codes & 255).astype(np.uint8), inc


def gaussian_abs_quantile(q: float) -> float:
    """The ``q`` quantile of ``|z|`` for a standard normal ``z`` (3.29 for 0.999)."""
    return NormalDist().inv_cdf(0.5 + q / 2.0)


class TailQuantile:
    """Per-slot running ``q`` quantile of a non-negative score over about ``window`` points.

    Keeps an exponentially decayed histogram of the score on geometric bins (58 24-bit
    counts per slot, of units of its own that halve as the increment grows): O(1) per
    update, O(bins) per query, within a bin the quantile is interpolated log-linearly, so
    estimates are within a few percent. Struct-of-arrays, like detectors.

    Examples
    --------
    >>> tq = TailQuantile(q=0.99, window=1000)
    >>> rng = np.random.default_rng(0)
    >>> for z in np.abs(rng.standard_normal(3000)):
    ...     tq.update(np.array([0]), np.array([z]))
    >>> round(float(tq.quantile(np.array([0]))[0]), 1)  # |N(0,1)| has 2.58
    2.5
    """

    def __init__(self, *, q: float = 0.999, window: int = 2000) -> None:
        if not 0.0 < q < 1.0:
            msg = f"tail quantile must be in (0, 1); got {q}"
            raise ValueError(msg)
        if window < 2:
            msg = f"tail window must be >= 2 points; got {window}"
            raise ValueError(msg)
        self.q = q
        self.window = window
        self._growth = 1.0 / (1.0 - 1.0 / window)
        self._state = SlotArrays(
            hist=Column(np.uint16, 0, (_BINS + 2,)),  # a bin's high 16 bits
            low=Column(np.uint8, 0, (_BINS + 2,)),  # and its low 8 (see _CODE_MAX)
            inc=Column(np.float64, _FIRST_INC),  # the next point's weight (see _CODE_MAX)
            n=Column(np.int32),
            q=Column(np.float32, 0.0),  # the cached estimate
        )

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._state.ensure(slots)

    def count(self, slots: NDArray[np.intp]) -> NDArray[np.int64]:
        """Points learned per slot (past about a billion, less a multiple of 2**29)."""
        self._ensure(slots)
        return self._state.n[slots].astype(np.int64)

    def update(self, slots: NDArray[np.intp], scores: NDArray[np.float64]) -> None:
        """Add one score per distinct slot (non-finite scores are ignored)."""
        # Only rows that learn make room (non-finite scores are ignored).
        self._ensure(slots[np.isfinite(scores)])
        state = self._state
        _learn(state.hist, state.low, state.inc, state.n, state.q, slots, scores, self._growth,
               self.q)

    def quantile(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Current quantile estimate per slot (0 for a slot with no history).

        Refreshed at every update for a slot's first 64 points, then at every score above
        the estimate and every 8th update.
        """
        self._ensure(slots)
        # Two numpy calls cost less than a kernel call here (one gather).
        return self._state.q[slots].astype(np.float64)

    def _estimate(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        return _estimates(self._state.hist, self._state.low, slots, self.q)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots``."""
        self._state.reset(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot arrays."""
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore arrays from ``state_dict``."""
        self._state.load_state_dict(state)


_MAD_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
SPREAD_FLOOR = 0.5
"""Share of the plain mean absolute deviation (as a sigma) a spread never goes below."""
TAIL_GROWTH = 1.5
"""One deviation is learned as at most this many times the current tail quantile."""


class DeviationScale:
    """How a detector's deviations on each series compare to a normal distribution.

    Two per-slot statistics over about ``window`` points:

    - ``multiplier``: ``max(q, g) / g``, ``q`` the running ``q`` quantile of the deviation
      in the detector's spread units and ``g`` that of ``|N(0, 1)|``: 1 for a series the
      detector fits with Gaussian-like residuals, 10 if its usual extremes are ten times
      wider. Anomalies are included but capped at ``TAIL_GROWTH`` times the current
      quantile (Huber-style): one incident widens the band by at most that much, while a
      recurring pattern of bursts widens it step by step until it stops surprising.
    - ``floor``: ``SPREAD_FLOOR`` times the plain (not outlier-capped) mean absolute
      deviation from the expected value, as a sigma, in the series' units. Robust spreads
      collapse on series that rest at one value between bursts (a rate at 0, an empty
      queue), which would make every burst infinitely surprising; the floor counts bursts.

    Examples
    --------
    >>> scale = DeviationScale(q=0.999, window=500)
    >>> rng = np.random.default_rng(0)
    >>> for z in np.abs(10 * rng.standard_normal(2000)):  # tails 10x a normal's
    ...     scale.update(np.array([0]), np.array([z]), np.array([z]))
    >>> round(float(scale.multiplier(np.array([0]))[0]))
    10
    """

    def __init__(self, *, q: float = 0.999, window: int = 2000) -> None:
        self.tails = TailQuantile(q=q, window=window)
        self._gauss = gaussian_abs_quantile(q)
        self._typical = SlotArrays(typical=Column(np.float32, 0.0))

    def multiplier(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Tail widening factor per slot, >= 1."""
        self.tails._ensure(slots)
        return _multipliers(self.tails._state.q, slots, self._gauss)

    def floor(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Smallest spread (one sigma, in the series' units) per slot."""
        self._typical.ensure(slots)
        return _floors(self._typical.typical, slots)

    def ensure(self, slots: NDArray[np.intp]) -> None:
        """Make every row in ``slots`` exist."""
        self.tails._ensure(slots)
        self._typical.ensure(slots)

    def holders(self) -> tuple[SlotArrays, SlotArrays]:
        """Its state containers: the tail histogram's and the typical deviation's."""
        return self.tails._state, self._typical

    def spread_columns(self) -> tuple[NDArray[np.float32], NDArray[np.float32], float]:
        """What ``spread_terms`` reads: typical deviations, cached quantiles, the normal's."""
        return self._typical.typical, self.tails._state.q, self._gauss

    def learn_columns(self) -> tuple[Any, ...]:
        """What ``update`` writes and reads, in the order ``_learn_scaled`` takes them.

        (The histogram's columns, the cached quantile, the typical deviation, then the
        growth, quantile, the normal's quantile and the window.)
        """
        tails = self.tails._state
        return (tails.hist, tails.low, tails.inc, tails.n, tails.q, self._typical.typical,
                self.tails._growth, self.tails.q, self._gauss, self.tails.window)

    def spread_terms(self, slots: NDArray[np.intp], floor: NDArray[np.float64],
                     mult: NDArray[np.float64], column: int) -> None:
        """Write ``floor`` and ``multiplier`` of ``slots`` into column ``column`` of two arrays.

        One call where an ensemble needs both for each member (rows as ``slots``).
        """
        self.ensure(slots)
        _spread_terms(self._typical.typical, self.tails._state.q, slots, self._gauss, floor,
                      mult, column)

    def update(
        self, slots: NDArray[np.intp], z: NDArray[np.float64], resid: NDArray[np.float64]
    ) -> None:
        """Learn one deviation per distinct slot: in spread units and in absolute terms."""
        self.ensure(slots)
        tails = self.tails._state
        _learn_scaled(tails.hist, tails.low, tails.inc, tails.n, tails.q,
                      self._typical.typical, slots, z, resid, self.tails._growth, self.tails.q,
                      self._gauss, self.tails.window)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots``."""
        self.tails.reset(slots)
        self._typical.reset(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot arrays."""
        return {**self.tails.state_dict(), **self._typical.state_dict()}

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore arrays from ``state_dict``."""
        self.tails.load_state_dict(state)
        self._typical.load_state_dict(state)


# Kernels: one call per round, a loop over its rows (distinct slots). float32 columns are
# read through float() so that arithmetic stays float64 as in numpy, also when run as plain
# Python (where a Python float meeting a float32 scalar would compute in float32).
_FLOOR_PER_TYPICAL = SPREAD_FLOOR * _MAD_TO_SIGMA
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT32_MAX = int(np.iinfo(np.int32).max)


@kernel
def _bin(hist: NDArray[np.uint16], low: NDArray[np.uint8], slot: int, k: int) -> float:
    """Bin ``k`` of a slot, in its units."""
    return float(int(hist[slot, k]) * 256 + int(low[slot, k]))


@kernel
def _set_bin(hist: NDArray[np.uint16], low: NDArray[np.uint8], slot: int, k: int,
             value: int) -> None:
    hist[slot, k], low[slot, k] = value >> 8, value & 255


@kernel
def _estimate_row(hist: NDArray[np.uint16], low: NDArray[np.uint8], slot: int,
                  q: float) -> float:
    """The ``q`` quantile of one slot's histogram (``TailQuantile._estimate``)."""
    total = 0.0
    for k in range(_BINS + 2):
        total += _bin(hist, low, slot, k)
    rank = q * total
    # The bin holding the rank: how many cumulative sums fall short of it (every bin counts,
    # as in numpy's ``(cum < rank).sum()``), then the cumulative sum up to that bin.
    cum = 0.0
    short = 0
    for k in range(_BINS + 2):
        cum += _bin(hist, low, slot, k)
        if cum < rank:
            short += 1
    b = min(short, _BINS + 1)
    cum = 0.0
    for k in range(b + 1):
        cum += _bin(hist, low, slot, k)
    mass = _bin(hist, low, slot, b)
    before = cum - mass
    frac = (rank - before) / mass if mass > 0 else 0.0
    # Clamps written as comparisons keep a NaN, as np.maximum / np.minimum do.
    frac = 0.0 if frac < 0.0 else frac
    frac = 1.0 if frac > 1.0 else frac
    # Bin k >= 1 spans [LOW * R**(k-1), LOW * R**k); the open ends answer their edge.
    edge = b - 1 + frac
    edge = 0.0 if edge < 0.0 else edge
    edge = float(_BINS) if edge > _BINS else edge
    if not total > 0:
        return 0.0
    return _LOW * float(np.exp(edge * _LOG_RATIO))


@kernel
def _halve(hist: NDArray[np.uint16], low: NDArray[np.uint8], slot: int) -> None:
    """Halve every bin of a slot, rounding half to even (a lone unit of old mass goes)."""
    for k in range(_BINS + 2):
        h = int(_bin(hist, low, slot, k))
        half = h >> 1
        _set_bin(hist, low, slot, k, half + 1 if h & 1 and half & 1 else half)


@row_kernel
def _learn_row(hist: NDArray[np.uint16], low: NDArray[np.uint8], inc: NDArray[np.float64],
               n: NDArray[np.int32], cached: NDArray[np.float32], slot: int, score: float,
               growth: float, q: float) -> None:
    """Add one finite score to one slot (``TailQuantile.update``)."""
    pos = float(np.log(max(score, 1e-300) / _LOW)) / _LOG_RATIO
    b = min(max(int(np.floor(pos)) + 1, 0), _BINS + 1)
    step = float(inc[slot])
    while _bin(hist, low, slot, b) + max(step, 1.0) + 0.5 >= _CODE_MAX + 1:
        _halve(hist, low, slot)
        step *= 0.5
    # To the nearest unit, and at least one: with windows past some 30,000 points the
    # increment can halve below a unit, and a point must still count.
    old = int(_bin(hist, low, slot, b))
    _set_bin(hist, low, slot, b, max(int(float(old) + step + 0.5), old + 1))
    count = int(n[slot]) + 1
    if count > _INT32_MAX:  # wraps as the int32 numpy sum did (a corrupt count only)
        count -= 1 << 32
    if count >= _WRAP_AT:
        count -= _WRAP_AT >> 1
    n[slot] = count
    inc[slot] = step * growth
    if score >= float(cached[slot]) or count <= _EXACT_FOR or count % _REFRESH_EVERY == 0:
        cached[slot] = _estimate_row(hist, low, slot, q)


@kernel
def _learn(hist: NDArray[np.uint16], low: NDArray[np.uint8], inc: NDArray[np.float64],
           n: NDArray[np.int32], cached: NDArray[np.float32], slots: NDArray[np.intp],
           scores: NDArray[np.float64], growth: float, q: float) -> None:
    for i in range(len(slots)):
        if math.isfinite(scores[i]):
            _learn_row(hist, low, inc, n, cached, slots[i], scores[i], growth, q)


@kernel
def _estimates(hist: NDArray[np.uint16], low: NDArray[np.uint8], slots: NDArray[np.intp],
               q: float) -> NDArray[np.float64]:
    out = np.empty(len(slots))
    for i in range(len(slots)):
        out[i] = _estimate_row(hist, low, slots[i], q)
    return out


@kernel
def _widened(cached: float, gauss: float) -> float:
    """``max(q, g)``, a NaN estimate staying NaN as with np.maximum."""
    return gauss if cached < gauss else cached


@kernel
def _multipliers(cached: NDArray[np.float32], slots: NDArray[np.intp],
                 gauss: float) -> NDArray[np.float64]:
    out = np.empty(len(slots))
    for i in range(len(slots)):
        out[i] = _widened(float(cached[slots[i]]), gauss) / gauss
    return out


@kernel
def _floors(typical: NDArray[np.float32], slots: NDArray[np.intp]) -> NDArray[np.float64]:
    out = np.empty(len(slots))
    for i in range(len(slots)):
        out[i] = _FLOOR_PER_TYPICAL * float(typical[slots[i]])
    return out


@kernel
def _spread_terms(typical: NDArray[np.float32], cached: NDArray[np.float32],
                  slots: NDArray[np.intp], gauss: float, floor: NDArray[np.float64],
                  mult: NDArray[np.float64], column: int) -> None:
    for i in range(len(slots)):
        floor[i, column], mult[i, column] = spread_of(float(typical[slots[i]]),
                                                      float(cached[slots[i]]), gauss)


@row_kernel
def spread_of(typical: float, cached: float, gauss: float) -> tuple[float, float]:
    """A slot's spread floor and tail multiplier from its typical deviation and tail quantile."""
    return _FLOOR_PER_TYPICAL * typical, _widened(cached, gauss) / gauss


@kernel
def _learn_scaled(hist: NDArray[np.uint16], low: NDArray[np.uint8], inc: NDArray[np.float64],
                  n: NDArray[np.int32], cached: NDArray[np.float32],
                  typical: NDArray[np.float32], slots: NDArray[np.intp], z: NDArray[np.float64],
                  resid: NDArray[np.float64], growth: float, q: float, gauss: float,
                  window: int) -> None:
    """``DeviationScale.update``: the capped tail update, then the mean absolute deviation.

    (The default ensemble's own loop, ``ensemble_round.scale_update``, remembers each row's
    ``ensemble_kernels.tail_memory`` instead of ``window``.)
    """
    for i in range(len(slots)):
        slot = slots[i]
        score = capped_score(z[i], float(cached[slot]), gauss)
        if math.isfinite(score):
            _learn_row(hist, low, inc, n, cached, slot, score, growth, q)
        typical[slot] = typical_after(float(typical[slot]), resid[i], int(n[slot]), window)


@row_kernel
def capped_score(z: float, cached: float, gauss: float) -> float:
    """What the tail learns of deviation ``z``: at most ``TAIL_GROWTH`` times its quantile."""
    cap = TAIL_GROWTH * _widened(cached, gauss)
    if z > cap or math.isnan(cap):  # np.minimum: a NaN on either side wins
        return cap
    return z


@row_kernel
def growth_of(window: float) -> float:
    """The increment's growth per point of a tail remembering ``window`` points."""
    return 1.0 / (1.0 - 1.0 / window)


@row_kernel
def typical_after(old: float, resid: float, count: int, window: float) -> float:
    """The mean absolute deviation after ``resid``, over the tail's ``count`` points so far."""
    weight = max(1.0 / window, 1.0 / max(count, 1))
    new = old + weight * (resid - old)
    if math.isfinite(new):  # saturated(): finite values stay finite in float32
        new = min(max(new, -_FLOAT32_MAX), _FLOAT32_MAX)
    return new
