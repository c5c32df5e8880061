"""Running upper quantile of a non-negative score, per slot, in a decayed log histogram."""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays, saturated

# Geometric bins from _LOW up by _RATIO each: 0.5 ... ~1.1e8 in 86 bins (plus the two open
# ends). The resolution only matters around and above a Gaussian tail (|z| >= 3).
_LOW = 0.5
_RATIO = 1.25
_BINS = 86
_LOG_RATIO = float(np.log(_RATIO))
# Rather than decaying every bin each point, the increment grows by 1 / decay each point;
# everything is rescaled when it gets this large (exact up to rounding). The bins are
# float32: a window's worth of increments stays far below its largest value, and mass
# that a rescale pushes below its smallest one weighs nothing next to the recent points.
_RESCALE_AT = 1e20
# Points per slot are counted in an int32 that wraps back by a multiple of the refresh
# cadence, well past the first exact updates.
_WRAP_AT = 1 << 30
# The estimate moves slowly (a window of thousands of points), so after the first points it
# is recomputed every few updates, and at once when a score exceeds it (the tail grows);
# the rest of the time queries read the cached value.
_EXACT_FOR = 64
_REFRESH_EVERY = 8


def gaussian_abs_quantile(q: float) -> float:
    """The ``q`` quantile of ``|z|`` for a standard normal ``z`` (3.29 for 0.999)."""
    return NormalDist().inv_cdf(0.5 + q / 2.0)


class TailQuantile:
    """Per-slot running ``q`` quantile of a non-negative score over about ``window`` points.

    Keeps an exponentially decayed histogram of the score on geometric bins (88 float32
    per slot): O(1) per update, O(bins) per query, within a bin the quantile is interpolated
    log-linearly, so estimates are within a few percent. Struct-of-arrays, like detectors.

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
            hist=Column(np.float32, 0.0, (_BINS + 2,)),
            total=Column(np.float64, 0.0),
            inc=Column(np.float64, 1.0),  # the weight of the next point (see _RESCALE_AT)
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
        ok = np.isfinite(scores)
        slots, scores = slots[ok], scores[ok]
        self._ensure(slots)
        if not len(slots):
            return
        with np.errstate(divide="ignore"):
            pos = np.log(np.maximum(scores, 1e-300) / _LOW) / _LOG_RATIO
        b = np.minimum(np.maximum(np.floor(pos).astype(np.int64) + 1, 0), _BINS + 1)
        inc = self._state.inc[slots]
        self._state.hist[slots, b] += inc
        self._state.total[slots] += inc
        n = self._state.n[slots] + 1
        n = np.where(n >= _WRAP_AT, n - (_WRAP_AT >> 1), n)
        self._state.n[slots] = n
        inc = inc * self._growth
        big = inc > _RESCALE_AT
        if big.any():
            rows = slots[big]
            self._state.hist[rows] = self._state.hist[rows] / inc[big, None]
            self._state.total[rows] /= inc[big]
            inc[big] = 1.0
        self._state.inc[slots] = inc
        above = scores >= self._state.q[slots]
        stale = slots[above | (n <= _EXACT_FOR) | (n % _REFRESH_EVERY == 0)]
        if len(stale):
            self._state.q[stale] = self._estimate(stale)

    def quantile(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Current quantile estimate per slot (0 for a slot with no history).

        Refreshed at every update for a slot's first 64 points, then at every score above
        the estimate and every 8th update.
        """
        self._ensure(slots)
        return self._state.q[slots].astype(np.float64)

    def _estimate(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        hist = self._state.hist[slots].astype(np.float64)
        cum = np.cumsum(hist, axis=1)
        rank = self.q * self._state.total[slots]
        b = np.minimum((cum < rank[:, None]).sum(axis=1), _BINS + 1)
        rows = np.arange(len(slots))
        before = cum[rows, b] - hist[rows, b]
        mass = hist[rows, b]
        frac = np.where(mass > 0, (rank - before) / np.maximum(mass, 1e-300), 0.0)
        frac = np.minimum(np.maximum(frac, 0.0), 1.0)
        # Bin k >= 1 spans [LOW * R**(k-1), LOW * R**k); the open ends answer their edge.
        edge = np.minimum(np.maximum(b - 1 + frac, 0.0), float(_BINS))
        value = _LOW * np.exp(edge * _LOG_RATIO)
        return np.where(self._state.total[slots] > 0, value, 0.0)

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
        return np.maximum(self.tails.quantile(slots), self._gauss) / self._gauss

    def floor(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Smallest spread (one sigma, in the series' units) per slot."""
        self._typical.ensure(slots)
        return (SPREAD_FLOOR * _MAD_TO_SIGMA) * self._typical.typical[slots].astype(np.float64)

    def update(
        self, slots: NDArray[np.intp], z: NDArray[np.float64], resid: NDArray[np.float64]
    ) -> None:
        """Learn one deviation per distinct slot: in spread units and in absolute terms."""
        cap = TAIL_GROWTH * np.maximum(self.tails.quantile(slots), self._gauss)
        self.tails.update(slots, np.minimum(z, cap))
        self._typical.ensure(slots)
        n = self.tails.count(slots)
        weight = np.maximum(1.0 / self.tails.window, 1.0 / np.maximum(n, 1))
        typical = self._typical.typical[slots].astype(np.float64)
        self._typical.typical[slots] = saturated(typical + weight * (resid - typical))

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
