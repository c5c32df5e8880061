"""From a detector's prediction to the exported band and the band-normalised score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.detectors.base import Prediction
from otel_anomaly.processors.settings import AlertPolicy


@dataclass(frozen=True, slots=True)
class Calibrated:
    """Band and score per row. ``score`` is 0 at ``expected``, 1 at the band edge."""

    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]


def calibrate(
    values: NDArray[np.float64], prediction: Prediction, policy: AlertPolicy
) -> Calibrated:
    """Widen the band to the policy's noise tolerance and score each row against it.

    The score is the distance from the expected value in units of the band's half-width on
    that side, so an asymmetric band (log-scale detectors) scores each side fairly. A
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
        policy.min_absolute_deviation, policy.min_relative_deviation * np.abs(expected)
    )
    with np.errstate(invalid="ignore"):
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
    return Calibrated(expected, expected - down_width, expected + up_width, score)


def clip_to_band(values: NDArray[np.float64], calibrated: Calibrated) -> NDArray[np.float64]:
    """Values clipped into the band, for learning without letting an anomaly pull the model.

    Warming rows (NaN band) pass through unchanged.
    """
    lower = np.where(np.isnan(calibrated.lower), -np.inf, calibrated.lower)
    upper = np.where(np.isnan(calibrated.upper), np.inf, calibrated.upper)
    return np.clip(values, lower, upper)
