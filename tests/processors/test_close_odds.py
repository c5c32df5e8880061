"""An open anomaly closes on evidence that the value is back, not on one noisy dip.

``AlertPolicy.close_odds``: Wald's sequential test of "back at the level before the
anomaly" against "still at the anomaly's level" (``held_band.back_step``), on deviations
from the detector's baseline, with the level before and its noise from the trend fit
(``trend.level_before``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from otel_anomaly.exporter.config import load_config
from otel_anomaly.exporter.errors import ConfigError
from otel_anomaly.processors.alerting.held_band import back_step
from otel_anomaly.processors.alerting.trend import WIDTH, level_before, trend_step
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import SEASONAL_ALERT, DetectorRule, EngineSettings
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.state.codec import decode, encode
from otel_anomaly.processors.state.migrations import upgrade
from otel_anomaly.processors.testing import (
    BASE_METRIC,
    SECOND,
    incident_cases,
    incident_series,
    replay_incidents,
)
from otel_anomaly.processors.types import SeriesKey

HOUR_NS = 3600 * SECOND


def _fit(points: np.ndarray, step_s: float, tau_s: float = 3600.0) -> np.ndarray:
    trend, last = np.zeros((1, WIDTH)), np.zeros(1, np.int64)
    for i, x in enumerate(points):
        trend_step(trend, last, 0, float(x), int(i * step_s * 1e9), tau_s)
    return trend


def test_the_level_before_leaves_out_the_point_that_opened() -> None:
    # Undoing the last point's update gives the fit of the points before it (its mean,
    # its residual variance), whatever that point was.
    rng = np.random.default_rng(3)
    before = 5.0 + rng.normal(0.0, 1.5, 40)
    with_spike = _fit(np.append(before, 80.0), 300.0)
    # The fit of the points before, decayed to the spike's time: fit them with one more
    # point of zero weight, which the same call undoes.
    alone = _fit(np.append(before, 0.0), 300.0)
    mean, variance = level_before(with_spike, 0)
    mean_alone, variance_alone = level_before(alone, 0)
    assert mean == pytest.approx(mean_alone, rel=1e-9)
    assert variance == pytest.approx(variance_alone, rel=1e-6)
    assert 4.0 < mean < 6.0, mean
    assert 1.0 < math.sqrt(variance) < 2.2, variance


def test_points_an_hour_apart_leave_no_level_to_compare_with() -> None:
    # A fit over the last hour of hourly points holds less than three points' worth.
    _, variance = level_before(_fit(np.arange(30.0), 3600.0), 0)
    assert math.isnan(variance)
    _, _, back, tells = back_step(3.0, True, 0.0, variance, 5.0, 1, 0.0)
    assert (tells, back) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("away", "more"),
    [(0.2, True),  # a point at the level before: evidence for "back"
     (3.6, False),  # a dip just inside a band at 3 sigmas, nearer the anomaly's 4 sigmas
     (4.5, False)])
def test_a_point_counts_for_back_only_nearer_the_level_before(away: float, more: bool) -> None:
    # Before: 0 with unit variance; the anomaly at 4 (two points at 4: its level stays 4).
    level, points, back, tells = back_step(away, False, 0.0, 1.0, 4.0, 2, 0.0)
    assert (level, points) == (4.0, 2)
    assert tells == pytest.approx(8.0)  # one point at 0: 4**2 / 2 of log odds
    assert (back > 0) == more, back


def test_correlated_points_are_less_evidence_of_back() -> None:
    # A point at the level before, from a series whose scores are correlated (the share
    # of independent information 0.2): a fifth of the log odds.
    *_, alone = back_step(0.0, False, 0.0, 1.0, 4.0, 2, 0.0)[:3]
    *_, correlated = back_step(0.0, False, 0.0, 1.0, 4.0, 2, 0.0, 0.2)[:3]
    assert alone == pytest.approx(8.0)
    assert correlated == pytest.approx(0.2 * alone)


def test_a_level_within_noise_of_the_one_before_tells_nothing() -> None:
    # A band that was narrow for a moment opens on a value that has not moved: one point
    # at the level before cannot settle the test at 20 to 1, so it keeps nothing.
    *_, tells = back_step(0.9, False, 0.0, 1.0, 1.2, 1, 0.0)
    assert tells < math.log(20.0)


def _lasting_share(rule: DetectorRule | None) -> list[float]:
    cases = [c for c in incident_cases(10, days=21, step_s=120) if c.kind == "level_shift"]
    settings = (EngineSettings(clock=lambda: 0.0) if rule is None
                else EngineSettings(clock=lambda: 0.0, rules=(rule,)))
    results = replay_incidents(Engine(settings), cases)
    a, b = 2 * 30, 3 * 30  # two to three hours after onset, two-minute points
    return [float(r.flag[c.start + a : c.start + b].mean())
            for c, r in zip(cases, results, strict=True)]


def test_a_level_shift_of_about_one_band_stays_flagged_hours_later() -> None:
    # The benchmark's level shift (+30 % on a CPU-like gauge, ``benchmarks/incidents.py``):
    # its noise dips back inside the band it opened against now and then. Closed at the
    # first dip, 5 of its 10 series were still flagged 2 to 3 hours after the onset; 8 with
    # every point of the test counted as independent (slow noise carried two back).
    held = sum(share > 0.5 for share in _lasting_share(None))
    rule = DetectorRule(name="dips", match=("*",), detector="ensemble",
                        alert=replace(SEASONAL_ALERT, close_odds=0.0))
    dipped = sum(share > 0.5 for share in _lasting_share(rule))
    assert held >= 9, f"{held} of 10 level shifts flagged 2-3 h after onset"
    assert dipped < held, f"without the test: {dipped} of 10 (with it: {held})"


def test_a_spike_still_closes_at_the_first_point_back() -> None:
    rng = np.random.default_rng(5)
    values = 50.0 + rng.normal(0.0, 2.0, 3 * 1440)
    at = len(values) - 120
    values[at] = 200.0
    ts = (np.arange(len(values), dtype=np.int64) * 60 + 1_700_000_000) * SECOND
    key = SeriesKey(BASE_METRIC["gauge"], (("service.name", "db"),), ())
    (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)),
                         [RecordedSeries(key, ts, values)])
    assert result.flag[at], "the spike was not flagged"
    assert not result.flag[at + 1 :].any(), (
        f"flag kept {int(result.flag[at + 1:].sum())} points after the spike")


def test_close_odds_must_be_odds(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("detectors:\n  - name: x\n    match: ['*']\n    type: ensemble\n"
                    "    alert: {close_odds: 0.5}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), {}, environ={})
    assert caught.value.problems == [
        "detectors[0].alert: `close_odds` must be 0 (off) or above 1 (odds of back to "
        "normal against still out); got close_odds=0.5"]
    path.write_text("detectors:\n  - name: x\n    match: ['*']\n    type: ensemble\n"
                    "    alert: {close_odds: 50}\n")
    assert load_config(str(path), {}, environ={}).engine_settings().rules[0].alert.close_odds == 50


@pytest.mark.parametrize("seed", [307, 507])
def test_a_slow_leak_is_kept_open_through_its_dips(seed: int) -> None:
    # The benchmark's fourth and sixth slow leaks: closed at their first dip back inside
    # the band they opened against, 44 % and 57 % of their ramps were flagged after the first
    # flag. Seed 507's level, the mean of its points out of the band, first stood 3.0 noise
    # sigmas from the level before, then fell to 2.4 (2.45 tell at 20 to 1) as points just
    # out of the band joined it: tested only while it stood apart, it closed 16 minutes
    # after it opened. Now both are flagged all the while they grow.
    case = incident_series("slow_leak", days=21, step_s=120, at_day=17, seed=seed)
    key = SeriesKey(BASE_METRIC["gauge"], (("service.name", "db"),), ())
    (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)),
                         [RecordedSeries(key, case.ts_unix_nano, case.values)])
    during = result.flag[case.start : case.start + 6 * 30]
    assert during.any(), "the leak was never flagged"
    first = int(np.argmax(during))
    assert during[first:].all(), f"flag dropped: up {during[first:].mean():.0%}"


def test_a_format_19_checkpoint_restores_open_anomalies_without_the_test() -> None:
    # Saved before the test existed, mid-shift: the upgrade leaves the level before its
    # anomaly unknown (NaN variance: ``back_step`` tells nothing, so it keeps nothing open);
    # restored, the anomaly stays open while the shift lasts and closes once it is over.
    rng = np.random.default_rng(11)
    values = 100.0 + rng.normal(0.0, 2.0, 1_500 + 30)
    values[1_500:] *= 1.3
    ts = (np.arange(len(values), dtype=np.int64) * 60 + 1_700_000_000) * SECOND
    key = SeriesKey(BASE_METRIC["gauge"], (("service.name", "db"),), ())
    live = Engine(EngineSettings(clock=lambda: 0.0))
    (result,) = backtest(live, [RecordedSeries(key, ts, values)])
    assert result.flag[-1], "the shift was not flagged"
    old = decode(*encode(live.state_dict()))
    for name in ("before", "before_variance", "level", "level_points", "back", "told"):
        del old["scorer"]["held"][name]
    state = upgrade(old, 19, checkpoint.FORMAT)
    held = state["scorer"]["held"]
    assert np.isnan(held["before_variance"]).all()
    assert not any(held[name].any()
                   for name in ("before", "level", "level_points", "back", "told"))
    restored = Engine(live.settings)
    restored.load_state_dict(state)
    later = ts[-1] + np.arange(1, 5, dtype=np.int64) * 60 * SECOND
    (res,) = backtest(restored, [RecordedSeries(key, later, np.array([131.0, 129.0, 100.0,
                                                                       101.0]))])
    assert res.flag.tolist() == [True, True, False, False], res.flag.tolist()
