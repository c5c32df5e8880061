"""Whether an open anomaly is still moving away: a noise-scaled, one-sided trend test.

A leak grows by less than its noise from one point to the next, so no single new extreme
shows it; its trend does. Every series keeps an exponentially weighted least-squares fit
of its deviation from the detector's baseline (``Prediction.baseline``: an ensemble's
seasonal profile, which a leak does not drag along) against event time, with time constant
``hold`` (the same horizon as the hold: a drift that moves less than its noise within one
hold is a level), and the t statistic of the slope; an open anomaly reads it on
its own side. The fit runs before the open too: a leak is flagged once it has already
grown for a while, and its trend is known from then on.

- the slope's variance is the weighted least-squares one, ``s^2 sum w^2 (t - t_bar)^2 /
  (sum w (t - t_bar)^2)^2``, with ``s^2`` the weighted residual variance (weighted degrees
  of freedom from Kish's effective sample size ``(sum w)^2 / sum w^2``);
- metrics are autocorrelated (a smooth utilisation), which makes a naive t statistic of
  a plateau look like a trend: the variance is inflated by ``(1 + rho) / (1 - rho)``, the
  AR(1) factor for a trend over a window much longer than the correlation, with the lag-1
  correlation ``rho = 1 - D / (2 s^2)`` from the mean squared successive difference ``D``
  (von Neumann's ratio), i.e. by ``max(1, 4 s^2 / D - 1)``. Each squared difference
  enters ``D`` capped at 3**2 times its usual size, so a single jump (a step, which a line
  fits badly) does not pass for fast noise.

The value counts as still growing while that t statistic is at least ``T_CRIT``. Once it
stops growing the estimated slope fades as the plateau replaces the ramp in the window:
``(1 + d / hold) exp(-d / hold)`` of the ramp's slope after ``d`` of plateau, so a ramp
whose trend scored ``t`` stops counting after the ``d`` where ``t`` times that falls below
``T_CRIT`` (1.7 holds for t = 6, 2.4 for t = 10, 3.4 for t = 20, 4.5 for t = 50).

State: ``WIDTH`` float64 per slot (weighted sums kept centred, times relative to the last
point, so they stay exact over days) and the last point's event time: 96 bytes.
"""

from __future__ import annotations

import math
from typing import Any

from otel_anomaly.processors.compiled import kernel, row_kernel

T_CRIT = 3.0
"""One-sided critical value of the slope's t statistic (0.13 % for a normal statistic):
noise alone, white or autocorrelated, reaches it at well under 1 % of points
(``tests/processors/test_trend.py``), so a level rarely passes for a trend."""

MIN_POINTS_BEFORE = 3.0
"""Effective points a fit needs before ``level_before`` reports a level and its noise."""

FIELDS = 10
# Weight sum, weighted means of time (s, relative to the last point) and deviation, the
# centred comoments tt, tx, xx; the same for the squared weights (sum, mean time, tt);
# the weighted sum of squared successive differences.
_N, _MT, _MX, _CTT, _CTX, _CXX, _Q, _QT, _QTT, _D = range(FIELDS)
_HUBER = 3.0
_LAST = FIELDS  # the last deviation: stored after the sums (``FIELDS + 1`` columns)
WIDTH = FIELDS + 1


