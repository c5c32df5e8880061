"""Error ratios judged by their sample size: k errors in n calls against a learned base rate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.detectors import binomial_ratio_kernels as kernels
from otel_anomaly.processors.detectors.base import Prediction, SlotStateDetector
from otel_anomaly.processors.detectors.binomial_tail import GRID
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch

# Per-slot state columns: decayed errors and calls (the base rate), the dispersion's
# moment sums (and the excess's second moment, for its noise), the decayed sum and weight
# of known sample sizes, points learned, and the recent windows' errors and calls (the
# evidence a slow burst accumulates).
(_K, _N, _EXCESS, _EXCESS_SQ, _SPREAD, _SIZE, _SIZED, _SEEN, _RECENT_K,
 _RECENT_N) = range(10)
_COLUMNS = 10


class BinomialRatio(SlotStateDetector):
    """Upper and lower tails of ``k`` errors in ``n`` calls, in Gaussian-equivalent sigmas.

    For ratios of counts (errors / calls, error records / records) whose sample size
    ``n`` travels with each row (``SeriesBatch.counts``). Each series learns its base rate
    ``p``: errors over calls, both exponentially decayed over about ``memory`` points (so
    every call weighs the same whatever its window's traffic), plus a prior of
    ``prior_rate`` worth ``prior_calls`` calls. It also learns how much more the ratio
    varies between windows than independent calls would make it (over-dispersion: an
    intra-class correlation ``rho``, by the method of moments, counting only the excess
    variance beyond two of its standard errors), so a series whose true rate wanders is
    judged against its own wider spread rather than paged.

    A row with ratio ``x`` of ``n`` calls is scored as a beta-binomial count, approximated
    by the binomial of the same mean and variance: ``n`` shrinks to the effective sample
    size ``n / (1 + (n - 1) * rho')``, where ``rho'`` is ``rho`` plus ``1 / (calls + 1)``
    for the uncertainty of the learned rate itself (a young series is judged more
    leniently). The tail ``P(K >= x n)`` (above ``p``; ``P(K <= x n)`` below it) is put in
    Gaussian-equivalent sigmas in closed form (``processors.detectors.binomial_tail``, continuous in
    ``x``): 1 error in 4 calls at a 0.5 % base rate is 2.1 sigmas, 30 in 100 is 14.
    Scores are self-calibrating (``predict``'s band edge at ``band`` sigmas is where the
    score is ``band``); ``expected`` is the base rate; the band depends on each row's
    ``n``. Where even 0 or 1 is inside the band (too few calls to tell), that edge lies
    beyond it, on the line through the sigmas at 0 or 1.

    A burst in a window of few calls (1 error in 5 calls at 20 % errors) is not
    significant on its own; its errors accumulate. Each row is also scored pooled with the
    recent windows (their errors and calls, decayed by ``recent`` per window: about
    ``1 / (1 - recent)`` windows), ``recent_margin`` sigmas lower, and the higher score
    counts; the band is where either reaches ``band``. Where the recent windows alone are
    past it, the band closes at the base rate.

    Values are clipped to [0, 1]. A row whose ``n`` is unknown (NaN, not positive, or no
    ``counts``) is taken as the series' usual ``n`` (the decayed mean of its known ones),
    or as ``default_count`` calls if it never had one. One row teaches at most
    ``learn_cap`` sigmas (normal approximation) plus one error above its expected count,
    so an error burst barely moves the base rate and the dispersion.

    Cost (compiled row loops, ``binomial_ratio_kernels``): to predict, the tail at about
    400 points (the band's edges for the window and for the pooled windows, each refined
    on 33-point grids: about 9 us per row); to score, two evaluations (under 1 us per row);
    to learn, a few operations per row. State: 10 floats (80 bytes) per series.
    Score range [0, ~37], higher = further out on either side; 0 (band NaN) for the first
    ``warmup`` points and until ``warmup_calls`` calls were seen.

    Parameters
    ----------
    memory
        Points the base rate and dispersion effectively remember (exponential decay), >= 2.
        The default is a day of 10 s windows.
    prior_rate
        Base rate assumed before any call, in (0, 1).
    prior_calls
        Weight of the prior, in calls, > 0.
    warmup
        Points a series must have learned before it is scored, >= 1.
    warmup_calls
        Calls (decayed) a series must have learned before it is scored, >= 0.
    default_count
        Sample size assumed for rows of unknown ``n`` in a series that never had a known
        one, > 0.
    dispersion
        Learn over-dispersion (beta-binomial); off, calls are independent (binomial).
    max_dispersion
        Largest intra-class correlation learned, in [0, 1).
    learn_cap
        Sigmas above the expected count one row may teach, > 0.
    recent
        Per-window decay of the recent evidence pooled with each row, in [0, 1); 0 scores
        each window alone.
    recent_margin
        Sigmas the pooled score is lowered by (consecutive windows share their recent
        evidence), >= 0.

    Examples
    --------
    >>> det = BinomialRatio(warmup=5, warmup_calls=0.0)
    >>> quiet = SeriesBatch.of([0] * 200, [0.005] * 200, counts=[200.0] * 200)
    >>> det.learn(quiet)  # 1 error in every 200 calls
    >>> det.score(SeriesBatch.of([0, 0, 0], [0.25, 0.3, 0.5], counts=[4.0, 100.0, 4.0])).round(1)
    array([ 2.1, 13.9,  3.6])
    >>> band = det.predict(SeriesBatch.of([0, 0], [0.0, 0.0], counts=[4.0, 100.0]), 3.5)
    >>> (band.expected * 100).round(2), (band.upper * 100).round(1)
    (array([0.5, 0.5]), array([48.6,  4.9]))

    References
    ----------
    [^1]: Williams, D. A. (1982). Extra-binomial variation in logistic linear models.
        Journal of the Royal Statistical Society C, 31(2), 144-148. (Moment estimate of
        over-dispersion.)
    [^2]: Kish, L. (1965). Survey Sampling. Wiley. (Design effect and effective sample
        size.)
    [^3]: Peizer, D. B., & Pratt, J. W. (1968). A normal approximation for binomial, F,
        beta, and other common, related tail probabilities, I. JASA, 63(324), 1416-1456.
    """

    name: ClassVar[str] = "binomial_ratio"
    self_calibrating: ClassVar[bool] = True
    counts_are_trials: ClassVar[bool] = True
    _conformance_scale: ClassVar[float] = 0.005  # the suite's spiky series (~100) as ratios

    def __init__(
        self, *, memory: int = 8640, prior_rate: float = 0.01, prior_calls: float = 100.0,
        warmup: int = 30, warmup_calls: float = 200.0, default_count: float = 100.0,
        dispersion: bool = True, max_dispersion: float = 0.25, learn_cap: float = 5.0,
        recent: float = 0.8, recent_margin: float = 0.0,
    ) -> None:
        problems = [
            f"{name} must be {rule}; got {value}" for name, value, rule, ok in (
                ("memory", memory, ">= 2", memory >= 2),
                ("prior_rate", prior_rate, "in (0, 1)", 0.0 < prior_rate < 1.0),
                ("prior_calls", prior_calls, "> 0", prior_calls > 0),
                ("warmup", warmup, ">= 1", warmup >= 1),
                ("warmup_calls", warmup_calls, ">= 0", warmup_calls >= 0),
                ("default_count", default_count, "> 0", default_count > 0),
                ("max_dispersion", max_dispersion, "in [0, 1)", 0.0 <= max_dispersion < 1.0),
                ("learn_cap", learn_cap, "> 0", learn_cap > 0),
                ("recent", recent, "in [0, 1)", 0.0 <= recent < 1.0),
                ("recent_margin", recent_margin, ">= 0", recent_margin >= 0),
            ) if not ok]
        if problems:
            msg = "binomial_ratio: " + "; ".join(problems)
            raise ValueError(msg)
        self.memory = memory
        self.prior_rate = prior_rate
        self.prior_calls = prior_calls
        self.warmup = warmup
        self.warmup_calls = warmup_calls
        self.default_count = default_count
        self.dispersion = dispersion
        self.max_dispersion = max_dispersion
        self.learn_cap = learn_cap
        self.recent = recent
        self.recent_margin = recent_margin
        self._slots = SlotArrays(state=Column(np.float64, 0.0, (_COLUMNS,)))

    def _rows(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        self._slots.ensure(slots)
        out: NDArray[np.float64] = self._slots.state[slots]
        return out

    def _constants(self) -> tuple[float, float, float, float, float]:
        """The model's constants as the kernels take them (Python floats, as numpy had them).

        The prior's errors, its calls, its variance (a prior worth one window of
        ``prior_calls`` calls with no excess variance), the largest ``rho`` (-1: no
        dispersion learned), ``default_count``.
        """
        learns = self.dispersion and self.max_dispersion > 0
        return (self.prior_rate * self.prior_calls, self.prior_calls,
                self.prior_calls ** 2 * self.prior_rate * (1.0 - self.prior_rate),
                self.max_dispersion if learns else -1.0, self.default_count)

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Sigmas of the row's tail (0 while warming, NaN if not finite). Pure."""
        self._slots.ensure(batch.slots)
        with float_warnings_ignored():
            out: NDArray[np.float64] = kernels.score_rows(
                self._slots.state, batch.slots, batch.values, batch.sample_sizes(),
                *self._constants(), self.warmup, self.warmup_calls, self.recent,
                self.recent_margin)
        return out

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """Base rate and the ratios at ``band`` sigmas for each row's ``n``. Pure.

        Where the recent windows pooled with the row would reach the band, the edge is the
        ratio this window needs for that; where they already do on their own, the band
        closes at the base rate.
        """
        self._slots.ensure(batch.slots)
        width = np.asarray(band, np.float64)
        if width.shape != (len(batch),) or not width.flags.c_contiguous:
            width = np.ascontiguousarray(np.broadcast_to(width, (len(batch),)))
        with float_warnings_ignored():
            rate, lower, upper = kernels.predict_rows(
                self._slots.state, batch.slots, batch.values, batch.sample_sizes(), width,
                *self._constants(), self.warmup, self.warmup_calls, self.recent,
                self.recent_margin, GRID)
        return Prediction(rate, lower, upper)

    def _learn_unique(self, batch: SeriesBatch) -> None:
        self._slots.ensure(batch.slots)
        kernels.learn_rows(
            self._slots.state, batch.slots, batch.values, batch.sample_sizes(),
            *self._constants(), self.learn_cap, self.recent, 1.0 - 1.0 / self.memory,
            (1.0 - 1.0 / self.memory) ** 2)

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True until ``warmup`` points and ``warmup_calls`` calls were learned."""
        s = self._rows(slots)
        out: NDArray[np.bool_] = (s[:, _SEEN] < self.warmup) | (s[:, _N] < self.warmup_calls)
        return out

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"memory": 50, "warmup": 3, "warmup_calls": 0.0, "dispersion": False,
               "default_count": 20.0, "recent": 0.0}
