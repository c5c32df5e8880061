"""The detectors an ensemble can hold, its default members, and what people call them."""

from __future__ import annotations

from typing import Any

from otel_anomaly.processors.detectors.base import Detector
from otel_anomaly.processors.detectors.discord import Discord
from otel_anomaly.processors.detectors.ewma_zscore import EwmaZScore
from otel_anomaly.processors.detectors.forecast_residual import ForecastResidual
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile

MemberSpec = tuple[str, tuple[tuple[str, Any], ...]]
"""A member: a detector type name and its parameters as ``(name, value)`` pairs."""

MEMBER_TYPES: dict[str, type[Detector]] = {
    "ewma_zscore": EwmaZScore,
    "seasonal_profile": SeasonalProfile,
    "forecast_residual": ForecastResidual,
    "discord": Discord,
}
"""Detector types an ensemble can hold (any single-series detector)."""

DEFAULT_MEMBERS: tuple[MemberSpec, ...] = (
    ("ewma_zscore", (("alpha", 0.02),)),
    ("seasonal_profile", (("phase_tolerance", 4),)),
    ("seasonal_profile", (("period_s", 604800.0), ("buckets", 168))),
)


def member_label(kind: str, params: dict[str, Any]) -> str:
    """A member as a person calls it: ``level``, ``daily profile``, ``forecast``...

    >>> member_label("seasonal_profile", {"period_s": 604800.0})
    'weekly profile'
    """
    if kind == "seasonal_profile":
        period = float(params.get("period_s", 86400.0))
        named = {86400.0: "daily", 604800.0: "weekly", 3600.0: "hourly"}
        return f"{named.get(period, f'{period:g}s')} profile"
    return {"ewma_zscore": "level", "forecast_residual": "forecast",
            "discord": "shape"}.get(kind, kind)
