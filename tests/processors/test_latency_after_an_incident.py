"""A latency series stays sharp after an incident: the next, smaller slowdown is caught too.

A slowdown by 5x is 10 of a p50's sigmas per point (15 % noise). While its anomaly is open
and within its hold, a row the detector's own band scores higher than the held band (a
band the persistence alarm narrowed) teaches the latency rules' detector at most that held
band, as held rows teach every other detector. Before, such rows were learned at their full
deviation: a few of them filled the members' tails, and for about four hours the band was
2.5 to 3 times its usual width. A regression by half 30 minutes later then went unflagged
(every seed below), and while the first anomaly was still open its exported score fell
below 1 under a band five times its usual width.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from otel_anomaly.processors.backtest import BacktestResult, RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import SeriesKey

SEEDS = range(5)
STEP_S = 10.0
WARM = int(2 * 86_400 / STEP_S)  # two days of ordinary traffic first
LENGTH = int(1800 / STEP_S)  # each slowdown lasts 30 minutes
FIRST = WARM  # p50 x5
SECOND = FIRST + 2 * LENGTH  # p50 x1.5, 30 minutes after the first ended


@functools.cache
def _replayed() -> tuple[tuple[np.ndarray, BacktestResult], ...]:
    total = SECOND + 2 * LENGTH
    ts = (1_700_000_000 * 10**9 + np.arange(total) * int(STEP_S * 1e9)).astype(np.int64)
    series = []
    for seed in SEEDS:
        values = 80.0 * np.exp(0.15 * np.random.default_rng(seed).standard_normal(total))
        values[FIRST:FIRST + LENGTH] *= 5.0
        values[SECOND:SECOND + LENGTH] *= 1.5
        key = SeriesKey("traces_span_metrics_duration_milliseconds:p50",
                        (("service.name", f"svc{seed}"),), (("span.name", "GET /items"),))
        series.append(RecordedSeries(key, ts, values))
    results = backtest(Engine(EngineSettings(clock=lambda: 0.0)), series)
    return tuple((s.values, r) for s, r in zip(series, results, strict=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_a_regression_by_half_soon_after_a_big_one_is_flagged(seed: int) -> None:
    _, result = _replayed()[seed]
    # Latency opens on the second slow point (no single point opens it).
    assert result.flag[FIRST + 1:FIRST + LENGTH].all(), "the 5x slowdown was not held flagged"
    during = result.flag[SECOND:SECOND + LENGTH]
    assert during.any(), (
        "the second slowdown was never flagged; band before it "
        f"{result.lower[SECOND - 1]:.0f}-{result.upper[SECOND - 1]:.0f} ms")
    first = int(np.argmax(during))
    assert first * STEP_S <= 300, f"flagged only after {first * STEP_S:.0f} s"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_exported_score_agrees_with_the_flag_during_the_slowdown(seed: int) -> None:
    values, result = _replayed()[seed]
    rows = slice(FIRST + 10, FIRST + LENGTH)  # past the opening rows
    below = np.flatnonzero(result.score[rows] < 1.0)
    assert not len(below), (
        f"{len(below)} of the open anomaly's rows scored below 1, e.g. "
        f"{values[rows][below[0]]:.0f} ms inside the band up to "
        f"{result.upper[rows][below[0]]:.0f} ms")
