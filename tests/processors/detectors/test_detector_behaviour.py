"""Behaviour of detector options beyond the generic conformance checks."""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.detectors import (
    Ensemble,
    EwmaZScore,
    ForecastResidual,
    SeasonalProfile,
)
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


def _repeat_after_spike(step_s: int, gap_points: int, refractory_level: float = 3.5) -> float:
    """The score of a spike ``gap_points`` after the same spike, at ``step_s`` spacing."""
    members = (("ewma_zscore", (("warmup", 10),)),)
    det = Ensemble(members=members, tail_window=200, refractory_grace=0,
                   refractory_level=refractory_level)
    rng = np.random.default_rng(0)
    values = [*list(10.0 + rng.standard_normal(300)), 40.0,
              *list(10.0 + rng.standard_normal(gap_points - 1))]
    for i, v in enumerate(values):
        det.learn(SeriesBatch.of([0], [v], [i * step_s * SECOND]))
    repeat = SeriesBatch.of([0], [40.0], [len(values) * step_s * SECOND])
    return float(det.score(repeat)[0])


def test_refractory_ends_after_hours_on_a_sparse_series_not_after_ten_points() -> None:
    # Without the refractory stretch, the repeat scores what the learned spread gives it.
    plain = _repeat_after_spike(300, 6, refractory_level=0.0)
    assert plain == _repeat_after_spike(3600, 6, refractory_level=0.0)
    # 30 minutes later, on a 5-minute series: the same excursion's aftershock, damped.
    assert _repeat_after_spike(300, 6) < 0.5 * plain
    # 6 hours later, on an hourly series: a new incident, scored in full.
    assert _repeat_after_spike(3600, 6) == pytest.approx(plain)


def _shift_scores(step_s: int, points: int, refractory_level: float = 3.5) -> list[float]:
    """Scores of a lasting +8 sigma shift's first ``points``, at ``step_s`` spacing."""
    members = (("ewma_zscore", (("warmup", 10), ("alpha", 0.001))),)
    # The default grace: 2 points.
    det = Ensemble(members=members, tail_window=200, refractory_level=refractory_level)
    rng = np.random.default_rng(0)
    for i, v in enumerate(10.0 + rng.standard_normal(300)):
        det.learn(SeriesBatch.of([0], [v], [i * step_s * SECOND]))
    scores = []
    for i in range(300, 300 + points):
        row = SeriesBatch.of([0], [18.0], [i * step_s * SECOND])
        scores.append(float(det.score(row)[0]))
        det.learn(row)
    return scores


@pytest.mark.parametrize(("step_s", "graced"), [(300, 3), (30, 21)])
def test_a_lasting_shift_is_scored_in_full_for_the_grace_in_event_time(
    step_s: int, graced: int,
) -> None:
    # The hysteresis gathers an anomaly's evidence in event time (evidence_point_s), so the
    # refractory stretch spares its start for 2 points after the peak or 10 minutes,
    # whichever is longer: the peak and 2 more points at 5 minutes, 21 points at 30 s.
    stretched = _shift_scores(step_s, graced + 1)
    plain = _shift_scores(step_s, graced + 1, refractory_level=0.0)
    assert stretched[:graced] == pytest.approx(plain[:graced])
    assert stretched[graced] < 0.9 * plain[graced]


def test_forecast_residual_follows_a_trend_a_level_model_would_flag() -> None:
    det = ForecastResidual(warmup=30)
    for i in range(200):
        det.learn(SeriesBatch.of([0], [100.0 + 2.0 * i + np.sin(i)]))
    on_trend = det.score(SeriesBatch.of([0], [100.0 + 2.0 * 200 + np.sin(200)]))[0]
    off_trend = det.score(SeriesBatch.of([0], [100.0 + 2.0 * 180]))[0]
    assert on_trend < 3.0 < off_trend


def _level_then_shift(*dets: Ensemble, shift: float, n: int = 400, after: int = 15) -> None:
    rng = np.random.default_rng(1)
    values = np.r_[10.0 + rng.standard_normal(n), 10.0 + shift + rng.standard_normal(after)]
    for v in values:
        for det in dets:
            det.learn(SeriesBatch.of([0], [v]))


