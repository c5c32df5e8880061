"""Exponentially weighted mean and mean absolute deviation: a robust online z-score."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.detectors.base import Prediction, SlotStateDetector
from otel_anomaly.processors.detectors.log_modulus import inverse_log_modulus, log_modulus
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch

# Mean absolute deviation of a normal distribution is sigma * sqrt(2 / pi).
_MAD_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
_TINY = 1e-12
_HUBER_SIGMAS = 3.0
_MAX_POINTS = np.iinfo(np.int32).max - 1  # points per slot saturate (int32 storage)


class EwmaZScore(SlotStateDetector):
    """Robust z-score against an exponentially weighted mean, per series.

    Assumes a series fluctuates around a slowly moving level. Keeps, per slot, an
    exponentially weighted mean and mean absolute deviation (scaled to a normal sigma);
    the score is ``|x - mean| / sigma``, so it is scale-free. Cost per row: a few array
    operations, 24 bytes of state per series. For the first ``warmup`` points of a series
    the score is 0 and the band NaN; early on the weights are those of a plain average so
    the estimates settle fast.

    Parameters
    ----------
    alpha
        Weight of the newest point, in (0, 1]. Smaller adapts slower and is steadier.
    warmup
        Points a series must have before it is scored.
    log_transform
        Work on the log-modulus ``sign(x) * log1p(|x|)``: for skewed positive values such as
        latencies the band becomes multiplicative; negative values are mirrored, not clipped.

    Examples
    --------
    >>> det = EwmaZScore(warmup=5)
    >>> for v in [10.0, 11.0, 9.0, 10.0, 10.5, 9.5]:
    ...     det.learn(SeriesBatch.of([0], [v]))
    >>> det.score(SeriesBatch.of([0, 0], [10.2, 30.0])).round(1)
    array([ 0.3, 26.6])

    References
    ----------
    [^1]: Hunter, J. S. (1986). The exponentially weighted moving average. Journal of
        Quality Technology, 18(4), 203-210.
    """

    name: ClassVar[str] = "ewma_zscore"

    def __init__(self, *, alpha: float = 0.05, warmup: int = 30, log_transform: bool = False):
        if not 0.0 < alpha <= 1.0:
            msg = f"ewma_zscore: alpha must be in (0, 1]; got {alpha}"
            raise ValueError(msg)
        if warmup < 1:
            msg = f"ewma_zscore: warmup must be >= 1; got {warmup}"
            raise ValueError(msg)
        self.alpha = alpha
        self.warmup = warmup
        self.log_transform = log_transform
        self._slots = SlotArrays(
            n=Column(np.int32), mean=Column(np.float64, 0.0), dev=Column(np.float64, 0.0))

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def _transform(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        return log_modulus(values) if self.log_transform else values

    def _inverse(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        return inverse_log_modulus(values) if self.log_transform else values

    def _state(self, slots: NDArray[np.intp]) -> tuple[NDArray[Any], ...]:
        self._ensure(slots)
        mean = self._slots.mean[slots]
        sigma = np.maximum(self._slots.dev[slots] * _MAD_TO_SIGMA, _TINY * (1.0 + np.abs(mean)))
        return self._slots.n[slots], mean, sigma

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """Expected value and band per row (NaN band while warming). Pure."""
        n, mean, sigma = self._state(batch.slots)
        ready = n >= self.warmup
        with np.errstate(over="ignore", invalid="ignore"):  # absurd inputs near 1e308
            expected = np.where(n > 0, self._inverse(mean), np.nan)
            lower = np.where(ready, self._inverse(mean - band * sigma), np.nan)
            upper = np.where(ready, self._inverse(mean + band * sigma), np.nan)
        return Prediction(expected, lower, upper)

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Return ``|x - mean| / sigma`` per row (0 while warming, NaN if not finite)."""
        n, mean, sigma = self._state(batch.slots)
        with np.errstate(invalid="ignore"):
            z = np.abs(self._transform(batch.values) - mean) / sigma
        z = np.where(n >= self.warmup, z, 0.0)
        return np.where(np.isfinite(batch.values), z, np.nan)

    def _learn_unique(self, batch: SeriesBatch) -> None:
        slots = batch.slots
        self._ensure(slots)
        y = self._transform(batch.values)
        n = np.minimum(self._slots.n[slots], _MAX_POINTS) + 1
        # Plain averaging until 1/n drops below alpha, so early estimates settle fast.
        weight = np.maximum(self.alpha, 1.0 / n)
        diff = y - self._slots.mean[slots]
        self._slots.mean[slots] += weight * diff
        # Huber-style cap: one wild point moves the spread by a bounded step, so a spike
        # does not widen the band for the points after it. Not before warm-up, when the
        # spread itself is still being found.
        dev = self._slots.dev[slots]
        cap = np.where(n > self.warmup, _HUBER_SIGMAS * _MAD_TO_SIGMA * dev, np.inf)
        step = weight * (np.minimum(np.abs(diff), cap) - dev)
        # The first point has no deviation to learn from.
        self._slots.dev[slots] = dev + np.where(n > 1, step, 0.0)
        self._slots.n[slots] = n

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True where fewer than ``warmup`` points were learned."""
        self._ensure(slots)
        return self._slots.n[slots] < self.warmup

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"alpha": 0.2, "warmup": 3, "log_transform": True}
