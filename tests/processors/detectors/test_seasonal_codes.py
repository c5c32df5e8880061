"""Seasonal profiles in two-byte codes: precise relative to each series, learning small steps.

The codes (``processors.detectors.seasonal_codes``) replaced float32 means and spreads;
checkpoints saved with those (format 6) are upgraded to codes on restore.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from otel_anomaly.processors.detectors.seasonal_codes import encode_profiles
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile
from otel_anomaly.processors.state.migrations import upgrade
from otel_anomaly.processors.types import SeriesBatch

SECOND = 10**9


def _decoded(det: SeasonalProfile, slot: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Means and spreads of every phase of ``slot``, as the detector reads them."""
    ts = (np.arange(det.buckets) * det._bucket_ns + 1).astype(np.int64)
    batch = SeriesBatch(np.full(det.buckets, slot, np.intp), ts, np.zeros(det.buckets))
    prediction = det.predict(batch, 1.0)
    return prediction.expected, (prediction.upper - prediction.lower) / 2


@pytest.mark.parametrize("level", [1e-6, 1.0, 1e6, 1e12, 1e30])
def test_codes_keep_means_and_spreads_relative_to_the_series(level: float) -> None:
    # Float profiles of any magnitude (bytes/s far beyond float16's 65504) encode with an
    # error of at most half a unit (range / 65536): 2 % of the spread of a phase when the
    # phase means span a thousand such spreads.
    rng = np.random.default_rng(0)
    means = (level * (1.0 + 0.5 * rng.uniform(-1, 1, (3, 24)))).astype(np.float32)
    devs = (level * 1e-2 * rng.uniform(0.1, 10.0, (3, 24))).astype(np.float32)
    count = np.full((3, 24), 5, np.uint16)
    centre, unit, mean_code, dev_code = encode_profiles(means, devs, count)
    decoded = centre[:, None].astype(np.float64) + unit[:, None] * mean_code.astype(np.float64)
    assert np.all(np.abs(decoded - means) <= 0.51 * unit[:, None])
    assert np.all(np.abs(decoded - means) < 0.02 * devs)
    e, m = dev_code.astype(np.int64) >> 10, dev_code.astype(np.int64) & 1023
    spread = unit[:, None] * np.ldexp(1.0 + m / 1024, e - 32)
    np.testing.assert_allclose(spread, devs, rtol=2**-11)


def test_small_steps_are_learned_at_their_pace() -> None:
    # A point a second in a 10-minute phase moves its mean by 1/2400 of a residual: on a
    # series whose phases span 1000 (a code is 0.03) rounding to the nearest code would
    # never move it (nor does float32 at 1e6, whose step is 0.06). Stochastic rounding
    # learns a shift of 2 as the exact average does: a fifth of it in the 5th cycle of
    # plain averaging. Its price is noise in each phase's mean, about
    # sqrt(|residual| * unit / 2) (0.1 here): the average over the phases tells.
    det = SeasonalProfile(period_s=3600.0, buckets=6, warmup_cycles=1.0)
    rng = np.random.default_rng(1)
    ts = np.arange(5 * 3600, dtype=np.int64) * SECOND
    level = 1e6 + 1e3 * (ts // (600 * SECOND) % 6) / 5.0
    shifted = ts >= 4 * 3600 * SECOND
    values = level + 2.0 * shifted + rng.standard_normal(len(ts))
    for start in range(0, len(ts), 3600):
        rows = slice(start, start + 3600)
        det.learn(SeriesBatch(np.zeros(3600, np.intp), ts[rows], values[rows]))
    expected, _ = _decoded(det)
    learned = expected - (1e6 + 1e3 * np.arange(6) / 5.0)
    assert 0.3 < learned.mean() < 0.5, learned


def test_a_series_first_phase_is_not_re_encoded_at_every_point() -> None:
    # A weekly profile sees one phase for a series' first hour: its means span nothing, and
    # a unit set by the spread's headroom alone (2**-30 of it) sent every later point
    # through a refit (a pass over all 168 phases). The unit leaves the means a spread of
    # room, so the refits stop once the spread is known.
    det = SeasonalProfile(period_s=7 * 86400.0, buckets=168)
    rng = np.random.default_rng(2)
    units = []
    for i in range(120):  # 20 minutes of 10 s points, all in one hourly phase
        ts = np.array([(1_700_000_000 + 10 * i) * SECOND], np.int64)
        det.learn(SeriesBatch(np.zeros(1, np.intp), ts, 100.0 + rng.normal(0.0, 3.0, 1)))
        units.append(float(det._slots.unit[0]))
    assert len(set(units[20:])) <= 5, sorted(set(units[20:]))


def test_a_spike_in_a_fresh_phase_does_not_cost_the_others_their_precision() -> None:
    # The first value of a phase is learned raw, a spike included: stored as it is it would
    # set the slot's unit to 1e9 / 32768 for every phase. It is learned 256 spans beyond
    # the slot's range instead, and the unit stays far below the noise.
    det = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=1.0)
    rng = np.random.default_rng(2)
    ts = np.arange(0, 600, 10, dtype=np.int64) * SECOND
    values = 100.0 + rng.standard_normal(len(ts))
    values[3] = 1e9
    for t, x in zip(ts, values, strict=True):
        det.learn(SeriesBatch.of([0], [x], np.array([t])))
    assert 0 < det._slots.unit[0] < 0.1
    expected, _ = _decoded(det)
    assert np.all(np.abs(expected - 100.0) < 20.0), expected


