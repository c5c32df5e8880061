"""An incident is one anomaly for as long as it lasts: flagged early, kept, closed at recovery.

What an on-call person needs from the default detector: the flag rises within a few points
of a lasting shift, stays up while the value stays shifted (the incident must not become
the new normal within minutes, nor be hidden by a band that widened on its first points),
and comes down once the value is back.
"""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import SeriesKey

STEP_S = 60
WARM = 1_500  # a day of one-minute points before the incident
LENGTH = 60  # one hour


def run(values: np.ndarray) -> np.ndarray:
    ts = (np.arange(len(values), dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    series = RecordedSeries(SeriesKey("system_cpu_utilization_percent", (), ()), ts, values)
    (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [series])
    return result.flag


@pytest.mark.parametrize(("size", "direction"), [(1.3, "up"), (0.7, "down"), (1.6, "up")])
def test_a_lasting_shift_stays_flagged_until_it_ends(size: float, direction: str) -> None:
    rng = np.random.default_rng(11)
    values = 100.0 + rng.normal(0.0, 2.0, WARM + LENGTH + 120)
    values[WARM : WARM + LENGTH] *= size
    flag = run(values)
    during = flag[WARM : WARM + LENGTH]
    first = int(np.argmax(during)) if during.any() else None
    assert first is not None and first <= 3, f"{direction} shift flagged at {first}"
    assert during[first:].mean() >= 0.9, (
        f"flag up for {during[first:].mean():.0%} of the shift after it opened")
    assert not flag[WARM + LENGTH + 5 :].any(), "flag still up after recovery"
    assert not flag[WARM // 2 : WARM].any(), "false flag before the incident"


def test_the_events_of_a_shift_explain_it_against_the_band_it_opened_on() -> None:
    rng = np.random.default_rng(11)
    values = 100.0 + rng.normal(0.0, 2.0, WARM + LENGTH + 20)
    values[WARM : WARM + LENGTH] *= 1.3
    ts = (np.arange(len(values), dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    key = SeriesKey("system_cpu_utilization_percent", (("service.name", "db"),), ())
    events = []
    for i in range(len(values)):
        events += engine.ingest_series([key], ts[i : i + 1], values[i : i + 1]).events
    opened = [e for e in events if e.kind == "open"]
    closed = [e for e in events if e.kind == "close"]
    assert len(opened) == len(closed) == 1, [(e.kind, e.ts_unix_nano) for e in events]
    assert "above the expected" in opened[0].explanation
    assert "by ensemble (level" in opened[0].explanation  # which member saw it
    # The close reports the band the anomaly was held against, not the widened one.
    assert abs(closed[0].expected - opened[0].expected) < 1.0
    assert closed[0].upper == opened[0].upper


def test_an_outage_does_not_blind_the_detector_to_the_next_one() -> None:
    rng = np.random.default_rng(11)
    values = 100.0 + rng.normal(0.0, 2.0, WARM + 400)
    values[WARM : WARM + LENGTH] *= 1.3  # an hour-long outage
    values[WARM + 300] = 125.0  # four hours later, one bad minute
    flag = run(values)
    assert flag[WARM + 300], "the second incident was missed"
    assert not flag[WARM + LENGTH + 5 : WARM + 300].any(), "false flag between the incidents"
