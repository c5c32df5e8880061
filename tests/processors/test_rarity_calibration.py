"""One threshold means one rarity: false opens per series-day stay near the budget on any shape.

Stationary series of very different shapes go through the default engine in event time,
as latency quantiles (the built-in latency rule: the ensemble with a ``false_alarm_budget``
of 0.1 opens per series-day). Nothing is wrong with any of them, so every open is a false
alarm; after two days of warm-up (the daily profile's), the rate of opens must stay within
twice the budget on every shape.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import DEFAULT_RULES, DetectorRule, EngineSettings
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import SeriesKey

STEP_S = 300  # five-minute points
PER_DAY = 86400 // STEP_S
DAYS = 16
WARM_DAYS = 2
SERIES = 6  # per shape
METRIC = "http_server_duration_milliseconds:p99"
BUDGET = next(r for r in DEFAULT_RULES if r.name == "latencies_ms").alert.false_alarm_budget

Shape = Callable[[np.random.Generator, int], np.ndarray]


def _daily(rng: np.random.Generator, n: int) -> np.ndarray:
    phase = 2 * np.pi * np.arange(n) / PER_DAY
    return 100.0 + 40.0 * np.sin(phase) + rng.normal(0.0, 4.0, n)


def _spiky(rng: np.random.Generator, n: int) -> np.ndarray:
    # Mostly calm, with a burst on 2 % of points: bursts are this series' normal.
    base = rng.normal(50.0, 2.0, n)
    bursts = rng.random(n) < 0.02
    return base + bursts * rng.exponential(30.0, n)


SHAPES: dict[str, Shape] = {
    "gaussian": lambda rng, n: rng.normal(100.0, 5.0, n),
    "student_t_2": lambda rng, n: 100.0 + 5.0 * rng.standard_t(2, n),
    "lognormal": lambda rng, n: rng.lognormal(3.0, 0.6, n),
    "poisson_low": lambda rng, n: rng.poisson(0.8, n).astype(np.float64),
    "spiky_mixture": _spiky,
    "daily_cycle": _daily,
}


def false_opens_per_series_day(shape: Shape, seed: int) -> float:
    rng = np.random.default_rng(seed)
    n = DAYS * PER_DAY
    ts = (np.arange(n, dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    series = [RecordedSeries(SeriesKey(METRIC, (("service.name", f"s{i}"),), ()),
                             ts, shape(rng, n)) for i in range(SERIES)]
    results = backtest(Engine(EngineSettings(clock=lambda: 0.0)), series)
    start = WARM_DAYS * PER_DAY
    opens = 0
    for result in results:
        flag = result.flag.astype(np.int8)
        opens += int((np.diff(flag[start - 1 :]) == 1).sum())
    return opens / (SERIES * (DAYS - WARM_DAYS))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_false_opens_stay_within_twice_the_budget(shape: str) -> None:
    assert BUDGET > 0
    rate = false_opens_per_series_day(SHAPES[shape], seed=sorted(SHAPES).index(shape))
    assert rate <= 2 * BUDGET, (
        f"{shape}: {rate:.3f} false opens per series-day, budget {BUDGET}")


def test_the_budget_is_what_quiets_a_heavy_tail() -> None:
    # The same heavy-tailed series without a budget (3.5 sigmas everywhere) opens several
    # times as often: without this, a detector that never opens would pass the test above.
    # Single points may open here (the built-in latency rules need two in a row, and then
    # i.i.d. spikes never open at all), so it is the budget that has to hold them back.
    from dataclasses import replace  # noqa: PLC0415

    instant = tuple(replace(r, alert=replace(r.alert, instant_threshold=1.5))
                    for r in DEFAULT_RULES)
    plain = tuple(replace(r, alert=replace(r.alert, false_alarm_budget=0.0)) for r in instant)
    rng = np.random.default_rng(5)
    n = DAYS * PER_DAY
    ts = (np.arange(n, dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    series = [RecordedSeries(SeriesKey(METRIC, (("service.name", f"s{i}"),), ()), ts,
                             100.0 + 5.0 * rng.standard_t(2, n)) for i in range(SERIES)]

    def opens(rules: tuple[DetectorRule, ...]) -> int:
        engine = Engine(EngineSettings(clock=lambda: 0.0, rules=rules))
        return sum(int((np.diff(r.flag[WARM_DAYS * PER_DAY :].astype(np.int8)) == 1).sum())
                   for r in backtest(engine, series))

    budgeted, unbudgeted = opens(instant), opens(plain)
    assert unbudgeted >= 2 * max(budgeted, 1), (
        f"{unbudgeted} opens without the budget, {budgeted} with it")
