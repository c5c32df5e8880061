"""Compiled row loops of ``rarity`` (the per-series false-alarm budget).

Each kernel does for one round what the numpy version did with a dozen array calls, row by
row, with the same arithmetic in the same order: ``maximum``/``minimum`` are
``np.maximum``/``np.minimum`` (NaN wins), ``_interp`` is ``np.interp``'s algorithm.
``pow`` and ``log`` are the C library's, where numpy may use its own vectorised ones: the
two can differ in the last bit.

The constants live here, so the kernels read them as compiled-in constants instead of
arguments (each argument costs a kernel call time); ``rarity`` documents them.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.kernel_math import maximum, minimum

U = 2.5
SHAPE_LOW, SHAPE_HIGH = -0.25, 0.45
LEARN_CAP = 3.0
DEFAULT_SPACING_S = 60.0
DAY_S = 86400.0
# |z| thresholds on a grid of log probabilities, interpolated: NormalDist is exact but
# scalar, and scipy would load network modules into this pure package.
LOG_P = np.linspace(np.log(1e-15), np.log(1.0), 400)
Z_OF_LOG_P = np.array([NormalDist().inv_cdf(1.0 - float(np.exp(lp)) / 2.0) for lp in LOG_P])

_W, _C, _U, _S1, _S2 = range(5)
_FLOOR = 1e-300
_MIN_VAR = 1e-12
_SHAPE_EXP = 1e-6
_ODDS_BOUND = 1e300
_SCALE_BOUND = 1e150


@kernel
def _interp(x: float, xp: Any, fp: Any) -> Any:
    """``np.interp(x, xp, fp)`` for strictly increasing ``xp`` (numpy's formula and NaN rules)."""
    if np.isnan(x):
        return x
    last = len(xp) - 1
    if x >= xp[last]:
        return fp[last]
    if x < xp[0]:
        return fp[0]
    lo, hi = 0, last  # xp[lo] <= x < xp[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xp[mid] <= x:
            lo = mid
        else:
            hi = mid
    if x == xp[lo]:
        return fp[lo]
    slope = (fp[lo + 1] - fp[lo]) / (xp[lo + 1] - xp[lo])
    out = slope * (x - xp[lo]) + fp[lo]
    if np.isnan(out):
        out = slope * (x - xp[lo + 1]) + fp[lo + 1]
        if np.isnan(out) and fp[lo] == fp[lo + 1]:
            out = fp[lo]
    return out


@kernel
def gaussian_row(p: float) -> Any:
    """``gaussian_threshold`` of one probability."""
    return _interp(np.log(minimum(maximum(p, 1e-15), 1.0)), LOG_P, Z_OF_LOG_P)


@kernel
def gaussian_rows(p: Any) -> Any:
    """``gaussian_threshold`` of each probability."""
    out = np.empty(len(p))
    for i in range(len(p)):
        out[i] = gaussian_row(p[i])
    return out


@kernel
def _fit(state: Any) -> Any:
    """The rate, shape and scale of a slot's tail (``state``: its five sums)."""
    w = maximum(state[_W], _FLOOR)
    c = maximum(state[_C], _FLOOR)
    uncensored = maximum(state[_U], _FLOOR)
    s1 = maximum(state[_S1], _FLOOR)
    s2 = maximum(state[_S2], _FLOOR)
    rate = c / w
    m1 = s1 / uncensored
    var = maximum(s2 / uncensored - m1 * m1, _MIN_VAR)
    ratio = m1 * m1 / var
    shape = minimum(maximum(0.5 * (1.0 - ratio), SHAPE_LOW), SHAPE_HIGH)
    scale = 0.5 * m1 * (1.0 + ratio)
    return rate, shape, scale


@kernel
def _quantile(rate: float, shape: float, scale: float, p: float) -> Any:
    """``ScoreTail.threshold`` of one row, from its slot's ``_fit``."""
    odds = maximum(rate / p, 1.0)
    if rate > p:
        if np.abs(shape) > _SHAPE_EXP:
            tail = U + scale / shape * (odds ** shape - 1.0)
        else:
            tail = U + scale * np.log(odds)
    else:
        tail = U + 0.0
    return maximum(tail, gaussian_row(p))


@kernel
def _finite_quantile(rate: float, shape: float, scale: float, p: float) -> Any:
    """True where ``_quantile`` is surely finite, told without its ``pow`` and ``log``."""
    if np.isnan(p) or not (np.isfinite(rate) and np.isfinite(shape) and np.isfinite(scale)):
        return False
    if not rate > p:
        return True
    odds = maximum(rate / p, 1.0)
    # odds ** shape is within [1e-75, 1e135] (shape in [-0.25, 0.45]), log(odds) < 691.
    if np.abs(shape) > _SHAPE_EXP:
        return odds <= _ODDS_BOUND and np.abs(scale / shape) <= _SCALE_BOUND
    return odds <= _ODDS_BOUND and np.abs(scale) <= _SCALE_BOUND


@kernel
def _threshold_row(state: Any, p: float) -> Any:
    """``ScoreTail.threshold`` of one row (``state``: its slot's five sums)."""
    rate, shape, scale = _fit(state)
    return _quantile(rate, shape, scale, p)


@kernel
def threshold_rows(tail: Any, slots: Any, p: Any) -> Any:
    """``ScoreTail.threshold``: the score each row's slot exceeds with probability ``p``."""
    out = np.empty(len(slots))
    for i in range(len(slots)):
        out[i] = _threshold_row(tail[slots[i]], p[i])
    return out


@kernel
def _edge_row(state: Any, p_open: float, k: float, open_at: float, instant_at: float) -> Any:
    """``edge_for_budget`` of one row: the larger of the run's and the single point's edge."""
    rate, shape, scale = _fit(state)
    half = p_open / 2.0
    run = _quantile(rate, shape, scale, half ** (1.0 / k)) / open_at
    if instant_at == np.inf and _finite_quantile(rate, shape, scale, half):
        single = 0.0  # a finite, non-negative edge over an infinite factor (latency rules)
    else:
        single = _quantile(rate, shape, scale, half) / instant_at
    return maximum(run, single)


@kernel
def edge_rows(  # noqa: PLR0913 -- the tail, the rows and the policy
    tail: Any, slots: Any, p_open: Any, k: Any, open_at: float, instant_at: float,
) -> Any:
    """``edge_for_budget`` of each row."""
    out = np.empty(len(slots))
    for i in range(len(slots)):
        out[i] = _edge_row(tail[slots[i]], p_open[i], k[i], open_at, instant_at)
    return out


@kernel
def budget_edge_rows(  # noqa: PLR0913 -- the tail, the rows and the policy
    tail: Any, slots: Any, spacing_s: Any, budget_per_day: float, min_duration: float,
    min_duration_time_s: float, open_at: float, instant_at: float, band: float,
) -> Any:
    """``np.maximum(band, edge_for_budget)`` of each row at its spacing's budget and run."""
    out = np.empty(len(slots))
    for i in range(len(slots)):
        p = _point_probability(budget_per_day, spacing_s[i])
        k = _points_to_open(min_duration, min_duration_time_s, spacing_s[i])
        out[i] = maximum(band, _edge_row(tail[slots[i]], p, k, open_at, instant_at))
    return out


@kernel
def update_rows(tail: Any, slots: Any, scores: Any, edge: Any, keep: float) -> None:
    """``ScoreTail.update``: decay each finite row's slot and learn its (censored) score."""
    for i in range(len(slots)):
        score = scores[i]
        if not np.isfinite(score):
            continue
        state = tail[slots[i]]
        cap = LEARN_CAP * edge[i]
        excess = maximum(minimum(score, cap) - U, 0.0)
        hit = 1.0 if excess > 0 else 0.0
        below = 1.0 if score < cap else 0.0
        state[_W] = state[_W] * keep + 1.0
        state[_C] = state[_C] * keep + hit
        state[_U] = state[_U] * keep + hit * below
        state[_S1] = state[_S1] * keep + excess
        state[_S2] = state[_S2] * keep + excess * excess


@kernel
def _point_probability(budget_per_day: float, spacing_s: float) -> Any:
    spacing = spacing_s if spacing_s > 0 else DEFAULT_SPACING_S
    return minimum(maximum(budget_per_day * minimum(spacing, DAY_S) / DAY_S, 1e-12), 0.5)


@kernel
def point_probability_rows(budget_per_day: float, spacing_s: Any) -> Any:
    """``point_probability`` of each row."""
    out = np.empty(len(spacing_s))
    for i in range(len(spacing_s)):
        out[i] = _point_probability(budget_per_day, spacing_s[i])
    return out


@kernel
def _points_to_open(min_duration: float, min_duration_time_s: float, spacing_s: float) -> Any:
    k = min_duration
    if min_duration_time_s > 0:
        spacing = spacing_s if spacing_s > 0 else DEFAULT_SPACING_S
        k = minimum(k, maximum(1.0, np.ceil(min_duration_time_s / spacing)))
    return k


@kernel
def points_to_open_rows(min_duration: float, min_duration_time_s: float, spacing_s: Any) -> Any:
    """``points_to_open`` of each row."""
    out = np.empty(len(spacing_s))
    for i in range(len(spacing_s)):
        out[i] = _points_to_open(min_duration, min_duration_time_s, spacing_s[i])
    return out
