"""Detectors: one per module, all behind the ``Detector`` contract."""

from __future__ import annotations

from otel_anomaly.processors.detectors.base import Detector, Prediction, occurrence_rounds
from otel_anomaly.processors.detectors.binomial_ratio import BinomialRatio
from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.detectors.ewma_zscore import EwmaZScore
from otel_anomaly.processors.detectors.forecast_residual import ForecastResidual
from otel_anomaly.processors.detectors.half_space_trees import HalfSpaceTrees
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile

DETECTORS: dict[str, type[Detector]] = {
    "ewma_zscore": EwmaZScore,
    "seasonal_profile": SeasonalProfile,
    "forecast_residual": ForecastResidual,
    "half_space_trees": HalfSpaceTrees,
    "ensemble": Ensemble,
    "binomial_ratio": BinomialRatio,
}
"""Detector classes by their config ``type`` name."""

__all__ = [
    "DETECTORS", "BinomialRatio", "Detector", "Ensemble", "EwmaZScore", "ForecastResidual",
    "HalfSpaceTrees", "Prediction", "SeasonalProfile", "occurrence_rounds",
]
