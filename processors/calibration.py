"""From a detector's prediction to the exported band and the band-normalised score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.detectors.base import Detector, Prediction
from otel_anomaly.processors.settings import AlertPolicy
from otel_anomaly.processors.tail_quantile import DeviationScale
from otel_anomaly.processors.types import SeriesBatch


@dataclass(frozen=True, slots=True)
class Calibrated:
    """Band and score per row. ``score`` is 0 at ``expected``, 1 at the band edge."""

    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]


def calibrate(
    values: NDArray[np.float64], prediction: Prediction, policy: AlertPolicy,
    floor: NDArray[np.float64] | float = 0.0,
) -> Calibrated:
    """Widen the band to the policy's noise tolerance and score each row against it.

    Each side of the band is at least ``min_absolute_deviation``, ``min_relative_deviation
    * |expected|`` and ``floor`` wide. The score is the distance from the expected value in
    units of the band's half-width on that side, so an asymmetric band (log-scale
    detectors) scores each side fairly. A
    deviation in a direction the policy ignores scores 0. Rows still warming up (NaN band)
    score 0; non-finite values score NaN.

    Examples
    --------
    >>> p = Prediction(np.array([10.0, 10.0, 10.0]), np.array([8.0] * 3), np.array([12.0] * 3))
    >>> calibrate(np.array([10.0, 13.0, 6.0]), p, AlertPolicy(direction="up")).score
    array([0. , 1.5, 0. ])
    """
    expected = prediction.expected
    floor = np.maximum(
        np.maximum(policy.min_absolute_deviation, floor),
        policy.min_relative_deviation * np.abs(expected),
    )
    with np.errstate(invalid="ignore", over="ignore"):
        up_width = np.maximum(prediction.upper - expected, floor)
        down_width = np.maximum(expected - prediction.lower, floor)
        up_width = np.maximum(up_width, np.finfo(np.float64).tiny)
        down_width = np.maximum(down_width, np.finfo(np.float64).tiny)
        deviation = values - expected
        score = np.where(deviation >= 0, deviation / up_width, -deviation / down_width)
    if policy.direction == "up":
        score = np.where(deviation < 0, 0.0, score)
    elif policy.direction == "down":
        score = np.where(deviation > 0, 0.0, score)
    warming = np.isnan(prediction.upper) | np.isnan(prediction.lower)
    score = np.where(warming, 0.0, score)
    score = np.where(np.isfinite(values), score, np.nan)
    with np.errstate(invalid="ignore", over="ignore"):  # absurd inputs near +-1e308
        return Calibrated(expected, expected - down_width, expected + up_width, score)


def clip_to_band(values: NDArray[np.float64], calibrated: Calibrated) -> NDArray[np.float64]:
    """Values clipped into the band, for learning without letting an anomaly pull the model.

    Warming rows (NaN band) pass through unchanged.
    """
    lower = np.where(np.isnan(calibrated.lower), -np.inf, calibrated.lower)
    upper = np.where(np.isnan(calibrated.upper), np.inf, calibrated.upper)
    return np.clip(values, lower, upper)


class Calibrator:
    """Per-slot band width from each series' own running distribution of deviations.

    A detector's spread (a robust sigma) is only right for well-behaved series: on bursty
    or heavy-tailed ones a fixed ``band`` of sigmas fires all the time, on near-constant
    ones it is hair-trigger. With ``policy.tail_calibration`` the calibrator keeps a
    ``DeviationScale`` per slot and makes the band ``policy.band * multiplier`` spread
    units wide, never narrower than that many times the scale's ``floor``: a series with
    Gaussian-like residuals keeps ``band``, one whose usual extreme is ten times wider gets
    a ten times wider band. Detectors that calibrate themselves (``self_calibrating``, e.g.
    the ensemble, whose members each have their own scale) get ``band`` as it is.

    ``step`` scores, ``learn`` then learns; the scorer masks out rows inside an already
    open anomaly (unless learn gating is off), so an incident's first point teaches "such
    excursions happen" but a lasting incident does not widen the band under itself.

    Examples
    --------
    >>> from otel_anomaly.processors.detectors import EwmaZScore
    >>> det, cal = EwmaZScore(warmup=5), Calibrator(AlertPolicy(tail_window=200))
    >>> rng = np.random.default_rng(0)
    >>> heavy = 100.0 + rng.standard_t(1.5, 400)  # bursty: many "4 sigma" points
    >>> for i, v in enumerate(heavy):
    ...     batch = SeriesBatch.of([0], [v], [i])
    ...     cal.learn(det, batch, cal.step(det, batch))
    ...     det.learn(batch)
    >>> float(cal.multiplier(np.array([0]))[0]) > 2 * 4.0  # band widened for this series
    True
    """

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self.scale = DeviationScale(q=policy.tail_quantile, window=policy.tail_window)

    def multiplier(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Band half-width in spread units per slot."""
        if not self.policy.tail_calibration:
            return np.full(len(slots), self.policy.band)
        return self.policy.band * self.scale.multiplier(slots)

    def step(self, detector: Detector, batch: SeriesBatch) -> Calibrated:
        """Band and score of each row of distinct slots. Pure (see ``learn``)."""
        if not self._active(detector):
            return calibrate(batch.values, detector.predict(batch, self.policy.band), self.policy)
        slots = batch.slots
        k = self.multiplier(slots)
        prediction = detector.predict(batch, k)
        with np.errstate(over="ignore"):  # absurd inputs near +-1e308: an infinite floor
            floor = k * self.scale.floor(slots)
        return calibrate(batch.values, prediction, self.policy, floor)

    def learn(
        self, detector: Detector, batch: SeriesBatch, calibrated: Calibrated,
        mask: NDArray[np.bool_] | None = None,
    ) -> None:
        """Learn the deviations of scored rows (``mask``: only those rows)."""
        if not self._active(detector):
            return
        k = self.multiplier(batch.slots)
        ready = ~np.isnan(calibrated.upper) & np.isfinite(calibrated.score)
        if mask is not None:
            ready &= mask
        self.scale.update(batch.slots[ready], (calibrated.score * k)[ready],
                          np.abs(batch.values - calibrated.expected)[ready])

    def _active(self, detector: Detector) -> bool:
        return self.policy.tail_calibration and not detector.self_calibrating

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots``."""
        self.scale.reset(slots)
