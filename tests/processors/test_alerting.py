"""Calibration (tail quantiles, spread floor), hysteresis, suppression and learn gating."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from otel_anomaly.processors.alerting.calibration import Calibrator
from otel_anomaly.processors.alerting.hysteresis import LAG_PRIOR, Hysteresis
from otel_anomaly.processors.alerting.tail_quantile import (
    DeviationScale,
    TailQuantile,
    gaussian_abs_quantile,
)
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.detectors import Ensemble, EwmaZScore
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import AlertPolicy, DetectorRule, EngineSettings
from otel_anomaly.processors.state.migrations import _evidence_columns, _resolution_flags
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import SeriesBatch, SeriesKey

ONE = np.array([0], np.intp)


def _feed(tq: TailQuantile, values: np.ndarray) -> None:
    for v in values:
        tq.update(ONE, np.array([v]))


def test_tail_quantile_matches_a_known_distribution() -> None:
    tq = TailQuantile(q=0.999, window=5000)
    _feed(tq, np.abs(np.random.default_rng(1).standard_normal(20_000)))
    assert tq.quantile(ONE)[0] == pytest.approx(gaussian_abs_quantile(0.999), rel=0.15)


def test_tail_quantile_forgets_an_old_regime() -> None:
    tq = TailQuantile(q=0.99, window=500)
    rng = np.random.default_rng(2)
    _feed(tq, 100.0 * np.abs(rng.standard_normal(2000)))
    _feed(tq, np.abs(rng.standard_normal(5000)))
    assert tq.quantile(ONE)[0] < 5.0


def test_tail_quantile_slots_are_independent_and_state_round_trips() -> None:
    tq = TailQuantile(q=0.9, window=100)
    rng = np.random.default_rng(3)
    for _ in range(300):
        tq.update(np.array([0, 3]), np.abs(rng.standard_normal(2)) * np.array([1.0, 50.0]))
    q0, q3 = tq.quantile(np.array([0, 3]))
    assert q3 > 20 * q0
    copy = TailQuantile(q=0.9, window=100)
    copy.load_state_dict(tq.state_dict())
    np.testing.assert_array_equal(copy.quantile(np.array([0, 3])), [q0, q3])


def test_spread_floor_keeps_resting_series_finite() -> None:
    scale = DeviationScale(window=200)
    values = np.zeros(400)
    values[::20] = 5.0  # a rate at 0 with regular bursts
    for v in values:
        scale.update(ONE, np.array([0.0]), np.array([v]))
    assert scale.floor(ONE)[0] > 0.05


def _run_calibrator(policy: AlertPolicy, values: np.ndarray) -> Calibrator:
    det, cal = EwmaZScore(warmup=10), Calibrator(policy)
    for i, v in enumerate(values):
        batch = SeriesBatch.of([0], [v], [i * SECOND])
        cal.learn(det, batch, cal.step(det, batch))
        det.learn(batch)
    return cal


def test_calibrator_keeps_the_band_for_gaussian_series_and_widens_it_for_heavy_tails() -> None:
    rng = np.random.default_rng(4)
    policy = AlertPolicy(tail_window=1000)
    gaussian = _run_calibrator(policy, 100.0 + rng.standard_normal(3000))
    heavy = _run_calibrator(policy, 100.0 + rng.standard_t(1.2, 3000))
    assert gaussian.multiplier(ONE)[0] < 1.5 * policy.band
    assert heavy.multiplier(ONE)[0] > 3 * policy.band


def test_calibrator_off_or_self_calibrating_uses_the_band_as_is() -> None:
    off = _run_calibrator(AlertPolicy(tail_calibration=False),
                          100.0 + np.random.default_rng(5).standard_t(1.2, 500))
    assert off.multiplier(ONE)[0] == AlertPolicy().band
    cal, det = Calibrator(AlertPolicy()), Ensemble()
    assert det.self_calibrating
    batch = SeriesBatch.of([0], [1.0])
    cal.learn(det, batch, cal.step(det, batch))
    assert cal.scale.tails.count(ONE)[0] == 0


def test_a_calibrator_flags_a_series_once_it_sends_a_fractional_value() -> None:
    policy = AlertPolicy()
    counts = _run_calibrator(policy, np.random.default_rng(6).poisson(3.0, 50).astype(float))
    gauge = _run_calibrator(policy, 100.0 + np.random.default_rng(6).standard_normal(50))
    assert counts.state_dict()["usual.fractional"][0] == 0
    assert gauge.state_dict()["usual.fractional"][0] == 1


def test_format_11_calibrator_state_upgrades_as_whole_numbered_until_told_otherwise() -> None:
    # Format 11 did not keep the flag: an upgraded slot counts as whole-numbered (a band at
    # least 1 wide) until its next fractional value, which clears it for good.
    gauge = _run_calibrator(AlertPolicy(), 100.0 + np.random.default_rng(7).standard_normal(50))
    old = {k: v for k, v in gauge.state_dict().items() if k != "usual.fractional"}
    tree = _resolution_flags({"scorer": {"calibrators": [old]}})
    restored = Calibrator(AlertPolicy())
    restored.load_state_dict(tree["scorer"]["calibrators"][0])
    assert restored.state_dict()["usual.fractional"][0] == 0
    det = EwmaZScore(warmup=10)
    batch = SeriesBatch.of([0], [100.5], [60 * SECOND])
    restored.learn(det, batch, restored.step(det, batch))
    assert restored.state_dict()["usual.fractional"][0] == 1


def _flags(policy: AlertPolicy, scores: list[float], step_s: float = 1e-9) -> list[bool]:
    h = Hysteresis()
    return [bool(h.step(ONE, np.array([s]), np.array([round(i * step_s * SECOND)]),
                        policy).flag[0])
            for i, s in enumerate(scores, start=1)]


def test_min_duration_and_instant_threshold() -> None:
    policy = AlertPolicy(min_duration=3, close_after=1, instant_threshold=2.0)
    assert _flags(policy, [1.5, 0.1, 1.5, 1.5, 1.5, 0.1]) == [
        False, False, False, False, True, False]
    assert _flags(policy, [0.1, 2.5, 0.1]) == [False, True, False]


@pytest.mark.parametrize(("step_s", "opens_at"), [(60, 4), (300, 4), (600, 3), (1800, 2),
                                                  (3600, 2)])
def test_min_duration_is_also_reached_by_event_time(step_s: float, opens_at: int) -> None:
    # 3 points or 15 minutes at the series' spacing, whichever comes first.
    policy = AlertPolicy(min_duration=3, min_duration_time_s=900, close_after=1)
    flags = _flags(policy, [0.1, 0.1, 1.5, 1.5, 1.5, 1.5], step_s)
    assert flags.index(True) == opens_at, flags
    off = AlertPolicy(min_duration=3, min_duration_time_s=0, close_after=1)
    assert _flags(off, [0.1, 0.1, 1.5, 1.5, 1.5, 1.5], step_s).index(True) == 4


def _smooth_scores(n: int = 2000) -> np.ndarray:
    """Quiet scores in long excursions (|AR(1)|, coefficient 0.95), below 0.6."""
    rng = np.random.default_rng(0)
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.95 * ar[i - 1] + rng.normal(0.0, 0.05)
    return np.abs(ar)


def _opens_at(quiet: np.ndarray, step_s: float, score: float = 1.2) -> int:
    """Index (after ``quiet``) of the point that opens on a run of ``score``s."""
    policy = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                         min_duration_time_s=0, evidence_point_s=300)
    flags = _flags(policy, [*quiet.tolist(), *[score] * 40], step_s)
    return flags.index(True) - len(quiet)


def test_evidence_counts_event_time_not_points() -> None:
    # min_duration 2 with 5-minute evidence points: two points at the open threshold open
    # an anomaly 5 minutes apart, as without it; 30 seconds apart (on a series whose
    # points are not independent, below) each weighs about a tenth (0.1 of 5 minutes, or
    # 0.13 for the independence of these scores, whichever is more).
    quiet = _smooth_scores()
    assert _opens_at(quiet, 300) == 1
    # Each 30-second point adds 0.13 x (1.2 - 0.5) = 0.09: 11 of them reach 1.
    assert _opens_at(quiet, 30) == 10
    # Without evidence points, two in a row open at any spacing.
    runs = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                       min_duration_time_s=0)
    assert _flags(runs, [*quiet.tolist(), 1.2, 1.2], 30)[-2:] == [False, True]
    # One point at the instant threshold still opens at once.
    assert _opens_at(quiet, 30, score=1.6) == 0


def test_independent_points_are_full_evidence_however_close() -> None:
    # Counts of calls in 10-second windows: each window is a new draw, so two out of the
    # band open as they would 5 minutes apart. A smooth series' scores come in long
    # excursions: each point says little more than its neighbour, so it weighs its time.
    independent = np.abs(np.random.default_rng(1).normal(0.0, 0.15, 2000))
    assert _opens_at(independent, 10) == 1
    assert _opens_at(_smooth_scores(), 10) >= 9  # about as at 30 s: its independence decides
    # A new series is taken as independent until its scores say otherwise.
    assert _opens_at(np.array([0.1, 0.1, 0.1]), 10) == 1


def _closes_after(quiet: np.ndarray, step_s: float) -> int:
    """Points back inside (score 0.5) after which an anomaly opened at once closes."""
    policy = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                         min_duration_time_s=0, evidence_point_s=300)
    flags = _flags(policy, [*quiet.tolist(), 1.6, *[0.5] * 40], step_s)
    assert flags[len(quiet)], "the instant point did not open"
    return flags.index(False, len(quiet)) - len(quiet)


def test_being_back_takes_as_much_evidence_as_being_out() -> None:
    # One point back inside closes where one point out is full evidence: 5 minutes apart,
    # or independent windows however close (their learned autocorrelation, 0.035 here, is
    # within its noise of 0, so they count whole). A smooth series' point 30 s after the
    # last says little more than it (0.10 of a point each): 10 of them make one point back,
    # the 5 minutes it would be at the spacing the evidence point stands for.
    assert _closes_after(_smooth_scores(), 300) == 1
    independent = np.abs(np.random.default_rng(1).normal(0.0, 0.15, 2000))
    assert _closes_after(independent, 10) == 1
    assert _closes_after(_smooth_scores(), 30) == 10
    # Without evidence points, close_after counts points at any spacing.
    runs = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                       min_duration_time_s=0)
    assert _flags(runs, [*_smooth_scores().tolist(), 1.6, 0.5], 30)[-2:] == [True, False]


def test_evidence_is_not_restarted_by_a_dip_and_fades_on_normal_points() -> None:
    policy = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                         min_duration_time_s=0, evidence_point_s=300)
    # 1.3, a dip to 0.9 and 1.3 again: 0.8 + 0.4 + 0.8 of evidence, and the flag rises on
    # the second point out of the band; points in a row restart at the dip.
    dipping = [0.1, 0.1, 1.3, 0.9, 1.3]
    assert _flags(policy, dipping, 300) == [False, False, False, False, True]
    runs = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                       min_duration_time_s=0)
    assert not any(_flags(runs, dipping, 300))
    # Normal points use it up: a high point, then quiet ones, then another high point.
    assert not any(_flags(policy, [0.1, 0.1, 1.3, 0.0, 0.0, 1.3], 300))


def test_evidence_round_trips_and_format_12_state_starts_with_none() -> None:
    policy = AlertPolicy(min_duration=2, close_after=1, instant_threshold=1.5,
                         min_duration_time_s=0, evidence_point_s=300)
    h = Hysteresis()
    for i, s in enumerate([0.1, 0.1, 1.3], start=1):
        h.step(ONE, np.array([s]), np.array([i * 300 * SECOND]), policy)
    saved = h.state_dict()
    restored, older = Hysteresis(), Hysteresis()
    restored.load_state_dict(saved)
    format_12 = {k: v for k, v in saved.items() if k != "evidence" and k not in LAG_PRIOR}
    with pytest.raises(ValueError, match="evidence"):
        Hysteresis().load_state_dict(format_12)
    older.load_state_dict(_evidence_columns({"scorer": {"hysteresis": format_12}})
                          ["scorer"]["hysteresis"])
    point = (ONE, np.array([1.0]), np.array([4 * 300 * SECOND]), policy)
    assert restored.step(*point).flag[0]  # 0.8 + 0.5
    assert not older.step(*point).flag[0]  # 0.5 only


def test_a_gap_of_days_is_not_evidence_of_a_long_anomaly() -> None:
    h, policy = Hysteresis(), AlertPolicy(min_duration=3, min_duration_time_s=900, close_after=1)
    minute = 60 * SECOND
    times = [minute * i for i in range(1, 31)] + [minute * 30 + 3 * 86400 * SECOND]
    for t in times[:-1]:
        h.step(ONE, np.array([0.1]), np.array([t]), policy)
    # The first point after three days is anomalous: one point at a one-minute spacing.
    assert not h.step(ONE, np.array([1.5]), np.array([times[-1]]), policy).flag[0]


def test_cooldown_keeps_one_event_one_anomaly() -> None:
    scores = [3.0, 0.1, 3.0, 0.1, 0.1, 0.1, 3.0]
    policy = AlertPolicy(min_duration=1, close_after=1)
    assert _flags(policy, scores) == [True, False, True, False, False, False, True]
    quiet = AlertPolicy(min_duration=1, close_after=1, cooldown=3)
    assert _flags(quiet, scores) == [True, False, False, False, False, False, True]


def test_a_bigger_excursion_opens_during_the_cooldown() -> None:
    # The cooldown keeps the rest of one event one anomaly; a point scoring above that
    # anomaly's peak is more than its rest (msmon outbound-18: a one-point blip closed,
    # then latency quadrupled for a day inside the cooldown and was never flagged).
    quiet = AlertPolicy(min_duration=1, close_after=1, cooldown=10)
    assert _flags(quiet, [3.0, 0.1, 2.5, 0.1, 4.0, 0.1, 3.5]) == [
        True, False, False, False, True, False, False]


def test_open_for_counts_points_of_the_open_anomaly() -> None:
    h, policy = Hysteresis(), AlertPolicy(min_duration=1, close_after=1)
    for i, s in enumerate([0.0, 2.0, 2.0, 2.0]):
        h.step(ONE, np.array([s]), np.array([i]), policy)
    assert h.open_for(ONE)[0] == 3


def _shifted_scores(**alert: object) -> np.ndarray:
    rule = DetectorRule(detector="ewma_zscore", params=MappingProxyType({"alpha": 0.05}),
                        alert=AlertPolicy(**alert))  # type: ignore[arg-type]
    engine = Engine(EngineSettings(clock=lambda: 0.0, rules=(rule,)))
    rng = np.random.default_rng(6)
    values = 100.0 + rng.standard_normal(1200)
    values[600:] += 30.0  # a lasting level shift
    ts = np.arange(len(values), dtype=np.int64) * 60 * SECOND
    [out] = backtest(engine, [RecordedSeries(SeriesKey("x", (), ()), ts, values)])
    return out.score


@pytest.mark.parametrize("gating", ["clip", "skip", "off"])
def test_an_incident_is_flagged_whatever_the_learn_gating(gating: str) -> None:
    scores = _shifted_scores(learn_gating=gating)
    assert scores[600] > 1.0


def test_learning_is_protected_during_an_incident_until_relearn_after() -> None:
    protected = _shifted_scores(learn_gating="skip")
    relearned = _shifted_scores(learn_gating="skip", relearn_after=30)
    assert protected[660:700].min() > 1.0  # an hour later it is still an anomaly
    assert relearned[900:].max() < 1.0  # the new level became normal


@pytest.mark.parametrize(("spacing_s", "reopens"), [(3600, True), (60, False)])
def test_the_cooldown_ends_after_its_time_on_a_sparse_series(
    spacing_s: int, reopens: bool,
) -> None:
    # Two incidents three points apart: on an hourly series that is three hours (a new
    # incident, past the one-hour cooldown); on a one-minute series, three minutes (the
    # same event, inside both the 60-point and the one-hour cooldown).
    policy = AlertPolicy(min_duration=1, close_after=1, cooldown=60, cooldown_time_s=3600.0,
                         min_duration_time_s=0.0)
    h = Hysteresis()
    scores = [0.1, 2.0, 0.1, 0.1, 0.1, 2.0]
    opened = [bool(h.step(ONE, np.array([s]), np.array([i * spacing_s * SECOND]),
                          policy).opened[0]) for i, s in enumerate(scores)]
    assert opened[1], "the first incident did not open"
    assert opened[5] is reopens, f"second incident opened: {opened[5]}"


def test_close_after_time_keeps_a_noisy_shifted_level_open() -> None:
    # One-minute points of a shifted level whose noise dips inside the band every third
    # point: with close_after_time 15m it stays open until 15 normal minutes in a row.
    policy = AlertPolicy(min_duration=1, close_after=1, close_after_time_s=900.0,
                         min_duration_time_s=0.0)
    h = Hysteresis()
    scores = [2.0] + [1.5, 1.5, 0.5] * 10 + [0.2] * 20
    flags = [bool(h.step(ONE, np.array([s]), np.array([i * 60 * SECOND]), policy).flag[0])
             for i, s in enumerate(scores)]
    recovered = 30  # the last dip, then normal for good
    assert all(flags[:recovered]), "closed on a single dip inside the band"
    back = flags.index(False, recovered)
    assert back - recovered == 14, f"closed after {back - recovered + 1} normal minutes"
