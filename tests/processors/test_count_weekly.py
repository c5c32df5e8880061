"""A count's sequential tests and a weekly pattern its detector has seen once.

Request counters with five busy days and two quiet ones (``production_series``: the quiet
days at 60 % of the busy ones), counted over 2-minute windows as a counter's rate is on
the live path. Before the weekly profile is ready (two weeks), the daily one expects a
busy day's traffic on a quiet day; the count's tests of a fall take the expected events
as the truth, and at thousands of events a window opened on every quiet day.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_anomaly.processors.alerting.calibration_kernels import count_references
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import DAY_S, Incident, incident_series, production_series
from otel_anomaly.processors.types import SeriesBatch, SeriesKey

STEP_S = 120.0
PER_DAY = int(DAY_S / STEP_S)


def _run(cases: list[Incident]) -> list[np.ndarray]:
    series = [RecordedSeries(SeriesKey("http_server_requests_total:rate", (("s", str(i)),), ()),
                             c.ts_unix_nano, c.values, np.full(len(c.values), STEP_S))
              for i, c in enumerate(cases)]
    results = backtest(Engine(EngineSettings(clock=lambda: 0.0)), series)
    return [r.flag.astype(np.int8) for r in results]


def _opens(flag: np.ndarray, start: int) -> int:
    rises = np.flatnonzero(np.diff(flag) == 1) + 1
    return int(np.count_nonzero(rises >= start))


def test_a_fall_is_tested_against_the_lower_expectation_a_rise_the_higher() -> None:
    assert count_references(expected=10.0, last_cycle=6.0) == (6.0, 10.0)
    assert count_references(expected=6.0, last_cycle=10.0) == (6.0, 10.0)
    assert count_references(expected=10.0, last_cycle=math.nan) == (10.0, 10.0)
    fall, rise = count_references(expected=math.nan, last_cycle=6.0)
    assert math.isnan(fall) and math.isnan(rise)


def test_the_weekly_profile_s_last_cycle_is_known_after_one_week() -> None:
    step_ns = int(3600e9)
    week = 7 * 24
    ts = np.arange(2 * week, dtype=np.int64) * step_ns
    hour_of_week = np.arange(2 * week) % week
    values = 100.0 + hour_of_week.astype(np.float64)  # each hour of the week its own level
    ensemble = Ensemble()
    seen: list[float] = []
    for i in range(2 * week):
        batch = SeriesBatch.of([0], [values[i]], [int(ts[i])], counts=[3600.0])
        prediction = ensemble.predict(batch, 3.0)
        assert prediction.last_cycle is not None
        seen.append(float(prediction.last_cycle[0]))
        ensemble.learn(batch)
    assert all(math.isnan(x) for x in seen[:week]), "no cycle of history in the first week"
    second = np.array(seen[week:])
    assert np.allclose(second, values[:week], rtol=0.02), "the second week sees the first"
    gauge = SeriesBatch.of([0], [100.0], [int(ts[-1])])  # no count: no test reads it
    assert ensemble.predict(gauge, 3.0).last_cycle is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_quiet_days_of_a_counter_s_second_week_open_nothing(seed: int) -> None:
    case = incident_series(None, base="requests", days=14, step_s=STEP_S, seed=seed)
    (flag,) = _run([case])
    # Before: 3 opens in each series' second week, 5 to 20 hours each.
    assert _opens(flag, 7 * PER_DAY) == 0


@pytest.mark.parametrize("quiet", [False, True], ids=["busy", "quiet"])
@pytest.mark.parametrize("seed", [0, 1])
def test_half_a_counter_s_traffic_lost_in_its_second_week_still_opens(seed: int,
                                                                     quiet: bool) -> None:
    # On a quiet day the fall is tested against what the weekly profile saw a week
    # before, not the daily profile's busy day: half of it is still half.
    ts, values = production_series("requests", days=14, step_s=STEP_S, seed=seed)
    seconds = ts / 1e9
    noon = ((seconds - seconds[0] >= 8 * DAY_S) & (seconds % DAY_S >= 12 * 3600)
            & (((seconds // DAY_S) % 7 >= 5) == quiet))
    start = int(np.argmax(noon))
    hour = slice(start, start + int(3600 / STEP_S))
    values = values.copy()
    values[hour] = np.floor(values[hour] * STEP_S * 0.5) / STEP_S  # whole events, as counted
    (flag,) = _run([Incident("throughput_drop", ts, values, hour.start, hour.stop)])
    assert not flag[start - 1], "the hour before must be quiet for the catch to mean much"
    assert flag[hour].any(), f"half the traffic lost at {start / PER_DAY:.1f} days"
