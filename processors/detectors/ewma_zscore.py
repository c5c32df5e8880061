"""Exponentially weighted mean and mean absolute deviation: a robust online z-score."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored, kernel, row_kernel
from otel_anomaly.processors.detectors.base import Prediction, SlotStateDetector
from otel_anomaly.processors.detectors.log_modulus import inverse_log_modulus, log_modulus
from otel_anomaly.processors.kernel_math import maximum, minimum
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch

# Mean absolute deviation of a normal distribution is sigma * sqrt(2 / pi).
_MAD_TO_SIGMA = float(np.sqrt(np.pi / 2.0))
_TINY = 1e-12
_HUBER_SIGMAS = 3.0
_MAX_POINTS = int(np.iinfo(np.int32).max) - 1  # points per slot saturate (int32 storage)

# The per-row loops (numba kernels, ``processors.compiled``) repeat the numpy expressions
# they replaced in the same order, so a round of one row costs one call per method.


@kernel
def _gather(
    slots: NDArray[np.intp], n_col: NDArray[np.int32], mean_col: NDArray[np.float64],
    dev_col: NDArray[np.float64],
) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
    """Per row: points learned, mean and sigma (floored relative to the mean)."""
    rows = len(slots)
    n = np.empty(rows, np.int32)
    mean = np.empty(rows)
    sigma = np.empty(rows)
    for i in range(rows):
        s = slots[i]
        n[i], mean[i] = n_col[s], mean_col[s]
        sigma[i] = sigma_of(mean_col[s], dev_col[s])
    return n, mean, sigma


@row_kernel
def sigma_of(mean: float, dev: float) -> float:
    """A slot's sigma from its mean and mean absolute deviation (floored relative to the mean)."""
    return maximum(dev * _MAD_TO_SIGMA, _TINY * (1.0 + abs(mean)))


@kernel
def _predict(
    n: NDArray[np.int32], mean: NDArray[np.float64], sigma: NDArray[np.float64],
    band: NDArray[np.float64], warmup: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Mean and ``mean +- band * sigma`` (transformed values; NaN band while warming)."""
    rows = len(n)
    expected = np.empty(rows)
    lower = np.empty(rows)
    upper = np.empty(rows)
    for i in range(rows):
        b = band[0] if len(band) == 1 else band[i]
        expected[i], lower[i], upper[i] = band_of(n[i], mean[i], sigma[i], b, warmup)
    return expected, lower, upper


@row_kernel
def band_of(n: int, mean: float, sigma: float, band: float, warmup: int,
            ) -> tuple[float, float, float]:
    """One row's mean and ``mean +- band * sigma`` (NaN band while warming)."""
    ready = n >= warmup
    expected = mean if n > 0 else np.nan
    lower = mean - band * sigma if ready else np.nan
    upper = mean + band * sigma if ready else np.nan
    return expected, lower, upper


@kernel
def _score(
    n: NDArray[np.int32], mean: NDArray[np.float64], sigma: NDArray[np.float64],
    seen: NDArray[np.float64], values: NDArray[np.float64], warmup: int,
) -> NDArray[np.float64]:
    """``|seen - mean| / sigma`` (0 while warming, NaN where ``values`` is not finite)."""
    out = np.empty(len(n))
    for i in range(len(n)):
        z = abs(seen[i] - mean[i]) / sigma[i] if n[i] >= warmup else 0.0
        out[i] = z if np.isfinite(values[i]) else np.nan
    return out


@kernel
def _learn(
    slots: NDArray[np.intp], seen: NDArray[np.float64], alpha: float, warmup: int,
    n_col: NDArray[np.int32], mean_col: NDArray[np.float64], dev_col: NDArray[np.float64],
) -> None:
    """Learn one round (distinct slots, finite values) in place."""
    for i in range(len(slots)):
        s = slots[i]
        n_col[s], mean_col[s], dev_col[s] = learned(n_col[s], mean_col[s], dev_col[s], seen[i],
                                                    alpha, warmup)


@row_kernel
def learned(n: int, mean: float, dev: float, seen: float, alpha: float, warmup: int,
            ) -> tuple[int, float, float]:
    """A slot's points, mean and deviation after learning the finite value ``seen``."""
    points = min(n, _MAX_POINTS) + 1
    # Plain averaging until 1/n drops below alpha, so early estimates settle fast.
    weight = maximum(alpha, 1.0 / points)
    diff = seen - mean
    # Huber-style cap: one wild point moves the spread by a bounded step, so a spike
    # does not widen the band for the points after it. Not before warm-up, when the
    # spread itself is still being found.
    cap = (_HUBER_SIGMAS * _MAD_TO_SIGMA) * dev if points > warmup else np.inf
    step = weight * (minimum(abs(diff), cap) - dev)
    # The first point has no deviation to learn from.
    return points, mean + weight * diff, dev + (step if points > 1 else 0.0)

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
    compiled_learning = True

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
        out: tuple[NDArray[Any], ...] = _gather(
            slots, self._slots.n, self._slots.mean, self._slots.dev)
        return out

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """Expected value and band per row (NaN band while warming). Pure."""
        n, mean, sigma = self._state(batch.slots)
        bands = np.asarray(band, np.float64).reshape(-1)
        # Absurd inputs near 1e308 (the kernel runs as plain Python without numba's JIT).
        with float_warnings_ignored():
            expected, lower, upper = _predict(n, mean, sigma, bands, self.warmup)
        if self.log_transform:  # the inverse of NaN is NaN: NaN stays where it is
            expected, lower, upper = (self._inverse(x) for x in (expected, lower, upper))
        return Prediction(expected, lower, upper)

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Return ``|x - mean| / sigma`` per row (0 while warming, NaN if not finite)."""
        n, mean, sigma = self._state(batch.slots)
        seen = self._transform(batch.values)
        with float_warnings_ignored():  # as plain Python: inf - inf
            out: NDArray[np.float64] = _score(n, mean, sigma, seen, batch.values, self.warmup)
        return out

    def _learn_unique(self, batch: SeriesBatch) -> None:
        self._ensure(batch.slots)
        _learn(batch.slots, self._transform(batch.values), self.alpha, self.warmup,
               self._slots.n, self._slots.mean, self._slots.dev)

    def row_columns(self, slots: NDArray[np.intp]) -> tuple[NDArray[Any], ...]:
        """Points, mean and deviation columns, rows made for ``slots`` (``ewma_scan``)."""
        self._ensure(slots)
        return self._slots.n, self._slots.mean, self._slots.dev

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True where fewer than ``warmup`` points were learned."""
        self._ensure(slots)
        return self._slots.n[slots] < self.warmup

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"alpha": 0.2, "warmup": 3, "log_transform": True}
