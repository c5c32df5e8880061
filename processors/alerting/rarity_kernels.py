"""Compiled row loops of ``rarity`` (the per-series false-alarm budget).

Each kernel does for one round what the numpy version did with a dozen array calls, row by
row, with the same arithmetic in the same order: ``nan_max``/``nan_min`` are
``np.maximum``/``np.minimum`` (NaN wins), ``_interp`` is ``np.interp``'s algorithm.
``pow`` and ``log`` are the C library's, where numpy may use its own vectorised ones: the
two can differ in the last bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_anomaly.processors.alerting.calibration_kernels import nan_max, nan_min
from otel_anomaly.processors.compiled import kernel

_W, _C, _U, _S1, _S2 = range(5)
_FLOOR = 1e-300
_MIN_VAR = 1e-12
_SHAPE_EXP = 1e-6


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
def gaussian_row(p: float, log_p: Any, z_of_log_p: Any) -> Any:
    """``gaussian_threshold`` of one probability (the grid passed in)."""
    return _interp(np.log(nan_min(nan_max(p, 1e-15), 1.0)), log_p, z_of_log_p)


@kernel
def gaussian_rows(p: Any, log_p: Any, z_of_log_p: Any) -> Any:
    """``gaussian_threshold`` of each probability."""
    out = np.empty(len(p))
    for i in range(len(p)):
        out[i] = gaussian_row(p[i], log_p, z_of_log_p)
    return out


@kernel
def _threshold_row(  # noqa: PLR0913 -- a slot's state, the probability and the prior's constants
    state: Any, p: float, u: float, low: float, high: float, log_p: Any, z_of_log_p: Any,
) -> Any:
    """``ScoreTail.threshold`` of one row (``state``: its slot's five sums)."""
    w = nan_max(state[_W], _FLOOR)
    c = nan_max(state[_C], _FLOOR)
    uncensored = nan_max(state[_U], _FLOOR)
    s1 = nan_max(state[_S1], _FLOOR)
    s2 = nan_max(state[_S2], _FLOOR)
    rate = c / w
    m1 = s1 / uncensored
    var = nan_max(s2 / uncensored - m1 * m1, _MIN_VAR)
    ratio = m1 * m1 / var
    shape = nan_min(nan_max(0.5 * (1.0 - ratio), low), high)
    scale = 0.5 * m1 * (1.0 + ratio)
    odds = nan_max(rate / p, 1.0)
    if rate > p:
        if np.abs(shape) > _SHAPE_EXP:
            tail = u + scale / shape * (odds ** shape - 1.0)
        else:
            tail = u + scale * np.log(odds)
    else:
        tail = u + 0.0
    return nan_max(tail, gaussian_row(p, log_p, z_of_log_p))


@kernel
def threshold_rows(  # noqa: PLR0913 -- the tail, the rows and the constants
    tail: Any, slots: Any, p: Any, u: float, low: float, high: float, log_p: Any,
    z_of_log_p: Any,
) -> Any:
    """``ScoreTail.threshold``: the score each row's slot exceeds with probability ``p``."""
    out = np.empty(len(slots))
    for i in range(len(slots)):
        out[i] = _threshold_row(tail[slots[i]], p[i], u, low, high, log_p, z_of_log_p)
    return out


@kernel
def edge_rows(  # noqa: PLR0913 -- the tail, the rows, the policy and the constants
    tail: Any, slots: Any, p_open: Any, k: Any, open_at: float, instant_at: float, u: float,
    low: float, high: float, log_p: Any, z_of_log_p: Any,
) -> Any:
    """``edge_for_budget``: the larger of the run's and the single point's edge, per row."""
    out = np.empty(len(slots))
    for i in range(len(slots)):
        state = tail[slots[i]]
        half = p_open[i] / 2.0
        run = _threshold_row(state, half ** (1.0 / k[i]), u, low, high, log_p, z_of_log_p)
        single = _threshold_row(state, half, u, low, high, log_p, z_of_log_p)
        out[i] = nan_max(run / open_at, single / instant_at)
    return out


@kernel
def update_rows(  # noqa: PLR0913 -- the tail, the rows and the constants
    tail: Any, slots: Any, scores: Any, edge: Any, keep: float, cap_edges: float, u: float,
) -> None:
    """``ScoreTail.update``: decay each finite row's slot and learn its (censored) score."""
    for i in range(len(slots)):
        score = scores[i]
        if not np.isfinite(score):
            continue
        state = tail[slots[i]]
        cap = cap_edges * edge[i]
        excess = nan_max(nan_min(score, cap) - u, 0.0)
        hit = 1.0 if excess > 0 else 0.0
        below = 1.0 if score < cap else 0.0
        state[_W] = state[_W] * keep + 1.0
        state[_C] = state[_C] * keep + hit
        state[_U] = state[_U] * keep + hit * below
        state[_S1] = state[_S1] * keep + excess
        state[_S2] = state[_S2] * keep + excess * excess


@kernel
def point_probability_rows(budget_per_day: float, spacing_s: Any, default_s: float,
                           day_s: float) -> Any:
    """``point_probability`` of each row."""
    out = np.empty(len(spacing_s))
    for i in range(len(spacing_s)):
        spacing = spacing_s[i] if spacing_s[i] > 0 else default_s
        out[i] = nan_min(nan_max(budget_per_day * nan_min(spacing, day_s) / day_s, 1e-12), 0.5)
    return out


@kernel
def points_to_open_rows(min_duration: float, min_duration_time_s: float, spacing_s: Any,
                        default_s: float) -> Any:
    """``points_to_open`` of each row."""
    out = np.empty(len(spacing_s))
    for i in range(len(spacing_s)):
        k = min_duration
        if min_duration_time_s > 0:
            spacing = spacing_s[i] if spacing_s[i] > 0 else default_s
            k = nan_min(k, nan_max(1.0, np.ceil(min_duration_time_s / spacing)))
        out[i] = k
    return out
