"""Rarity and log-modulus kernels against their former numpy bodies.

The numpy versions below are the bodies the kernels replaced, kept as the reference. The
kernels call the C library's ``pow``, ``log``, ``log1p`` and ``expm1`` where numpy may use
its own SIMD code, so the two may differ in the last bit; a tail whose fitted shape is
near 0 amplifies that (``odds ** shape - 1`` cancels), hence the tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from otel_anomaly.processors.alerting import rarity
from otel_anomaly.processors.alerting.rarity import (
    ScoreTail,
    edge_for_budget,
    gaussian_threshold,
    point_probability,
    points_to_open,
)
from otel_anomaly.processors.alerting.rarity_kernels import LOG_P, Z_OF_LOG_P
from otel_anomaly.processors.detectors.log_modulus import inverse_log_modulus, log_modulus

RTOL = 1e-11


def numpy_gaussian(p: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.interp(np.log(np.clip(p, 1e-15, 1.0)), LOG_P, Z_OF_LOG_P)
    return out


def numpy_threshold(tail: NDArray[np.float64], p: NDArray[np.float64]) -> NDArray[np.float64]:
    w, c, uncensored, s1, s2 = np.maximum(tail.T, 1e-300)
    rate = c / w
    m1 = s1 / uncensored
    var = np.maximum(s2 / uncensored - m1 * m1, 1e-12)
    ratio = m1 * m1 / var
    shape = np.clip(0.5 * (1.0 - ratio), *rarity.SHAPES)
    scale = 0.5 * m1 * (1.0 + ratio)
    odds = np.maximum(rate / p, 1.0)
    gpd = np.where(np.abs(shape) > 1e-6, scale / shape * (odds ** shape - 1.0),
                   scale * np.log(odds))
    out: NDArray[np.float64] = np.maximum(rarity.U + np.where(rate > p, gpd, 0.0),
                                          numpy_gaussian(p))
    return out


def numpy_update(tail: NDArray[np.float64], scores: NDArray[np.float64],
                 edge: NDArray[np.float64], keep: float) -> None:
    ok = np.isfinite(scores)
    cap = rarity.LEARN_CAP * edge[ok]
    excess = np.maximum(np.minimum(scores[ok], cap) - rarity.U, 0.0)
    hit = (excess > 0).astype(np.float64)
    state = tail[ok] * keep
    state[:, 0] += 1.0
    state[:, 1] += hit
    state[:, 2] += hit * (scores[ok] < cap)
    state[:, 3] += excess
    state[:, 4] += excess * excess
    tail[ok] = state


def close(a: Any, b: Any) -> None:
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=0, equal_nan=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_rarity_kernels_match_their_numpy_bodies() -> None:
    rng = np.random.default_rng(3)
    n = 300
    slots = rng.permutation(n)
    tail = ScoreTail(window=200)
    reference = np.tile(np.array(rarity._PRIOR), (n, 1))
    scale = 10 ** rng.uniform(-1, 2, n)
    for _ in range(200):
        p = 10 ** rng.uniform(-9, -1, n)
        edge = tail.threshold(slots, p)
        close(edge, numpy_threshold(reference[slots], p))
        scores = np.abs(rng.standard_t(1.5, n)) * scale
        scores[rng.random(n) < 0.02] = rng.choice([np.nan, np.inf, -np.inf])
        tail.update(slots, scores, edge)
        state = reference[slots]
        numpy_update(state, scores, edge, tail._keep)
        reference[slots] = state
        np.testing.assert_array_equal(tail.state_dict()["tail"][:n], reference)
    spacing = np.concatenate([rng.uniform(-10, 5000, n - 3), [0.0, np.nan, np.inf]])
    for budget, k_min, k_time, open_at, instant_at, band in (
            (0.1, 3, 900.0, 1.0, np.inf, 6.0), (2.0, 2, 0.0, 1.2, 1.5, 3.5)):
        p = np.clip(budget * np.minimum(np.where(spacing > 0, spacing, 60.0), 86400.0)
                    / 86400.0, 1e-12, 0.5)
        np.testing.assert_array_equal(point_probability(budget, spacing), p)
        k = np.full(n, float(k_min))
        if k_time > 0:
            k = np.minimum(k, np.maximum(1.0, np.ceil(
                k_time / np.where(spacing > 0, spacing, 60.0))))
        np.testing.assert_array_equal(points_to_open(k_min, k_time, spacing), k)
        half = p / 2.0
        expected = np.maximum(numpy_threshold(reference[slots], half ** (1.0 / k)) / open_at,
                              numpy_threshold(reference[slots], half) / instant_at)
        close(edge_for_budget(tail, slots, p, k, open_at, instant_at), expected)
        close(tail.budget_edge(slots, spacing, budget, k_min, k_time, open_at, instant_at,
                               band), np.maximum(band, expected))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_absurd_tails_give_the_numpy_edges() -> None:
    values = [np.inf, np.nan, 1e308, 1e200, 1e155, 1.0, 1e-300, 0.0, -1.0]
    rng = np.random.default_rng(4)
    state = rng.choice(values, (500, 5))
    tail = ScoreTail()
    slots = np.arange(500)
    tail.threshold(slots, np.full(500, 0.1))
    tail._slots.tail[:500] = state
    p = np.full(500, 1e-4)
    k = rng.integers(1, 4, 500).astype(np.float64)
    for instant_at in (np.inf, 2.0):
        expected = np.maximum(numpy_threshold(state, (p / 2) ** (1 / k)),
                              numpy_threshold(state, p / 2) / instant_at)
        close(edge_for_budget(tail, slots, p, k, 1.0, instant_at), expected)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("rows", [1, 7, 64, 65, 1000])
def test_log_modulus_kernels_match_numpy(rows: int) -> None:
    rng = np.random.default_rng(rows)
    x = rng.standard_t(1, rows) * 10 ** rng.uniform(-5, 300, rows)
    x[: min(rows, 5)] = [0.0, -0.0, np.nan, np.inf, -np.inf][: min(rows, 5)]
    np.testing.assert_array_equal(gaussian_threshold(np.array([1.0, 2.0, np.nan])),
                                  numpy_gaussian(np.array([1.0, 2.0, np.nan])))
    for offset in (1.0, 0.001):
        close(log_modulus(x, offset), np.sign(x) * np.log1p(np.abs(x) / offset))
        y = x / 1e298
        close(inverse_log_modulus(y, offset), np.sign(y) * offset * np.expm1(np.abs(y)))
