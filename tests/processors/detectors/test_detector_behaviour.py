"""Behaviour of detector options beyond the generic conformance checks."""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.detectors import Ensemble, ForecastResidual, SeasonalProfile
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import SeriesBatch


def _daily_spikes(det: SeasonalProfile, days: int = 6) -> None:
    """A 60 s "day" of 12 phases (5 s each) with a burst in phase 6 every day."""
    for day in range(days):
        for phase in range(12):
            value = 50.0 if phase == 6 else 10.0 + 0.1 * phase
            ts = (day * 12 + phase) * 5 * SECOND
            det.learn(SeriesBatch.of([0], [value], [ts]))


def test_phase_tolerance_accepts_a_pattern_that_drifts_by_a_phase() -> None:
    strict = SeasonalProfile(period_s=60.0, buckets=12, warmup_cycles=1.0)
    tolerant = SeasonalProfile(period_s=60.0, buckets=12, warmup_cycles=1.0, phase_tolerance=1)
    _daily_spikes(strict)
    _daily_spikes(tolerant)
    probe = SeriesBatch.of([0], [50.0], [(6 * 12 + 7) * 5 * SECOND])  # burst one phase late
    assert tolerant.score(probe)[0] < 2.0 < strict.score(probe)[0]


def test_refractory_scores_a_repeat_excursion_lower_than_the_first() -> None:
    members = (("ewma_zscore", (("warmup", 10),)),)
    det = Ensemble(members=members, tail_window=200, refractory_grace=0)
    off = Ensemble(members=members, tail_window=200, refractory_level=0.0)
    rng = np.random.default_rng(0)
    for v in 10.0 + rng.standard_normal(300):
        det.learn(SeriesBatch.of([0], [v]))
        off.learn(SeriesBatch.of([0], [v]))
    spike = SeriesBatch.of([0], [40.0])
    first = det.score(spike)[0]
    assert first == off.score(spike)[0]
    det.learn(spike)
    off.learn(spike)
    assert det.score(spike)[0] < 0.5 * off.score(spike)[0]


def test_forecast_residual_follows_a_trend_a_level_model_would_flag() -> None:
    det = ForecastResidual(warmup=30)
    for i in range(200):
        det.learn(SeriesBatch.of([0], [100.0 + 2.0 * i + np.sin(i)]))
    on_trend = det.score(SeriesBatch.of([0], [100.0 + 2.0 * 200 + np.sin(200)]))[0]
    off_trend = det.score(SeriesBatch.of([0], [100.0 + 2.0 * 180]))[0]
    assert on_trend < 3.0 < off_trend
