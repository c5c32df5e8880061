"""The alerting kernels (calibration, hysteresis, held bands) against numpy's rules.

Each kernel replaced a few numpy array expressions; these tests restate those expressions
(NaN-propagating maxima, float32 saturation, int32 counts that stop at their maximum) and
check the kernels give the same numbers, special values included.
"""

from __future__ import annotations

import numpy as np
import pytest

from otel_anomaly.processors.alerting.calibration import (
    MAGNITUDE_MEMORY,
    Calibrated,
    Calibrator,
    calibrate,
    clip_to_band,
)
from otel_anomaly.processors.alerting.held_band import HeldBands
from otel_anomaly.processors.alerting.hysteresis import Hysteresis
from otel_anomaly.processors.detectors.base import Prediction
from otel_anomaly.processors.series.slot_arrays import saturated
from otel_anomaly.processors.settings import AlertPolicy
from otel_anomaly.processors.types import SeriesBatch

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, -1e308, 1e-300, 3.5e38])


def _draw(rng: np.random.Generator, n: int) -> np.ndarray:
    values = rng.normal(0.0, 10.0, n) * rng.choice([1.0, 1e-12, 1e6], n)
    special = rng.random(n) < 0.25
    values[special] = rng.choice(SPECIAL, int(special.sum()))
    return values


def _numpy_calibrate(values: np.ndarray, p: Prediction, policy: AlertPolicy,
                     floor: np.ndarray) -> tuple[np.ndarray, ...]:
    """``calibrate`` as numpy array expressions (its definition before the kernel)."""
    e = p.expected
    floor = np.maximum(np.maximum(policy.min_absolute_deviation, floor),
                       policy.min_relative_deviation * np.abs(e))
    up = np.maximum(np.maximum(p.upper - e, floor), 1e-9)
    down = np.maximum(np.maximum(e - p.lower, floor), 1e-9)
    dev = values - e
    score = np.where(dev >= 0, dev / up, -dev / down)
    if policy.direction == "up":
        score = np.where(dev < 0, 0.0, score)
    elif policy.direction == "down":
        score = np.where(dev > 0, 0.0, score)
    score = np.where(np.isnan(p.upper) | np.isnan(p.lower), 0.0, score)
    score = np.where(np.isfinite(values), score, np.nan)
    return e - down, e + up, score


@pytest.mark.parametrize("direction", ["both", "up", "down"])
def test_calibrate_gives_numpy_s_numbers_on_special_values(direction: str) -> None:
    rng = np.random.default_rng(1)
    policy = AlertPolicy(direction=direction, min_absolute_deviation=0.5,
                         min_relative_deviation=0.01)
    for _ in range(200):
        n = 7
        p = Prediction(_draw(rng, n), _draw(rng, n), _draw(rng, n))
        values, floor = _draw(rng, n), np.abs(_draw(rng, n))
        with np.errstate(all="ignore"):
            want = _numpy_calibrate(values, p, policy, floor)
            got = calibrate(values, p, policy, floor)
            clipped = clip_to_band(values, got)
        for a, b in zip(want, (got.lower, got.upper, got.score), strict=True):
            np.testing.assert_array_equal(a, b)
        lo = np.where(np.isnan(got.lower), -np.inf, got.lower)
        hi = np.where(np.isnan(got.upper), np.inf, got.upper)
        np.testing.assert_array_equal(clipped, np.clip(values, lo, hi))


