"""An incident is one anomaly for as long as it lasts: flagged early, kept, closed at recovery.

What an on-call person needs from the default detector: the flag rises within a few points
of a lasting shift, stays up while the value stays shifted (the incident must not become
the new normal within minutes, nor be hidden by a band that widened on its first points),
and comes down once the value is back.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import SEASONAL_ALERT, DetectorRule, EngineSettings
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


def _events(values: np.ndarray) -> list:
    ts = (np.arange(len(values), dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    engine = Engine(EngineSettings(clock=lambda: 0.0))
    key = SeriesKey("process_memory_usage_bytes", (("service.name", "db"),), ())
    events = []
    for i in range(len(values)):
        events += engine.ingest_series([key], ts[i : i + 1], values[i : i + 1]).events
    return events


def test_a_leak_stays_flagged_while_it_grows() -> None:
    # Memory that jumps 15 % and then keeps growing, to +60 % over six hours: the
    # detector adapts to any level, but the value keeps moving further out, so the
    # anomaly that opened on the jump is not let go while the leak grows (the hold
    # alone would have let it go after an hour).
    rng = np.random.default_rng(3)
    ramp = 6 * 60
    values = 100.0 + rng.normal(0.0, 2.0, WARM + ramp)
    values[WARM:] *= 1.15 * np.linspace(1.0, 1.4, ramp)
    flag = run(values)
    during = flag[WARM:]
    assert during.any(), "the leak was never flagged"
    first = int(np.argmax(during))
    assert first <= 120, f"the leak was flagged only after {first} minutes"
    assert during[first:].all(), (
        f"flag dropped while the leak grew: up {during[first:].mean():.0%} of the time after "
        "it opened")


def test_a_lasting_shift_is_closed_as_the_new_baseline_never_silently() -> None:
    # A step that stays: held while it is new, then handed to the detector; once the
    # detector has learned the new level, the anomaly closes saying so.
    rng = np.random.default_rng(4)
    values = 100.0 + rng.normal(0.0, 2.0, WARM + 8 * 60)
    values[WARM:] += 30.0
    events = _events(values)
    kinds = [e.kind for e in events if e.kind != "update"]
    assert kinds[:2] == ["open", "close"], kinds
    close = next(e for e in events if e.kind == "close")
    assert "new level is now the baseline" in close.explanation, close.explanation
    open_ns = next(e for e in events if e.kind == "open").ts_unix_nano
    held_h = (close.ts_unix_nano - open_ns) / 3600e9
    assert held_h >= 1.0, f"closed after {held_h:.2f} h, before the hold (1 h) ran out"
    assert kinds.count("open") == 1, f"the accepted level paged again: {kinds}"


def test_a_long_flat_stretch_scores_finite_and_keeps_a_band_in_the_series_unit() -> None:
    # Ingress that reads exactly 0 for days, then trickles (msmon ingress-02 rests at 0 for
    # its first week): the band once shrank to +-2.2e-308 and the first trickle scored inf.
    # Later, after a day of traffic and another flat night, the band keeps a width in the
    # series' own unit (1 % of its usual magnitude), not a float-noise width.
    rng = np.random.default_rng(8)
    flat, busy, night = 3 * 1440, 1440, 600
    values = np.zeros(flat + 10 + busy + night + 1)
    values[flat : flat + 10] = 3.0
    values[flat + 10 : flat + 10 + busy] = np.abs(1000.0 + rng.normal(0.0, 50.0, busy))
    values[-1] = 3.0
    ts = (np.arange(len(values), dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    series = RecordedSeries(SeriesKey("ingress_bytes", (), ()), ts, values)
    (result,) = backtest(Engine(EngineSettings(clock=lambda: 0.0)), [series])
    assert np.isfinite(result.score).all(), (
        f"infinite scores at {np.flatnonzero(~np.isfinite(result.score))[:5]}")
    width = float((result.upper - result.lower)[-2])
    assert width >= 0.01 * 1000.0, f"band {width:.3g} wide after the flat night"


def test_an_up_only_rule_does_not_hold_a_flag_up_on_a_drop() -> None:
    # The band an anomaly opened on is held in the rule's direction only: with an up-only
    # rule, a rise that turns into a drop far below the band is not "still anomalous".
    rule = DetectorRule(name="up", match=("*",), detector="ensemble",
                        alert=replace(SEASONAL_ALERT, direction="up"))
    rng = np.random.default_rng(12)
    values = 100.0 + rng.normal(0.0, 2.0, WARM + 30)
    values[WARM : WARM + 10] = 200.0
    values[WARM + 10 :] = 20.0
    ts = (np.arange(len(values), dtype=np.int64) * STEP_S + 1_700_000_000) * SECOND
    series = RecordedSeries(SeriesKey("queue_depth", (), ()), ts, values)
    engine = Engine(EngineSettings(clock=lambda: 0.0, rules=(rule,)))
    (result,) = backtest(engine, [series])
    assert result.flag[WARM : WARM + 10].any(), "the rise was not flagged"
    assert not result.flag[WARM + 12 :].any(), "an up-only rule kept its flag up on a drop"
