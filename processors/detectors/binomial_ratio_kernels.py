"""Compiled per-row steps of ``BinomialRatio``: its model of a row, score, band and learning.

Each kernel does for one round (slots unique) what the numpy version did with dozens of
array calls, row by row, in the same order of operations (``maximum``/``minimum``/``clip``
with numpy's NaN and tie rules, ``fmax``/``fmin`` where NaN is ignored), so scores, bands
and state are the same. ``state`` is the detector's ``(slots, 10)`` float64 column.
Constants derived from the parameters are computed once in Python and passed in, as the
numpy code computed them (Python floats).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.detectors.binomial_tail import edge, sigmas
from otel_anomaly.processors.kernel_math import clip, fmax, fmin, maximum, minimum

# The state columns, as ``binomial_ratio`` lays them out.
(_K, _N, _EXCESS, _EXCESS_SQ, _SPREAD, _SIZE, _SIZED, _SEEN, _RECENT_K,
 _RECENT_N) = range(10)


@kernel
def _model(  # noqa: PLR0913 -- a row's state and the model's constants
    s: Any, count: float, value: float, prior_k: float, prior_calls: float,
    prior_var: float, max_rho: float, default_count: float,
) -> Any:
    """``BinomialRatio._model`` of one row: rate, rho, n, x (``max_rho`` < 0: no dispersion)."""
    rate = (s[_K] + prior_k) / (s[_N] + prior_calls)
    rho = 0.0
    if max_rho >= 0.0:
        # Only the excess beyond two of its standard errors counts: with few calls a
        # window, a single unlucky one would otherwise read as a wandering rate (and dull
        # the pooled evidence of a slow burst).
        evident = s[_EXCESS] - 2.0 * math.sqrt(s[_EXCESS_SQ])
        rho = clip(evident / (s[_SPREAD] + prior_var), 0.0, max_rho)
    rho = rho + 1.0 / (s[_N] + prior_calls + 1.0)
    usual = s[_SIZE] / maximum(s[_SIZED], 1e-300) if s[_SIZED] > 0 else default_count
    n = maximum(count if math.isfinite(count) and count > 0 else usual, 1.0)
    return rate, rho, n, clip(value, 0.0, 1.0)


@kernel
def _warm(s: Any, warmup: int, warmup_calls: float) -> Any:
    """Warmed up: ``warmup`` points and ``warmup_calls`` calls learned."""
    return s[_SEEN] >= warmup and s[_N] >= warmup_calls


@kernel
def score_rows(  # noqa: PLR0913 -- a round's rows, the state and the parameters
    state: Any, slots: Any, values: Any, counts: Any, prior_k: float, prior_calls: float,
    prior_var: float, max_rho: float, default_count: float, warmup: int,
    warmup_calls: float, recent: float, recent_margin: float,
) -> Any:
    """``BinomialRatio.score`` of each row."""
    out = np.empty(len(slots))
    for i in range(len(slots)):
        s = state[slots[i]]
        rate, rho, n, x = _model(s, counts[i], values[i], prior_k, prior_calls, prior_var,
                                 max_rho, default_count)
        z = sigmas(x, n / (1.0 + (n - 1.0) * rho), rate)
        if recent > 0:
            calls = n + recent * s[_RECENT_N]
            pooled = clip((x * n + recent * s[_RECENT_K]) / calls, 0.0, 1.0)
            z_recent = sigmas(pooled, calls / (1.0 + (calls - 1.0) * rho), rate)
            z = fmax(z, z_recent - recent_margin)
        z = maximum(z, 0.0) if _warm(s, warmup, warmup_calls) else 0.0
        out[i] = z if math.isfinite(values[i]) else np.nan
    return out


@kernel
def predict_rows(  # noqa: PLR0913 -- a round's rows, the state and the parameters
    state: Any, slots: Any, values: Any, counts: Any, width: Any, prior_k: float,
    prior_calls: float, prior_var: float, max_rho: float, default_count: float,
    warmup: int, warmup_calls: float, recent: float, recent_margin: float, grid: Any,
) -> Any:
    """``BinomialRatio.predict`` of each row: the base rate and the band's edges."""
    rows = len(slots)
    expected, lower, upper = np.empty(rows), np.empty(rows), np.empty(rows)
    for i in range(rows):
        s = state[slots[i]]
        rate, rho, n, _ = _model(s, counts[i], values[i], prior_k, prior_calls, prior_var,
                                 max_rho, default_count)
        effective = n / (1.0 + (n - 1.0) * rho)
        low = edge(effective, rate, width[i], False, grid)
        up = edge(effective, rate, width[i], True, grid)
        if recent > 0:
            # The ratio this window needs for the pooled recent windows to reach the band.
            recent_k = recent * s[_RECENT_K]
            calls = n + recent * s[_RECENT_N]
            pooled = calls / (1.0 + (calls - 1.0) * rho)
            wide = width[i] + recent_margin
            up_x = (edge(pooled, rate, wide, True, grid) * calls - recent_k) / n
            low_x = (edge(pooled, rate, wide, False, grid) * calls - recent_k) / n
            up = fmin(up, maximum(up_x, rate))
            low = fmax(low, minimum(low_x, rate))
        expected[i] = rate
        warm = _warm(s, warmup, warmup_calls)
        lower[i] = low if warm else np.nan
        upper[i] = up if warm else np.nan
    return expected, lower, upper


@kernel
def learn_rows(  # noqa: PLR0913 -- a round's rows, the state and the parameters
    state: Any, slots: Any, values: Any, counts: Any, prior_k: float, prior_calls: float,
    prior_var: float, max_rho: float, default_count: float, learn_cap: float,
    recent: float, decay: float, decay_sq: float,
) -> None:
    """``BinomialRatio._learn_unique``: learn each row into ``state`` (slots distinct)."""
    for i in range(len(slots)):
        s = state[slots[i]]
        rate, rho, n, x = _model(s, counts[i], values[i], prior_k, prior_calls, prior_var,
                                 max_rho, default_count)
        sized = math.isfinite(counts[i]) and counts[i] > 0
        expected = n * rate
        # One row teaches at most ``learn_cap`` sigmas (and one error) above its expected
        # count: an error burst is the anomaly, not the new base rate.
        sd = math.sqrt(expected * (1.0 - rate) * (1.0 + (n - 1.0) * rho))
        k = minimum(x * n, expected + learn_cap * sd + 1.0)
        excess = (k - expected) * (k - expected) - expected * (1.0 - rate)
        recent_k, recent_n = recent * s[_RECENT_K], recent * s[_RECENT_N]
        s[_K] = s[_K] * decay + k
        s[_N] = s[_N] * decay + n
        s[_EXCESS] = s[_EXCESS] * decay + excess
        # The squared weights of a decayed sum: the variance of ``_EXCESS`` itself.
        s[_EXCESS_SQ] = s[_EXCESS_SQ] * decay_sq + excess * excess
        s[_SPREAD] = s[_SPREAD] * decay + n * (n - 1.0) * rate * (1.0 - rate)
        if sized:  # rows without a known sample size leave the usual size as it was
            s[_SIZE] = s[_SIZE] * decay + n
            s[_SIZED] = s[_SIZED] * decay + 1.0
        s[_SEEN] = s[_SEEN] + 1.0
        # The recent evidence keeps the errors as they were (it is what detects a burst).
        s[_RECENT_K] = recent_k + x * n
        s[_RECENT_N] = recent_n + n