def test_usual_magnitude_saturates_in_float32_and_skips_non_finite_rows() -> None:
    cal = Calibrator(AlertPolicy())
    slots = np.array([0, 1, 2, 3])
    values = np.array([1e300, np.nan, -np.inf, 2.0])
    cal.learn(_Constant(), SeriesBatch.of(slots, values, np.zeros(4, np.int64)),
              _nothing(4))
    magnitude = cal.magnitude(slots)
    assert magnitude[0] == float(np.finfo(np.float32).max)  # finite stays finite
    assert magnitude[1] == 0.0 and magnitude[2] == 0.0  # non-finite rows teach nothing
    assert magnitude[3] == 2.0
    # A later point: the running mean, in float32 as the column stores it.
    cal.learn(_Constant(), SeriesBatch.of(slots[3:], np.array([5.0]), np.zeros(1, np.int64)),
              _nothing(1))
    assert cal.magnitude(slots[3:])[0] == saturated(np.array([2.0 + 0.5 * 3.0]))[0]
    assert cal.state_dict()["usual.points"][3] == 2.0


def test_usual_magnitude_grows_only_for_finite_rows() -> None:
    cal = Calibrator(AlertPolicy())
    batch = SeriesBatch.of(np.array([3, 500]), np.array([1.0, np.nan]), np.zeros(2, np.int64))
    cal.learn(_Constant(), batch, _nothing(2))
    rows = len(cal.state_dict()["usual.magnitude"])
    assert 3 < rows < 500  # grown for slot 3, not for slot 500's NaN
    points = cal.state_dict()["usual.points"]
    points[3] = MAGNITUDE_MEMORY  # a long memory stays at its cap
    cal.load_state_dict(cal.state_dict() | {"usual.points": points})
    cal.learn(_Constant(), batch, _nothing(2))
    assert cal.state_dict()["usual.points"][3] == MAGNITUDE_MEMORY


def test_hysteresis_counts_stop_at_the_int32_maximum() -> None:
    h = Hysteresis()
    slots = np.array([0])
    policy = AlertPolicy(min_duration=1, close_after=1)
    h.step(slots, np.array([5.0]), np.array([60 * 10**9]), policy)
    state = h.state_dict()
    top = np.iinfo(np.int32).max
    state["above"][0] = state["open_for"][0] = state["since_close"][0] = top
    h.load_state_dict(state)
    moves = h.step(slots, np.array([5.0]), np.array([120 * 10**9]), policy)
    assert bool(moves.flag[0]) and bool(moves.updated[0])  # the restored anomaly: announced
    after = h.state_dict()
    assert after["above"][0] == top and after["open_for"][0] == top
    assert after["since_close"][0] == top
    # A NaN score (an invalid point) leaves the counts, times and the open anomaly's age as
    # they were (the class docstring's promise; the numpy version restarted the age).
    h.step(slots, np.array([np.nan]), np.array([180 * 10**9]), policy)
    for name, column in h.state_dict().items():
        np.testing.assert_array_equal(column, after[name], err_msg=name)


def test_held_band_scores_as_numpy_did() -> None:
    rng = np.random.default_rng(2)
    held = HeldBands()
    n = 50
    slots = np.arange(n)
    expected, width = rng.normal(100.0, 10.0, n), np.abs(rng.normal(5.0, 3.0, n))
    width[:5] = 0.0  # a band that rested at one value
    expected[5:8] = [np.nan, np.inf, 1e308]
    band = Calibrated(expected, expected - width, expected + 2 * width, np.full(n, 2.0))
    held.remember(slots, band, np.zeros(n, np.int64))
    values = _draw(rng, n) + 100.0
    for direction in ("both", "up", "down"):
        with np.errstate(all="ignore"):
            dev = values - expected
            if direction == "up":
                dev = np.maximum(dev, 0.0)
            elif direction == "down":
                dev = np.minimum(dev, 0.0)
            half = np.where(dev >= 0, band.upper - expected, expected - band.lower)
            want = np.abs(dev) / np.maximum(half, 1e-12 * (1.0 + np.abs(expected)))
            got = held._held_score(slots, values, direction)
            outside = held.outside(slots, values, direction)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(outside, want >= 1.0)


class _Constant:
    """The least a calibrator needs of a detector: neither self-calibrating nor tail-scaled."""

    self_calibrating = True


def _nothing(n: int) -> Calibrated:
    nan = np.full(n, np.nan)
    return Calibrated(nan, nan, nan, nan)
