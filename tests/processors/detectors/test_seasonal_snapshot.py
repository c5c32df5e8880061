"""A seasonal phase predicts this cycle's points from what it knew before this cycle.

Each point updates its phase at once, so without a snapshot the later points of a phase
would be predicted partly from the earlier ones of the same cycle: an incident that lasts
a phase (an hour of the weekly profile) would become its own reference.
"""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile
from otel_anomaly.processors.types import SeriesBatch

SECOND = 10**9


def _profile_after_cycles(cycles: int) -> tuple[SeasonalProfile, int]:
    """A profile of 6 ten-second phases, two points a phase (5 s apart), value 10."""
    det = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=2.0, alpha=0.5)
    n = cycles * 12
    ts = np.arange(n, dtype=np.int64) * 5 * SECOND
    det.learn(SeriesBatch.of([0] * n, [10.0 + (-1) ** i * 0.5 for i in range(n)], ts))
    return det, n


def test_a_phase_does_not_predict_its_own_cycle_from_its_own_points() -> None:
    det, n = _profile_after_cycles(5)
    first, second = np.array([n * 5 * SECOND]), np.array([(n + 1) * 5 * SECOND])  # phase 0
    before = float(det.predict(SeriesBatch(np.array([0]), first, np.array([50.0])), 1.0)
                   .expected[0])
    det.learn(SeriesBatch(np.array([0]), first, np.array([50.0])))  # the phase's first point
    after = float(det.predict(SeriesBatch(np.array([0]), second, np.array([50.0])), 1.0)
                  .expected[0])
    assert after == before, f"the phase's own point moved its prediction: {before} -> {after}"
    # It did learn: the next cycle's phase 0 starts from the updated mean.
    next_cycle = np.array([(n + 12) * 5 * SECOND])
    det.learn(SeriesBatch(np.array([0]), second, np.array([50.0])))
    later = float(det.predict(SeriesBatch(np.array([0]), next_cycle, np.array([10.0])), 1.0)
                  .expected[0])
    assert later > before, f"the phase learned nothing: {before} -> {later}"


def test_state_saved_without_snapshots_restores_and_takes_them() -> None:
    det, n = _profile_after_cycles(5)
    state = {k: v for k, v in det.state_dict().items() if not k.startswith("snap_")}
    restored = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=2.0, alpha=0.5)
    restored.load_state_dict(state)
    probe = SeriesBatch(np.array([0]), np.array([n * 5 * SECOND]), np.array([10.0]))
    assert restored.score(probe)[0] == det.score(probe)[0]