def test_a_range_that_narrows_gets_its_precision_back() -> None:
    # Phases 1e6 apart for a cycle, then one level: the first point of each cycle reviews
    # the slot, and the unit follows the range down.
    det = SeasonalProfile(period_s=60.0, buckets=6, alpha=1.0, warmup_cycles=1.0)
    ts = np.arange(0, 600, 10, dtype=np.int64) * SECOND
    values = np.where(ts < 60 * SECOND, 1e6 * (ts // (10 * SECOND)), 100.0)
    det.learn(SeriesBatch(np.zeros(len(ts), np.intp), ts, values))
    assert det._slots.unit[0] < 1e-6
    np.testing.assert_allclose(_decoded(det)[0], 100.0, rtol=0, atol=1e-6)


def _float_profile(det: SeasonalProfile) -> dict[str, Any]:
    """``det``'s state as format 6 saved it (float32 means and spreads)."""
    state = det.state_dict()
    expected, _ = _decoded(det)
    unit = state.pop("unit")[:, None].astype(np.float64)
    code = state.pop("dev_code").astype(np.int64)
    dev = np.where(code > 0, unit * np.ldexp(1.0 + (code & 1023) / 1024, (code >> 10) - 32), 0)
    centre = state.pop("centre")[:, None].astype(np.float64)
    mean = centre + unit * state.pop("mean_code")
    return {**state, "mean": mean.astype(np.float32), "dev": dev.astype(np.float32),
            "expected": expected}


def test_format_6_profiles_upgrade_to_codes_with_their_values() -> None:
    det = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=1.0)
    rng = np.random.default_rng(3)
    ts = np.arange(0, 600, 10, dtype=np.int64) * SECOND
    det.learn(SeriesBatch(np.zeros(len(ts), np.intp), ts, 5e3 + rng.standard_normal(len(ts))))
    saved = _float_profile(det)
    saved.pop("expected")
    expected = saved["mean"][0].astype(np.float64)
    # As an ensemble saves its members (prefixed), inside the engine's tree.
    tree = {"scorer": {"detectors": [{f"m1.{k}": v for k, v in saved.items()}]}}
    member = upgrade(tree, 6, 7)["scorer"]["detectors"][0]
    assert "m1.mean" not in member and member["m1.mean_code"].dtype == np.int16
    restored = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=1.0)
    restored.load_state_dict({k.removeprefix("m1."): v for k, v in member.items()})
    # Within half a unit of the saved float32 means (their span is a few units of noise).
    unit = float(member["m1.unit"][0])
    assert 0 < unit < 1e-3
    np.testing.assert_allclose(_decoded(restored)[0], expected, rtol=0, atol=0.51 * unit)
    # A state already in codes (format 7) is left as it is.
    again = upgrade({"p": det.state_dict()}, 6, 7)["p"]
    for key, value in det.state_dict().items():
        np.testing.assert_array_equal(again[key], value)