@row_kernel
def trend_step(trend: Any, last_ns: Any, s: int, x: float, t_ns: int, tau_s: float) -> float:
    """Add deviation ``x`` at ``t_ns`` to slot ``s``'s fit; return the slope's t statistic.

    ``trend[s]`` all zeros is an empty fit. A point older than the last one counts as
    arriving with it. 0 until the fit has more than three points' worth of weight.
    """
    n = trend[s, _N]
    if n > 0:
        dt = (t_ns - last_ns[s]) / 1e9
        dt = max(dt, 0.0)
        lam = math.exp(-dt / tau_s) if tau_s < math.inf else 1.0
        # Times are kept relative to the newest point; centred comoments do not move.
        trend[s, _MT] -= dt
        trend[s, _QT] -= dt
        for k in (_N, _CTT, _CTX, _CXX, _D):
            trend[s, k] *= lam
        for k in (_Q, _QTT):
            trend[s, k] *= lam * lam
        step = x - trend[s, _LAST]
        usual = trend[s, _D] / trend[s, _N]
        # Huber-capped at 3**2 usual squares: one jump must not pass for fast noise and
        # hide the misfit's autocorrelation.
        trend[s, _D] += min(step * step, _HUBER**2 * usual) if usual > 0 else step * step
    # Welford's update with a weight of 1, for both weightings.
    n1 = trend[s, _N] + 1.0
    dt_mean = -trend[s, _MT]
    dx_mean = x - trend[s, _MX]
    trend[s, _MT] += dt_mean / n1
    trend[s, _MX] += dx_mean / n1
    trend[s, _CTT] += dt_mean * (0.0 - trend[s, _MT])
    trend[s, _CTX] += dt_mean * (x - trend[s, _MX])
    trend[s, _CXX] += dx_mean * (x - trend[s, _MX])
    trend[s, _N] = n1
    q1 = trend[s, _Q] + 1.0
    dq = -trend[s, _QT]
    trend[s, _QT] += dq / q1
    trend[s, _QTT] += dq * (0.0 - trend[s, _QT])
    trend[s, _Q] = q1
    trend[s, _LAST] = x
    last_ns[s] = t_ns
    if not (math.isfinite(trend[s, _CXX]) and math.isfinite(trend[s, _D])):
        trend[s, :] = 0.0  # overflowed (values near 1e308): start over, never stay NaN
        return 0.0
    return _t_statistic(trend[s, _N], trend[s, _MT], trend[s, _CTT], trend[s, _CTX],
                        trend[s, _CXX], trend[s, _Q], trend[s, _QT], trend[s, _QTT],
                        trend[s, _D])


def drift(trend: Any, s: int) -> tuple[float, float]:
    """Slot ``s``'s fitted drift of its deviation, per second, and the slope's t statistic.

    For explanations (an anomaly still rising about so much an hour); (0, 0) for an
    empty fit.
    """
    row = trend[s]
    if not row[_CTT] > 0:
        return 0.0, 0.0
    t = _t_statistic(row[_N], row[_MT], row[_CTT], row[_CTX], row[_CXX], row[_Q], row[_QT],
                     row[_QTT], row[_D])
    return float(row[_CTX] / row[_CTT]), float(t)


@kernel
def _t_statistic(n: float, mt: float, ctt: float, ctx: float, cxx: float, q: float,
                 qt: float, qtt: float, d: float) -> float:
    n_eff = n * n / q
    if n_eff <= 3.0 or not ctt > 0:
        return 0.0
    slope = ctx / ctt
    rss = max(cxx - slope * ctx, 0.0)
    s2 = rss / (n * (1.0 - 2.0 / n_eff))
    # sum w^2 (t - t_bar)^2, t_bar the w-weighted mean time.
    sww = qtt + q * (qt - mt) ** 2
    var = s2 * sww / (ctt * ctt)
    mssd = d / n
    if mssd > 0:
        var *= max(1.0, 4.0 * s2 / mssd - 1.0)
    if not var > 0:
        return math.inf if slope > 0 else 0.0
    return slope / math.sqrt(var)


@kernel
def level_before(trend: Any, s: int) -> tuple[float, float]:
    """Slot ``s``'s level of its deviation before its last point, and its noise variance.

    The fit without its last point (Welford's update undone: the point that opened an
    anomaly is not the level before it): its weighted mean deviation (over about the
    last ``tau_s``) and the weighted residual variance around its line. The variance is
    NaN when that fit holds less than ``MIN_POINTS_BEFORE`` points' worth of weight
    (Kish's effective size): points an hour or more apart leave a fit over the last hour
    too few to tell a level from its noise.
    """
    n1, q1 = trend[s, _N], trend[s, _Q]
    n0, q0 = n1 - 1.0, q1 - 1.0
    if not (n0 > 0 and q0 > 0 and n0 * n0 / q0 >= MIN_POINTS_BEFORE):
        return 0.0, math.nan
    x = trend[s, _LAST]
    mt1, mx1 = trend[s, _MT], trend[s, _MX]
    mt0, mx0 = n1 * mt1 / n0, (n1 * mx1 - x) / n0
    ctt = trend[s, _CTT] - mt0 * mt1
    ctx = trend[s, _CTX] + mt0 * (x - mx1)
    cxx = trend[s, _CXX] - (x - mx0) * (x - mx1)
    rss = cxx - ctx * ctx / ctt if ctt > 1e-12 * (1.0 + mt0 * mt0) else cxx
    return mx0, max(rss, 0.0) / n0


@kernel
def last_deviation(trend: Any, s: int) -> Any:
    """The deviation of slot ``s``'s last point in its fit."""
    return trend[s, _LAST]
