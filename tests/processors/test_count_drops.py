"""A count that falls or stops opens, though no single window of it is far enough out.

At 10 events a minute or fewer, a minute with none is within the learned band (a count's
lower tail ends at 0), so a service whose calls stopped while its counter kept reporting
paged nothing. ``calibration_kernels.count_drop_score`` judges the recent windows pooled
and the run of empty windows, each against the count's own noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_anomaly.processors.alerting.calibration_kernels import (
    DROP_OPENS_PER_DAY,
    count_drop_score,
    gap_scale,
    run_after,
)
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import SECOND, bursty_counts
from otel_anomaly.processors.types import SeriesKey

STEP_S = 60
PER_DAY = 86400 // STEP_S
T0 = 1_700_000_000


def _counts(mean: float, seed: int, days: float = 5.0, factor: float = 1.0, size: float = 1.0,
            ) -> tuple[RecordedSeries, slice]:
    """Events a minute with a daily cycle; from day 4, 2 h in, ``factor`` times for 30 min."""
    rng = np.random.default_rng(seed)
    n = int(days * PER_DAY)
    t = np.arange(n) * STEP_S
    rate = mean * (1.0 + 0.5 * np.sin(2 * np.pi * t / 86400))
    at = slice(4 * PER_DAY + 120, 4 * PER_DAY + 150)
    rate[at] *= factor
    events = bursty_counts(rate, size, rng)
    key = SeriesKey("app_requests_total:rate", (("instance", str(seed)),), ())
    return RecordedSeries(key, (t + T0).astype(np.int64) * SECOND, events / STEP_S,
                          np.full(n, float(STEP_S))), at


def _first_flag(series: RecordedSeries, at: slice) -> int | None:
    (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [series])
    assert not result.flag[at.start - 120 : at.start].any(), "flagged before the drop"
    flagged = np.flatnonzero(result.flag[at])
    return int(flagged[0]) if len(flagged) else None


@pytest.mark.parametrize(("mean", "factor", "within"), [
    (10.0, 0.0, 2), (2.0, 0.0, 8), (0.5, 0.0, 25), (10.0, 0.25, 6), (2.0, 0.25, 14),
    (10.0, 0.5, 9)])
def test_a_count_that_stops_or_falls_opens_within_minutes(
    mean: float, factor: float, within: int,
) -> None:
    # Before the drop tests none of the stops was caught in 10 series each
    # (``benchmarks/low_counts.py``, one-minute windows, drop x0 and x0.25). Measured on
    # these 4 seeds: the first flag in the drop's 2nd minute at 10 events, its 5th or 6th
    # at 2, 16th to 20th at 0.5. Falls, with the drop CUSUM (without it): to a quarter of
    # 10 in the 4th or 5th minute (5th to 8th), of 2 in the 12th or 13th (in 2 of 4: 12th
    # and 26th), to half of 10 in the 6th to 8th (in 2 of 4: 21st and 27th).
    for seed in range(4):
        series, at = _counts(mean, seed, factor=factor)
        first = _first_flag(series, at)
        assert first is not None and first <= within, f"seed {seed}: first flag {first}"


def test_once_a_count_is_back_its_fall_is_forgotten() -> None:
    # A stop's drop CUSUM grows about an event a minute at 2 events; left to drift down once
    # the count was back, near a detector that then expected 0.8 of it, it scored the
    # count's rows below their expected value at 2.1 to 3.5 times the band from 15 minutes
    # to two hours after the stop (8 to 48 of those 105 rows over 1 in each series), and
    # opened again in one. The first window back at its expected events ends the alarm and
    # restarts the sum: now at most 0.84.
    for seed in range(4):
        series, at = _counts(2.0, seed, factor=0.0)
        (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [series])
        after = slice(at.stop + 15, at.stop + 120)
        assert result.flag[at].any(), f"seed {seed}: the stop was not flagged"
        assert float(np.nanmax(result.score[after])) < 1.0, (
            f"seed {seed}: scores after the stop up to {np.nanmax(result.score[after]):.2f}")


def test_the_usual_gaps_of_a_count_in_bursts_do_not_page() -> None:
    # Two events a minute in bursts of 4: a minute with none is 8 times as common as for
    # single events, and the run test learns it (its dispersion and its past gaps).
    # Without them a run of two empty minutes, rare for Poisson events, would page.
    series = [_counts(2.0, seed, days=6.0, size=4.0)[0] for seed in range(6)]
    quiet = [RecordedSeries(s.key, s.ts_unix_nano, s.values, s.counts) for s in series]
    warm = 2 * PER_DAY
    results = backtest(Engine(EngineSettings(clock=lambda: 0.0)), quiet)
    opens = sum(int((np.diff(r.flag[warm - 1 :].astype(np.int8)) == 1).sum()) for r in results)
    days = len(series) * (len(series[0].values) - warm) / PER_DAY
    assert opens / days <= 0.05, f"{opens} opens in {days:.0f} series-days"


def _learned_gaps(events: np.ndarray, expected: float) -> tuple[float, float]:
    cells = (0.0, 0.0, 0.0)
    for k in events:
        cells = run_after(value=k / STEP_S, expected=expected / STEP_S, exposure=float(STEP_S),
                          run_expected=cells[0], gap_sum=cells[1], gaps=cells[2])
    return float(cells[1]), float(cells[2])


@pytest.mark.parametrize("mean", [0.05, 0.5, 2.0])
def test_a_gap_averages_its_time_rescaled_mean_where_the_expected_events_are_right(
    mean: float,
) -> None:
    # Between windows with events, ``j`` empty ones (geometric) that expected ``j mean``
    # events: ``mean e^-mean / (1 - e^-mean)`` on average, 1 where windows hold few
    # events, less where a gap mostly ends inside a window (0.98, 0.77, 0.31 here).
    rng = np.random.default_rng(int(mean * 100))
    gap_sum, gaps = _learned_gaps(rng.poisson(mean, 60_000).astype(np.float64), mean)
    assert gaps > 300, gaps
    exact = mean * math.exp(-mean) / -math.expm1(-mean)
    assert gap_sum / gaps == pytest.approx(exact, abs=0.1), (gap_sum / gaps, exact)
    assert 1.0 <= gap_scale(gap_sum=gap_sum, gaps=gaps) <= 1.15


def test_gaps_of_bursts_and_of_a_detector_that_expects_too_much_are_longer() -> None:
    rng = np.random.default_rng(3)
    bursty = bursty_counts(np.full(60_000, 0.2), 4.0, rng)
    assert gap_scale(*_learned_gaps(bursty, 0.2)) >= 3.0
    poisson = rng.poisson(0.2, 60_000).astype(np.float64)
    assert gap_scale(*_learned_gaps(poisson, 0.5)) >= 2.0  # expected 2.5 times the events
    assert gap_scale(gap_sum=0.0, gaps=0.0) == 1.0  # no gap ended yet: none was long
    # One ordinary gap seen is no evidence of long ones (an upper bound would say 3).
    assert gap_scale(gap_sum=0.0, gaps=1.0) == 1.0


def test_a_run_is_rare_at_the_windows_a_day_it_is_tested_in() -> None:
    # One run may start per window: at one-minute windows a run scores 1 where Poisson
    # events, rightly expected, leave it empty about DROP_OPENS_PER_DAY times a day.
    exponent = math.log(PER_DAY / DROP_OPENS_PER_DAY)

    def score(run_expected: float) -> float:
        return float(count_drop_score(
            value=0.0, expected=0.5 / STEP_S, exposure=float(STEP_S), fractional=0, k=3.5,
            dispersion=1.0, recent_events=0.0, recent_expected=0.0,
            run_expected=run_expected, gap_sum=1000.0, gaps=1000.0, drop_cusum=0.0))

    scale = gap_scale(gap_sum=1000.0, gaps=1000.0)
    assert score(exponent * scale - 0.5) == pytest.approx(1.0)
    assert score(0.0) < 0.1
    # A window with events, or one above its expected events, is no drop of this kind.
    assert count_drop_score(value=1.0 / STEP_S, expected=0.5 / STEP_S, exposure=float(STEP_S),
                            fractional=0, k=3.5, dispersion=1.0, recent_events=0.0,
                            recent_expected=0.0, run_expected=1e6, gap_sum=1000.0,
                            gaps=1000.0, drop_cusum=1e6) == 0.0