def test_persistence_narrows_only_the_side_a_lasting_shift_is_on() -> None:
    members = (("ewma_zscore", (("warmup", 10), ("alpha", 0.01))),)
    det = Ensemble(members=members, tail_window=200, persistence_level=3.0,
                   persistence_shrink=0.5)
    off = Ensemble(members=members, tail_window=200, persistence_alpha=0.0)
    _level_then_shift(det, off, shift=2.5)
    above, below = SeriesBatch.of([0], [13.0]), SeriesBatch.of([0], [7.0])
    assert det.score(above)[0] > 1.3 * off.score(above)[0]
    assert det.score(below)[0] == off.score(below)[0]


def test_persistence_leaves_noise_alone() -> None:
    members = (("ewma_zscore", (("warmup", 10),)),)
    det = Ensemble(members=members, tail_window=200)
    off = Ensemble(members=members, tail_window=200, persistence_alpha=0.0)
    _level_then_shift(det, off, shift=0.0)
    probe = SeriesBatch.of([0, 0], [13.0, 7.0])
    np.testing.assert_array_equal(det.score(probe), off.score(probe))


def test_expected_value_stays_off_the_band_edges() -> None:
    # A level model and a profile that disagree: the bands intersect off-centre.
    members = (("ewma_zscore", (("warmup", 10), ("alpha", 0.01))),
               ("seasonal_profile", (("period_s", 60.0), ("buckets", 12),
                                     ("warmup_cycles", 1.0))))
    det = Ensemble(members=members, tail_window=200)
    for i in range(600):
        phase = i % 12
        det.learn(SeriesBatch.of([0], [10.0 + 5.0 * (phase == 6) + 0.1 * (i % 3)],
                                 [i * 5 * SECOND]))
    p = det.predict(SeriesBatch.of([0] * 12, [10.0] * 12, np.arange(600, 612) * 5 * SECOND),
                    3.0)
    width = p.upper - p.lower
    assert np.all(p.expected - p.lower >= 0.25 * width - 1e-9)
    assert np.all(p.upper - p.expected >= 0.25 * width - 1e-9)


def test_a_level_lagging_a_step_its_profile_foresees_leaves_the_profile_s_band() -> None:
    # Five busy "days" at 20 and two quiet ones at 12 a "week" (a point a second, the
    # quiet days longer than the level's tail remembers): at the week's step up the level
    # (50 points of memory) still sits at 12, the weekly profile expects 20, and their
    # bands do not meet. The profile's band stands: a value within the noise of 20 is
    # ordinary (it used to be scored against a band shrunk to a point at 20).
    members = (("ewma_zscore", (("alpha", 0.02),)),
               ("seasonal_profile", (("period_s", 21000.0), ("buckets", 7),
                                     ("warmup_cycles", 1.0))))
    det = Ensemble(members=members)
    rng = np.random.default_rng(0)
    weeks = 3
    for i in range(weeks * 21000):
        busy = (i % 21000) < 15000
        det.learn(SeriesBatch.of([0], [(20.0 if busy else 12.0) + rng.normal(0.0, 0.8)],
                                 [i * SECOND]))
    step = SeriesBatch.of([0, 0], [18.6, 12.0], [weeks * 21000 * SECOND] * 2)
    p = det.predict(step, 3.5)
    assert p.lower[0] < 18.6 < p.upper[0], (p.lower, p.expected, p.upper)
    assert p.lower[1] > 12.0  # a value where the lagging level is is still out


