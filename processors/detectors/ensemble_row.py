"""The default ensemble's views, band and lessons for one row, in scalars.

``round_views`` and ``round_lessons`` take a round's rows as arrays. On a round of one row
(``row_scan``: a backtest of one series, rows of one series in sequence) making those
arrays and passing them between kernels cost more than the arithmetic: 65 small arrays
and some 8 us a row, against about 0.5 us a row in rounds of a thousand. These kernels do
the same for one row of one slot without making an array, in the same order, through the
row kernels the round kernels' loops call (``compiled.row_kernel``), so their results are
the same bit for bit (``tests/processors/test_row_scan.py`` compares ``row_scan`` with
``_step``). Reading and writing the columns around those calls is each kernel's own:
``_learn_profile`` repeats that part of ``seasonal_kernels.learn``'s loop, ``_learn_scale``
of ``tail_quantile._learn_scaled``'s. Together about 1.8 us a row instead of 8.5.

``views`` is scratch the caller makes once: a ``(VIEW_ROWS, 3)`` array whose rows are each
member's expected value, upper and lower edge (a band one spread unit wide), spread floor,
tail multiplier and persistence narrowing above and below; ``row_lessons`` uses three more
rows for what each member learns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from otel_anomaly.processors.alerting.tail_quantile import (
    _learn_row,
    capped_score,
    growth_of,
    spread_of,
    typical_after,
)
from otel_anomaly.processors.compiled import row_kernel
from otel_anomaly.processors.detectors import ensemble_kernels as ek
from otel_anomaly.processors.detectors import ewma_zscore as ewma
from otel_anomaly.processors.detectors import level_follow, persistence, seasonal_kernels
from otel_anomaly.processors.detectors.seasonal_codes import decode_dev, store
from otel_anomaly.processors.detectors.seasonal_counts import advanced
from otel_anomaly.processors.kernel_math import maximum, minimum

__all__ = ["VIEW_ROWS", "row_band", "row_last_cycle", "row_lessons", "row_views"]

VIEW_ROWS = 10
MEMBERS = 3  # the default members: a level, a daily and a weekly profile


@row_kernel
def _profile_row(s: int, t: int, profile: tuple[Any, ...]) -> Any:
    """``_profile_band`` of one row: the unit band and the gathered phase."""
    (period_ns, bucket_ns, buckets, spread_mix, warm_ns, tolerance, n, first, gdev, centre,
     scale, mean_code, dev_code, count, snap_b, snap_cycle, snap_mean, snap_dev) = profile
    b = seasonal_kernels.bucket_of(t, period_ns, bucket_ns, buckets)
    g, mid, unit = float(gdev[s]), float(centre[s]), float(scale[s])
    c, now_mean, now_sigma, ready, mean, sigma = seasonal_kernels.phase_of(
        int(count[s, b]), int(mean_code[s, b]), int(dev_code[s, b]), mid, unit, g, spread_mix,
        n[s] > 0 and t - first[s] >= warm_ns,
        int(snap_b[s]) == b and int(snap_cycle[s]) == int(t // period_ns), float(snap_mean[s]),
        float(snap_dev[s]))
    lo_k, hi_k = np.inf, -np.inf
    if tolerance > 0:
        for k in range(2 * tolerance + 1):
            c_k = (b + k - tolerance) % buckets
            m_k, sigma_k = seasonal_kernels.neighbour(
                int(mean_code[s, c_k]), int(dev_code[s, c_k]), int(count[s, c_k]), g, mid, unit,
                spread_mix)
            lo_k, hi_k = seasonal_kernels.widened(lo_k, hi_k, m_k, sigma_k, 1.0)
    e, lo, up = seasonal_kernels.band_row(c, mean, sigma, ready, 1.0, lo_k, hi_k,
                                          tolerance > 0)
    return e, lo, up, (b, c, now_mean, now_sigma, ready)


@row_kernel
def row_views(  # noqa: PLR0913 -- the row, the scratch, and ``RoundArgs.views``
    s: int, t: int, views: Any, level: tuple[Any, ...], daily: tuple[Any, ...],
    weekly: tuple[Any, ...], scales: tuple[Any, ...], narrowing: tuple[Any, ...],
    excursions: tuple[Any, ...], follow: tuple[Any, ...],
) -> Any:
    """``round_views`` of slot ``s`` at time ``t``, the members' views written into ``views``.

    Returns the recent peak, the refractory stretch, the two profiles' gathered phases and
    the level's step along the weekly profile (``level_follow``: step, value, spread, variance).
    """
    n_col, mean_col, dev_col, warmup = level
    sigma = ewma.sigma_of(mean_col[s], dev_col[s])
    views[0, 0], views[2, 0], views[1, 0] = ewma.band_of(n_col[s], mean_col[s], sigma, 1.0,
                                                         warmup)
    views[0, 1], views[2, 1], views[1, 1], daily_phase = _profile_row(s, t, daily)
    views[0, 2], views[2, 2], views[1, 2], weekly_phase = _profile_row(s, t, weekly)
    follows, follow_ref, follow_var = follow
    stepped = (0.0, math.nan, math.nan, 0.0)
    if follows:
        (views[0, 0], views[1, 0], views[2, 0], step, keep, keep_spread,
         extra) = level_follow.follow_row(views[0, 0], views[1, 0], views[2, 0], views[0, 2],
                                          views[1, 2], follow_ref[s, 0], follow_ref[s, 1],
                                          float(follow_var[s]))
        stepped = (step, keep, keep_spread, extra)
    typical0, cached0, gauss0, typical1, cached1, gauss1, typical2, cached2, gauss2 = scales
    views[3, 0], views[4, 0] = spread_of(float(typical0[s]), float(cached0[s]), gauss0)
    views[3, 1], views[4, 1] = spread_of(float(typical1[s]), float(cached1[s]), gauss1)
    views[3, 2], views[4, 2] = spread_of(float(typical2[s]), float(cached2[s]), gauss2)
    d, v, p_level, shrink, prior, alarm = narrowing
    for c in range(MEMBERS):
        views[5, c], views[6, c] = persistence.narrowing(float(d[s, c]), float(v[s, c]),
                                                         p_level, shrink, prior, alarm)
    peak, age, peak_ns, step_ns, hold, decay, r_level, max_stretch, grace = excursions
    recent = ek.recent_of(float(peak[s]), age[s], peak_ns[s], t, step_ns, hold, decay)
    stretch = ek.widening_of(recent, age[s], peak_ns[s], t, step_ns, r_level, max_stretch,
                             grace)
    return recent, stretch, daily_phase, weekly_phase, stepped


@row_kernel
def row_last_cycle(s: int, t: int, views: Any, weekly: tuple[Any, ...]) -> float:
    """``Ensemble._last_cycle`` of one row.

    The weekly profile's expected value in ``views`` (``row_views``), NaN while slot ``s``
    is younger than a cycle at ``t``.
    """
    period_ns, n, first = weekly[0], weekly[6], weekly[7]
    if n[s] > 0 and t - first[s] >= period_ns:
        return float(views[0, MEMBERS - 1])
    return np.nan


@row_kernel
def row_band(views: Any, width: float, combine_max: bool, centre: float,
             ) -> tuple[float, float, float, float]:
    """``ensemble_kernels.band`` of one row: expected value, lower, upper edge, baseline."""
    so_far = ek.BAND_START
    for m in range(MEMBERS):
        so_far = ek.band_step(so_far, views[0, m], views[1, m], views[2, m], views[3, m],
                              views[4, m], views[5, m], views[6, m], width, combine_max)
    return ek.band_end(so_far, centre)


@row_kernel
def _learn_profile(s: int, t: int, x: float, phase: Any, profile: tuple[Any, ...]) -> None:
    """``_profile_learn`` of one row: ``seasonal_kernels.learn``'s loop body."""
    (period_ns, bucket_ns, alpha, n, first, last, gdev, centre, scale, mean_code, dev_code,
     count, snap_b, snap_cycle, snap_mean, snap_dev) = profile
    b, c, mean, sigma, ready = phase
    cycle = int(t // period_ns)
    if int(snap_b[s]) != b or int(snap_cycle[s]) != cycle:
        snap_b[s], snap_cycle[s] = b, cycle
        snap_mean[s] = minimum(maximum(mean, -seasonal_kernels.F32_MAX), seasonal_kernels.F32_MAX)
        snap_dev[s] = decode_dev(int(dev_code[s, b]), float(scale[s]))
    fresh = n[s] == 0
    if fresh:
        first[s] = t
    points, gdev[s], new_mean, new_dev = seasonal_kernels.learned(
        x, c, mean, sigma, ready, alpha, 0 if fresh else t - last[s], bucket_ns, n[s],
        float(gdev[s]), decode_dev(int(dev_code[s, b]), float(scale[s])))
    new_cycle = not fresh and t // period_ns != last[s] // period_ns
    store(s, b, new_mean, new_dev, t, new_cycle, centre, scale, mean_code, dev_code, count)
    count[s, b] = advanced(int(count[s, b]), t)
    last[s] = t
    n[s] = points


@row_kernel
def _learn_scale(s: int, z: float, resid: float, scale: tuple[Any, ...], memory: float) -> None:
    """``ensemble_round.scale_update`` of one ready member's row, remembering ``memory``."""
    hist, low, inc, n, cached, typical, _growth, q, gauss, _window = scale
    score = capped_score(z, float(cached[s]), gauss)
    if math.isfinite(score):
        _learn_row(hist, low, inc, n, cached, s, score, growth_of(memory), q)
    typical[s] = typical_after(float(typical[s]), resid, int(n[s]), memory)


@row_kernel
def row_lessons(  # noqa: PLR0913 -- the row, its views, and ``RoundArgs.lessons``
    s: int, t: int, x: float, views: Any, recent: float, daily_phase: Any, weekly_phase: Any,
    stepped: Any, combine_max: bool, level: tuple[Any, ...], daily: tuple[Any, ...],
    weekly: tuple[Any, ...], scales: tuple[Any, ...], narrowing: tuple[Any, ...],
    excursions: tuple[Any, ...], follow: tuple[Any, ...],
) -> None:
    """``round_lessons`` of slot ``s``'s finite value ``x`` at time ``t``, from ``row_views``.

    ``stepped``: what ``row_views`` returned of the level's step.
    """
    combined = 0.0
    unit, signed, resid = views[7], views[8], views[9]  # scratch: no array made per row
    for m in range(MEMBERS):
        e, upper = views[0, m], views[1, m]
        scaled = ek.member_z_cell(x, e, upper, views[2, m], views[3, m], views[4, m], 1.0, 1.0)
        combined = ek.combine_step(combined, scaled, upper, combine_max)
        unit[m] = ek.member_z_cell(x, e, upper, views[2, m], views[3, m], 1.0, 1.0, 1.0)
        signed[m] = scaled if x >= e else -scaled
        resid[m] = abs(x - e)
    peak, age, peak_ns, max_age = excursions
    peak[s], age[s], peak_ns[s] = ek.peak_after(float(peak[s]), age[s], peak_ns[s], combined,
                                                recent, t, max_age)
    # The usual sizes remember a day of event time at least, the tails a week: the gap is
    # the one since the slot's previous row, as the daily profile knows it before it
    # learns this one.
    gap = float(t - daily[5][s]) if daily[3][s] > 0 else 0.0
    d, v, alpha, prior, window = narrowing
    s0, s1, s2 = scales
    usual, memory = ek.memories(window, s0[9], gap)
    for m in range(MEMBERS):
        if views[1, m] == views[1, m]:  # noqa: PLR0124 -- ready
            d[s, m], v[s, m] = persistence.learned(float(d[s, m]), float(v[s, m]), signed[m],
                                                   alpha, prior, usual)
    if views[1, 0] == views[1, 0]:  # noqa: PLR0124
        _learn_scale(s, unit[0], resid[0], s0, memory)
    n_col, mean_col, dev_col, level_alpha, warmup = level
    follows, follow_ref, follow_var = follow
    if follows:
        step, keep, keep_spread, extra = stepped
        mean_col[s], follow_var[s] = level_follow.followed_row(mean_col[s], step, extra,
                                                               level_alpha)
        follow_ref[s, 0], follow_ref[s, 1] = keep, keep_spread
    n_col[s], mean_col[s], dev_col[s] = ewma.learned(n_col[s], mean_col[s], dev_col[s], x,
                                                     level_alpha, warmup)
    if views[1, 1] == views[1, 1]:  # noqa: PLR0124
        _learn_scale(s, unit[1], resid[1], s1, memory)
    _learn_profile(s, t, x, daily_phase, daily)
    if views[1, 2] == views[1, 2]:  # noqa: PLR0124
        _learn_scale(s, unit[2], resid[2], s2, memory)
    _learn_profile(s, t, x, weekly_phase, weekly)
