"""An anomaly's held band holds its own side: a fall is not kept open by values above it."""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.alerting.calibration import Calibrated
from otel_anomaly.processors.alerting.held_band import HeldBands

SLOTS = np.array([0])
HOUR_S = 3600.0
MINUTE_NS = 60 * 10**9


def _held_at_open() -> HeldBands:
    held = HeldBands()
    opened = Calibrated(np.array([100.0]), np.array([90.0]), np.array([110.0]), np.array([3.0]))
    held.remember(SLOTS, opened, np.array([0]))
    return held


def _apply(held: HeldBands, value: float, side: int) -> tuple[float, bool]:
    """The score the alert follows and whether the row is kept open, one minute in."""
    # The detector's own band has moved up with the series (a daily rise): it scores the
    # value as usual.
    own = Calibrated(np.array([125.0]), np.array([100.0]), np.array([150.0]), np.array([0.2]))
    out, keep = held.apply(SLOTS, np.array([value]), own, np.array([True]),
                           np.array([MINUTE_NS]), hold_s=HOUR_S,
                           sides=np.array([side], np.int8))
    return float(out.score[0]), bool(keep[0])


def test_a_fall_is_not_held_open_by_values_above_its_band() -> None:
    # Opened as a fall: 130 is three half-widths above the held band's middle, on the
    # other side.
    score, keep = _apply(_held_at_open(), 130.0, side=-1)
    assert score == 0.2, f"a fall held by a value above its band: score {score}"
    assert not keep


def test_a_fall_is_held_while_the_value_stays_below_its_band() -> None:
    score, _ = _apply(_held_at_open(), 75.0, side=-1)
    assert score == 2.5, f"the held band should score the fall: {score}"


def test_a_rise_is_held_by_values_above_its_band() -> None:
    score, _ = _apply(_held_at_open(), 130.0, side=1)
    assert score == 3.0, f"the held band should score the rise: {score}"


def test_a_close_on_the_other_side_is_no_new_baseline() -> None:
    held = _held_at_open()
    values = np.array([130.0])
    assert not held.outside(SLOTS, values, sides=np.array([-1], np.int8))[0]
    assert held.outside(SLOTS, values, sides=np.array([1], np.int8))[0]
    assert held.outside(SLOTS, values)[0], "without sides either side counts, as before"