@pytest.mark.parametrize("follows", [True, False])
def test_the_level_follows_the_weekly_step_so_a_quiet_day_starts_inside_the_band(
    follows: bool,
) -> None:
    # The default members, 5-minute points: five busy days at 20 and two quiet ones at 15
    # a week, for three weeks and five days. At the start of the fourth quiet day the
    # weekly profile expects 15 and the level (50 points of memory) still sits at 20; the
    # members' bands meet between them (the daily profile's is wide), so without following
    # the ensemble's band starts above a quiet day's ordinary values.
    det = Ensemble(level_follows_season=follows)
    rng = np.random.default_rng(0)
    step_s, day_s = 300, 86400
    ts = np.arange((3 * 7 + 5) * day_s // step_s) * step_s
    values = np.where((ts // day_s) % 7 < 5, 20.0, 15.0) + rng.normal(0.0, 1.0, len(ts))
    for t, x in zip(ts.tolist(), values.tolist(), strict=True):
        det.learn(SeriesBatch.of([0], [x], [t * SECOND]))
    quiet_day = SeriesBatch.of([0, 0], [14.0, 20.0], [(ts[-1] + step_s) * SECOND] * 2)
    p = det.predict(quiet_day, 3.5)
    assert (p.lower[0] < 14.0) == follows, (p.lower, p.expected, p.upper)
    assert p.upper[1] < 20.0  # a busy value on a quiet day is out either way


def test_predict_then_learn_learns_what_learn_alone_does() -> None:
    # The round's views are kept from predict for learn: it must not change what is learned
    # (also when learn gets other values than predict, e.g. clipped by learn gating).
    members = (("ewma_zscore", (("warmup", 5),)),
               ("seasonal_profile", (("period_s", 20.0), ("buckets", 4),
                                     ("phase_tolerance", 1))))
    cached, plain = Ensemble(members=members), Ensemble(members=members)
    rng = np.random.default_rng(2)
    for i in range(300):
        ts = [i * SECOND]
        cached.predict(SeriesBatch.of([0], [0.0], ts), 3.0)
        batch = SeriesBatch.of([0], [rng.normal(5.0, 1.0)], ts)
        cached.learn(batch)
        plain.learn(batch)
    for key, arr in plain.state_dict().items():
        np.testing.assert_array_equal(cached.state_dict()[key], arr, err_msg=key)


def test_log_ensemble_scores_a_slowdown_by_its_factor_whatever_the_level() -> None:
    rng = np.random.default_rng(3)
    noise = np.exp(0.1 * rng.standard_normal(400))  # multiplicative noise, like latencies
    scores, widths = [], []
    for level in (100.0, 5000.0):
        det = Ensemble(members=(("ewma_zscore", (("warmup", 10),)),), log_transform=True)
        det.learn(SeriesBatch.of([0] * 400, level * noise))
        slow = SeriesBatch.of([0], [1.5 * level])
        scores.append(float(det.score(slow)[0]))
        p = det.predict(slow, 3.0)
        widths.append((float(p.upper[0] - p.expected[0]), float(p.expected[0] - p.lower[0])))
    assert abs(scores[0] / scores[1] - 1) < 0.05, scores
    for above, below in widths:
        assert above > 1.2 * below  # the band is wider above: factors, not amounts


def test_log_ensemble_handles_zeros_and_values_below_zero() -> None:
    det = Ensemble(members=(("ewma_zscore", (("warmup", 5),)),), log_transform=True,
                   log_offset=1.0)
    rng = np.random.default_rng(4)
    values = rng.normal(0.0, 10.0, 300)  # a series around 0, half of it negative
    det.learn(SeriesBatch.of([0] * 300, values))
    p = det.predict(SeriesBatch.of([0], [0.0]), 3.0)
    assert np.isfinite([p.expected[0], p.lower[0], p.upper[0]]).all()
    assert p.lower[0] < -10.0 < 10.0 < p.upper[0]  # negative values are not cut off
    usual = det.score(SeriesBatch.of([0, 0], [-12.0, 12.0]))
    assert (usual < 3.0).all(), usual  # ordinary values of either sign score as ordinary


def test_log_ewma_scores_a_normal_series_below_zero_as_ordinary() -> None:
    # Clipping negative values to 0 before the log made every point of this series score
    # about 1e13: the log must be the same mirrored log-modulus the ensemble uses.
    det = EwmaZScore(warmup=10, log_transform=True)
    rng = np.random.default_rng(5)
    det.learn(SeriesBatch.of([0] * 300, rng.normal(-100.0, 2.0, 300)))
    usual = det.score(SeriesBatch.of([0] * 200, rng.normal(-100.0, 2.0, 200)))
    assert float(usual.max()) < 6.0, usual.max()
    p = det.predict(SeriesBatch.of([0], [-100.0]), 3.0)
    assert p.lower[0] < -100.0 < p.upper[0] < 0.0, (p.lower, p.upper)
    assert float(det.score(SeriesBatch.of([0], [-150.0]))[0]) > 6.0  # a real drop still scores
