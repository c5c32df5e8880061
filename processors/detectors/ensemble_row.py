"""The default ensemble's views, band and lessons for one row, in scalars.

``round_views`` and ``round_lessons`` take a round's rows as arrays. On a round of one row
(``row_scan``: a backtest of one series, rows of one series in sequence) making those
arrays and passing them between kernels cost more than the arithmetic: 65 small arrays
and some 8 us a row, against about 0.5 us a row in rounds of a thousand. These kernels do
the same for one row of one slot without making an array, in the same order, through the
members' row kernels (``compiled.row_kernel``: each repeats one row of a member's loop in
scalars), so their results are the same bit for bit (``tests/processors/test_row_scan.py``
compares ``row_scan`` with ``_step``). Together about 1.8 us a row instead of 8.5.

``views`` is scratch the caller makes once: a ``(VIEW_ROWS, 3)`` array whose rows are each
member's expected value, upper and lower edge (a band one spread unit wide), spread floor,
tail multiplier and persistence narrowing above and below; ``row_lessons`` uses three more
rows for what each member learns.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_anomaly.processors.alerting.tail_quantile import learn_scaled_row, spread_row
from otel_anomaly.processors.compiled import row_kernel
from otel_anomaly.processors.detectors import ensemble_kernels as ek
from otel_anomaly.processors.detectors import ewma_zscore as ewma
from otel_anomaly.processors.detectors import persistence, seasonal_kernels

__all__ = ["VIEW_ROWS", "row_band", "row_lessons", "row_views"]

VIEW_ROWS = 10
MEMBERS = 3  # the default members: a level, a daily and a weekly profile


@row_kernel
def _profile_row(s: int, t: int, profile: tuple[Any, ...]) -> Any:
    """``_profile_band`` of one row: the unit band and the gathered phase."""
    (period_ns, bucket_ns, buckets, spread_mix, warm_ns, tolerance, n, first, gdev, centre,
     scale, mean_code, dev_code, count, snap_b, snap_cycle, snap_mean, snap_dev) = profile
    b = seasonal_kernels.bucket_of(t, period_ns, bucket_ns, buckets)
    c, now_mean, now_sigma, ready, mean, sigma = seasonal_kernels.gather_row(
        s, t, b, period_ns, spread_mix, warm_ns, n, first, gdev, centre, scale, mean_code,
        dev_code, count, snap_b, snap_cycle, snap_mean, snap_dev)
    lo_k, hi_k = np.inf, -np.inf
    if tolerance > 0:
        g, mid, unit = float(gdev[s]), float(centre[s]), float(scale[s])
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
    excursions: tuple[Any, ...],
) -> Any:
    """``round_views`` of slot ``s`` at time ``t``, the members' views written into ``views``.

    Returns the recent peak, the refractory stretch and the two profiles' gathered phases.
    """
    n_col, mean_col, dev_col, warmup = level
    sigma = ewma.sigma_of(mean_col[s], dev_col[s])
    views[0, 0], views[2, 0], views[1, 0] = ewma.band_of(n_col[s], mean_col[s], sigma, 1.0,
                                                         warmup)
    views[0, 1], views[2, 1], views[1, 1], daily_phase = _profile_row(s, t, daily)
    views[0, 2], views[2, 2], views[1, 2], weekly_phase = _profile_row(s, t, weekly)
    typical0, cached0, gauss0, typical1, cached1, gauss1, typical2, cached2, gauss2 = scales
    views[3, 0], views[4, 0] = spread_row(typical0, cached0, s, gauss0)
    views[3, 1], views[4, 1] = spread_row(typical1, cached1, s, gauss1)
    views[3, 2], views[4, 2] = spread_row(typical2, cached2, s, gauss2)
    d, v, p_level, shrink, prior, alarm = narrowing
    for c in range(MEMBERS):
        views[5, c], views[6, c] = persistence.factor_cell(d, v, s, c, p_level, shrink, prior,
                                                           alarm)
    peak, age, peak_ns, step_ns, hold, decay, r_level, max_stretch, grace = excursions
    recent = ek.recent_row(peak, age, peak_ns, s, t, step_ns, hold, decay)
    stretch = ek.widening_row(recent, age, peak_ns, s, t, step_ns, r_level, max_stretch,
                              grace)
    return recent, stretch, daily_phase, weekly_phase


@row_kernel
def row_band(views: Any, width: float, combine_max: bool, centre: float,
             ) -> tuple[float, float, float, float]:
    """``ensemble_kernels.band`` of one row: expected value, lower, upper edge, baseline."""
    lo = hi = ready_expected = first = np.nan
    for m in range(MEMBERS):
        lo, hi, ready_expected, first = ek.band_step(
            lo, hi, ready_expected, first, views[0, m], views[1, m], views[2, m], views[3, m],
            views[4, m], views[5, m], views[6, m], width, combine_max)
    return ek.band_end(lo, hi, ready_expected, first, centre)


@row_kernel
def _learn_profile(s: int, t: int, x: float, phase: Any, profile: tuple[Any, ...]) -> None:
    """``_profile_learn`` of one row."""
    (period_ns, bucket_ns, alpha, n, first, last, gdev, centre, scale, mean_code, dev_code,
     count, snap_b, snap_cycle, snap_mean, snap_dev) = profile
    b, c, mean, sigma, ready = phase
    seasonal_kernels.learn_row(s, t, x, b, c, mean, sigma, ready, alpha, bucket_ns, period_ns,
                               n, first, last, gdev, centre, scale, mean_code, dev_code, count,
                               snap_b, snap_cycle, snap_mean, snap_dev)


@row_kernel
def _learn_scale(s: int, z: float, resid: float, scale: tuple[Any, ...]) -> None:
    """``_scale_update`` of one row whose member is ready."""
    hist, low, inc, n, cached, typical, growth, q, gauss, window = scale
    learn_scaled_row(hist, low, inc, n, cached, typical, s, z, resid, growth, q, gauss, window)


@row_kernel
def row_lessons(  # noqa: PLR0913 -- the row, its views, and ``RoundArgs.lessons``
    s: int, t: int, x: float, views: Any, recent: float, daily_phase: Any, weekly_phase: Any,
    combine_max: bool, level: tuple[Any, ...], daily: tuple[Any, ...],
    weekly: tuple[Any, ...], scales: tuple[Any, ...], narrowing: tuple[Any, ...],
    excursions: tuple[Any, ...],
) -> None:
    """``round_lessons`` of slot ``s``'s finite value ``x`` at time ``t``, from ``row_views``."""
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
    ek.learn_peak_row(peak, age, peak_ns, s, t, combined, recent, max_age)
    d, v, alpha, prior, window = narrowing
    for m in range(MEMBERS):
        if views[1, m] == views[1, m]:  # noqa: PLR0124 -- ready
            persistence.learn_cell(d, v, s, m, signed[m], alpha, prior, window)
    s0, s1, s2 = scales
    if views[1, 0] == views[1, 0]:  # noqa: PLR0124
        _learn_scale(s, unit[0], resid[0], s0)
    n_col, mean_col, dev_col, level_alpha, warmup = level
    ewma.learn_row(s, x, level_alpha, warmup, n_col, mean_col, dev_col)
    if views[1, 1] == views[1, 1]:  # noqa: PLR0124
        _learn_scale(s, unit[1], resid[1], s1)
    _learn_profile(s, t, x, daily_phase, daily)
    if views[1, 2] == views[1, 2]:  # noqa: PLR0124
        _learn_scale(s, unit[2], resid[2], s2)
    _learn_profile(s, t, x, weekly_phase, weekly)
