"""Detectors: one per module, all behind the ``Detector`` contract."""

from __future__ import annotations

from otel_anomaly.processors.detectors.base import Detector, Prediction, occurrence_rounds
from otel_anomaly.processors.detectors.ewma_zscore import EwmaZScore

DETECTORS: dict[str, type[Detector]] = {
    "ewma_zscore": EwmaZScore,
}
"""Detector classes by their config ``type`` name."""

__all__ = ["DETECTORS", "Detector", "EwmaZScore", "Prediction", "occurrence_rounds"]
