"""The trend test that keeps a growing anomaly open (``processors.alerting.trend``)."""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.alerting.calibration import Calibrated
from otel_anomaly.processors.alerting.held_band import HeldBands
from otel_anomaly.processors.alerting.hysteresis import Hysteresis
from otel_anomaly.processors.alerting.trend import T_CRIT, WIDTH, trend_step
from otel_anomaly.processors.settings import AlertPolicy

STEP_NS = 120 * 10**9  # two-minute points
HOLD_S = 3600.0


def _statistics(values: np.ndarray) -> np.ndarray:
    trend, last_ns = np.zeros((1, WIDTH)), np.zeros(1, np.int64)
    return np.array([trend_step(trend, last_ns, 0, float(x), i * STEP_NS, HOLD_S)
                     for i, x in enumerate(values)])


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    out = np.zeros(n)
    shocks = rng.standard_normal(n)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def test_noise_rarely_passes_for_a_trend_even_when_autocorrelated() -> None:
    # White noise, and AR(1) noise as smooth as the synthetic utilisation gauge (0.8): the
    # autocorrelation correction keeps both well under 1 % of points past T_CRIT, and the
    # statistic's spread near 1 (it is a t statistic).
    rng = np.random.default_rng(0)
    for phi in (0.0, 0.8):
        t = np.concatenate([_statistics(_ar1(rng, 3000, phi))[100:] for _ in range(3)])
        assert (t >= T_CRIT).mean() < 0.01, f"phi {phi}: {(t >= T_CRIT).mean():.2%}"
        assert 0.7 < t.std() < 1.5, f"phi {phi}: spread {t.std():.2f}"


def test_a_slow_ramp_is_a_trend_and_a_plateau_stops_being_one() -> None:
    # A ramp of 2.5 noise sigmas per hour (AR(1) noise, 0.8) for ten hours, then a
    # plateau: past T_CRIT most of the time after its first hour; its slope fades as
    # (1 + d / hold) exp(-d / hold), below T_CRIT within four holds of the plateau.
    rng = np.random.default_rng(1)
    n, stop = 600, 300
    ramp = np.minimum(np.arange(n), stop) * 2.5 * np.sqrt(1 / (1 - 0.64)) / 30
    t = _statistics(ramp + _ar1(rng, n, 0.8))
    assert (t[60:stop] >= T_CRIT).mean() > 0.9, f"{(t[60:stop] >= T_CRIT).mean():.0%}"
    assert not (t[stop + 4 * 30 :] >= T_CRIT).any(), np.flatnonzero(t >= T_CRIT)[-5:]


def test_out_of_order_points_and_restarts() -> None:
    trend, last_ns = np.zeros((2, WIDTH)), np.zeros(2, np.int64)
    for i in range(10):
        trend_step(trend, last_ns, 1, float(i), i * STEP_NS, HOLD_S)
    late = trend_step(trend, last_ns, 1, 9.0, 5 * STEP_NS, HOLD_S)  # counts as the newest
    assert late > T_CRIT
    assert int(last_ns[1]) == 5 * STEP_NS
    assert not trend[0].any()  # other slots untouched


def test_held_bands_saved_before_trends_still_load() -> None:
    held = HeldBands()
    one = np.array([1.0])
    held.remember(np.array([3]), Calibrated(one, one - 1, one + 1, one), np.array([0]))
    saved = {k: v for k, v in held.state_dict().items() if k not in ("trend", "trend_ns")}
    restored = HeldBands()
    restored.load_state_dict(saved)
    assert restored.active
    assert not restored.state_dict()["trend"].any()
    np.testing.assert_array_equal(restored.state_dict()["expected"], saved["expected"])


def test_a_row_still_trending_away_does_not_close_its_anomaly() -> None:
    # A leak at its band's edge: a point back inside the band does not close an anomaly
    # whose value still trends away (``HeldBands.apply``'s second result).
    policy = AlertPolicy(min_duration=1, close_after=1)
    slots = np.array([0])
    for keep, closes in ((np.array([True]), False), (None, True)):
        h = Hysteresis()
        assert h.step(slots, np.array([2.0]), np.array([0]), policy).opened[0]
        moves = h.step(slots, np.array([0.5]), np.array([60 * 10**9]), policy, keep)
        assert bool(moves.closed[0]) is closes
        assert bool(moves.flag[0]) is not closes
