"""Per-series rarity: the score a series reaches about once per false-alarm budget.

A self-calibrating detector (the ensemble) scores in Gaussian-equivalent sigmas, but a
fixed number of sigmas is not the same rarity on every series: on a spiky or heavy-tailed
one, "4 sigma" comes every few hours. Each series therefore fits the tail of its own score
distribution, peaks over a threshold as in SPOT (Siffer et al., KDD 2017): the rate of
scores above ``U`` sigmas and a generalised Pareto distribution of the excesses, from
their exponentially decayed first two moments (method of moments; Hosking & Wallis 1987).
The band edge (``edge_for_budget``) is where noise alone would open about the budget's
anomalies per series-day, given how many points in a row open one; each quantile is never
lower than a normal distribution's for the same probability, and the calibrator never
makes the edge narrower than the policy's ``band``. A series is then judged by how rare a
score is for that series (``tests/processors/test_rarity_calibration.py``).

Everything starts from a Gaussian prior worth ``PRIOR_POINTS`` points, so a young series
behaves as a normal one until its own tail is known.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting import rarity_kernels as kernels
from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays

U = kernels.U
"""Scores above this many sigmas make up the tail that is fitted (1.2 % of a normal's)."""
PRIOR_POINTS = 500.0
"""Weight of the Gaussian prior, in points; it fades like any other point."""
LEARN_CAP = kernels.LEARN_CAP
"""A score is learned as at most this many times the current band edge (censored there, and
the censoring is accounted for): one absurd point, such as traffic after a week of zeros,
cannot throw the fit. The scorer teaches the first point of an anomaly but not the rest of
it. Censoring at the edge itself, or teaching no anomalous point (SPOT's rule), biased the
tail light: heavy-tailed series then opened up to 7 times their budget."""
SHAPES = (kernels.SHAPE_LOW, kernels.SHAPE_HIGH)
"""Range of the fitted tail shape: the method of moments needs a finite variance (shape
< 0.5); below 0 the tail is lighter than exponential, as a normal's is at ``U``."""
DEFAULT_SPACING_S = kernels.DEFAULT_SPACING_S
"""Spacing assumed for a series whose spacing is not known yet."""
DAY_S = kernels.DAY_S

_NORMAL = NormalDist()
_TAIL_P = 2.0 * (1.0 - _NORMAL.cdf(U))  # P(|z| > U)
_MILLS = _NORMAL.pdf(U) / (1.0 - _NORMAL.cdf(U))  # E[z | z > U]
_PRIOR_M1 = _MILLS - U  # mean excess of |z| over U
_PRIOR_M2 = 1.0 - U * _MILLS + U * U  # mean squared excess
_PRIOR_C = PRIOR_POINTS * _TAIL_P
_PRIOR = (PRIOR_POINTS, _PRIOR_C, _PRIOR_C, _PRIOR_C * _PRIOR_M1, _PRIOR_C * _PRIOR_M2)
# Decayed: weight, exceedances, exceedances below the cap (uncensored), and the sum and
# sum of squares of the excesses (censored ones counted up to the cap).


def gaussian_threshold(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """``|z|`` exceeded with probability ``p`` by a standard normal ``z``.

    >>> gaussian_threshold(np.array([0.05, 1e-4])).round(2)
    array([1.96, 3.89])
    """
    out: NDArray[np.float64] = kernels.gaussian_rows(p)
    return out


class ScoreTail:
    """Per-slot tail of a Gaussian-equivalent score, and the threshold for a budget.

    Five floats per slot. ``threshold`` answers the score that is exceeded with
    probability ``p`` per point; ``update`` learns one score per distinct slot, censored
    at the band edge.

    Examples
    --------
    >>> tail = ScoreTail(window=5000)
    >>> p = np.array([1e-4])
    >>> round(float(tail.threshold(np.array([0]), p)[0]), 2)  # the prior: a normal tail
    3.89
    >>> rng = np.random.default_rng(0)
    >>> for z in np.abs(rng.standard_t(2, 20000)):  # heavy-tailed: far more big scores
    ...     tail.update(np.array([0]), np.array([z]), tail.threshold(np.array([0]), p))
    >>> float(tail.threshold(np.array([0]), p)[0]) > 8.0
    True
    """

    def __init__(self, *, window: int = 10000) -> None:
        if window < 2:
            msg = f"rarity window must be >= 2 points; got {window}"
            raise ValueError(msg)
        self.window = window
        self._keep = 1.0 - 1.0 / window
        # A fresh slot holds the prior.
        self._slots = SlotArrays(tail=Column(np.float64, _PRIOR, (5,)))

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def threshold(self, slots: NDArray[np.intp], p: NDArray[np.float64]) -> NDArray[np.float64]:
        """The score exceeded with probability ``p`` per point, per row. Pure.

        Never below a normal distribution's score for the same probability.
        """
        self._ensure(slots)
        # The state is floored at 1e-300: after millions of quiet points the decayed sums
        # could underflow to 0. Censored excesses count in the sums but not as observed
        # ones: for an exponential tail that is the maximum-likelihood mean excess ("total
        # time on test"). The quantile is the generalised Pareto's, or the exponential
        # limit's where the shape is ~0.
        with float_warnings_ignored():
            out: NDArray[np.float64] = kernels.threshold_rows(self._slots.tail, slots, p)
        return out

    def edge(
        self, slots: NDArray[np.intp], p_open: NDArray[np.float64], k: NDArray[np.float64],
        open_at: float, instant_at: float,
    ) -> NDArray[np.float64]:
        """``edge_for_budget`` of these rows, in one pass over them. Pure."""
        self._ensure(slots)
        with float_warnings_ignored():
            out: NDArray[np.float64] = kernels.edge_rows(
                self._slots.tail, slots, p_open, k, float(open_at), float(instant_at))
        return out

    def budget_edge(  # noqa: PLR0913 -- the rows and the policy
        self, slots: NDArray[np.intp], spacing_s: NDArray[np.float64], budget_per_day: float,
        min_duration: int, min_duration_time_s: float, open_at: float, instant_at: float,
        band: float,
    ) -> NDArray[np.float64]:
        """``np.maximum(band, edge_for_budget(...))`` in one pass over the rows. Pure.

        Each row's ``p_open`` and ``k`` are ``point_probability`` and ``points_to_open`` at
        its series' spacing: what a calibrator with a budget needs, in one kernel call.
        """
        self._ensure(slots)
        with float_warnings_ignored():
            out: NDArray[np.float64] = kernels.budget_edge_rows(
                self._slots.tail, slots, spacing_s, float(budget_per_day), float(min_duration),
                float(min_duration_time_s), float(open_at), float(instant_at), float(band))
        return out

    def update(
        self, slots: NDArray[np.intp], scores: NDArray[np.float64], edge: NDArray[np.float64],
    ) -> None:
        """Learn one finite score per distinct slot (``edge``: each row's band edge)."""
        self._ensure(slots)
        with float_warnings_ignored():
            kernels.update_rows(self._slots.tail, slots, scores, edge, self._keep)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots`` (back to the prior)."""
        self._slots.reset(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """A copy of the per-slot state."""
        return self._slots.state_dict()

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore the state saved by ``state_dict``."""
        self._slots.load_state_dict(state)


def point_probability(budget_per_day: float, spacing_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """The budget as a probability per point: opens allowed per day over points per day.

    >>> point_probability(0.1, np.array([300.0, 0.0])).round(6)  # 5 min; unknown: 1 min
    array([0.000347, 0.000069])
    """
    out: NDArray[np.float64] = kernels.point_probability_rows(float(budget_per_day), spacing_s)
    return out


def points_to_open(
    min_duration: int, min_duration_time_s: float, spacing_s: NDArray[np.float64],
) -> NDArray[np.float64]:
    """High points in a row that open an anomaly, at each series' spacing.

    >>> points_to_open(2, 900.0, np.array([60.0, 1800.0, 0.0]))
    array([2., 1., 2.])
    """
    out: NDArray[np.float64] = kernels.points_to_open_rows(
        float(min_duration), float(min_duration_time_s), spacing_s)
    return out


def edge_for_budget(
    tail: ScoreTail, slots: NDArray[np.intp], p_open: NDArray[np.float64],
    k: NDArray[np.float64], open_at: float, instant_at: float,
) -> NDArray[np.float64]:
    """The band edge at which false opens come about ``p_open`` per point.

    An anomaly opens on ``k`` points in a row at ``open_at`` times the edge, or on one at
    ``instant_at`` times it. Giving each way half the budget, with the points of a run
    taken as independent: the edge is the larger of the scores exceeded with probability
    ``(p_open / 2) ** (1 / k)``, over ``open_at``, and ``p_open / 2``, over ``instant_at``.
    """
    return tail.edge(slots, p_open, k, open_at, instant_at)

