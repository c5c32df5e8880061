"""Binomial tails in Gaussian-equivalent sigmas, and the ratios at a given number of them.

``K ~ Binomial(n, p)``; a window with ratio ``x`` of ``n`` calls had ``k = x n`` errors.
Its upper tail ``P(K >= k)`` (or lower tail ``P(K <= k)``) is put in sigmas by the
Peizer-Pratt normal approximation [^1] (with its 0.02 correction), which is a closed form
in ``k``, ``n`` and ``p``: no special functions (scipy would load network modules into
this pure package), continuous in ``k`` and non-integer ``n`` (effective sample sizes),
and within about 0.05 sigmas of the exact tail from 1 to 7 sigmas for ``n >= 4`` (0.2 at
worst, for ``n`` of 1 or 2 and rates near 1e-4). Between the expected count and one
error (or ``n - 1`` errors below it) the sigmas are interpolated linearly from 0, so they
are 0 at the expected value and grow monotonically away from it.

The scalar functions are compiled kernels (``processors.compiled``) that the detector's
kernels call row by row; ``binomial_sigmas`` and ``band_edges`` loop them over arrays.
They follow the numpy code they replaced operation for operation (``np.maximum``'s NaN
propagation, ``np.clip``'s argument order), so the results are the same.

References
----------
[^1]: Peizer, D. B., & Pratt, J. W. (1968). A normal approximation for binomial, F, beta,
    and other common, related tail probabilities, I. Journal of the American Statistical
    Association, 63(324), 1416-1456.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored, kernel
from otel_anomaly.processors.kernel_math import clip, maximum

GRID = np.linspace(0.0, 1.0, 33)
"""The grid ``band_edges`` refines (its kernels take it as an argument)."""
_ROUNDS = 3  # grid refinements: brackets of 32**-3 of the range, then interpolated
UNREACHABLE_Z = 0.1
"""Sigmas assumed at 0 or 1 when even those are less than a single sigma out."""

F64 = NDArray[np.float64]


@kernel
def _g(x: float) -> float:
    """Peizer-Pratt's ``g(x) = (1 - x^2 + 2 x ln x) / (1 - x)^2``, ``g(1) = 0``."""
    e = x - 1.0
    if abs(e) < 1e-3:  # near 1 the formula cancels: its series instead
        return -e / 3.0 + e * e / 6.0
    return (1.0 - x * x + 2.0 * x * math.log(maximum(x, 1e-300))) / (e * e)


@kernel
def _cdf_sigmas(k: float, n: float, p: float) -> float:
    """``z`` with ``P(K <= k) = Phi(z)``, for ``0 <= k <= n - 1``."""
    q = 1.0 - p
    s, t = k + 0.5, n - k - 0.5
    d = s + 1.0 / 6.0 - (n + 1.0 / 3.0) * p + 0.02 * (
        q / (k + 1.0) - p / (n - k) + (q - 0.5) / (n + 1.0))
    spread = (1.0 + q * _g(s / (n * p)) + p * _g(t / (n * q))) / ((n + 1.0 / 6.0) * p * q)
    return d * math.sqrt(maximum(spread, 0.0))


@kernel
def sided(k: float, n: float, p: float, up: bool, end: float) -> float:
    """Sigmas of ``k`` errors on the side ``up`` (or down) of the mean.

    ``end``: the sigmas at 1 error (up) or ``n - 1`` errors (down), from ``ends``.
    """
    mean = n * p
    if up:
        if k < 1.0:  # closer to the mean than one error: linear from 0 at the mean
            return end * ((k - mean) / maximum(1.0 - mean, 1e-300))
        return _cdf_sigmas(clip(k - 1.0, 0.0, n - 1.0), n, p)
    if k > n - 1.0:
        return end * ((mean - k) / maximum(mean - (n - 1.0), 1e-300))
    return -_cdf_sigmas(clip(k, 0.0, n - 1.0), n, p)


@kernel
def ends(n: float, p: float, up: bool) -> float:
    """The sigmas at 1 error (``up``) or ``n - 1`` errors (down), at least 0."""
    if up:
        return maximum(_cdf_sigmas(0.0, n, p), 0.0)
    return maximum(-_cdf_sigmas(n - 1.0, n, p), 0.0)


@kernel
def sigmas(x: float, n: float, p: float) -> float:
    """``binomial_sigmas`` of one row."""
    up = x >= p
    return sided(x * n, n, p, up, ends(n, p, up))


@kernel
def _at(y: float, n: float, p: float, sign: float, up: bool, end: float) -> float:
    """Sigmas at distance ``y`` from ``p`` on one side."""
    return sided(clip(p + sign * y, 0.0, 1.0) * n, n, p, up, end)


@kernel
def _below(lo: float, hi: float, n: float, p: float, sign: float, up: bool, end: float,
           want: float, grid: Any) -> int:
    """How many points of ``grid`` over ``lo`` to ``hi`` are below ``want`` sigmas.

    Bisected (6 evaluations of 33): the sigmas grow monotonically away from ``p``, so
    those below come first. Not quite at 0 sigmas: for ``n`` under 4 the approximation
    dips below 0 just past the mean, so ``want`` of 0 or less counts every point, as
    numpy's count of ``< want`` did (a rule's band is above 0; 400,000 random rows
    with ``want`` above 0 bisect to the same count, ``test_binomial_kernels``). A NaN
    counts as not below; NaNs come from NaN arguments, which make every point NaN.
    """
    if not want > 0.0:
        below = 0
        for j in range(len(grid)):
            if _at(lo + (hi - lo) * grid[j], n, p, sign, up, end) < want:
                below += 1
        return below
    a, b = 0, len(grid)
    while a < b:
        mid = (a + b) // 2
        if _at(lo + (hi - lo) * grid[mid], n, p, sign, up, end) < want:
            a = mid + 1
        else:
            b = mid
    return a


@kernel
def edge(n: float, p: float, want: float, up: bool, grid: Any) -> float:
    """The ratio above (``up``) or below ``p`` whose sigmas are ``want``: see ``band_edges``."""
    sign = 1.0 if up else -1.0
    span = 1.0 - p if up else p
    end = ends(n, p, up)
    lo, hi = 0.0, span
    last = len(grid) - 1
    for _ in range(_ROUNDS):
        below = _below(lo, hi, n, p, sign, up, end, want, grid)
        at = min(max(below, 1), last)
        lo, hi = lo + (hi - lo) * grid[at - 1], lo + (hi - lo) * grid[at]
    z_lo = _at(lo, n, p, sign, up, end)
    z_hi = _at(hi, n, p, sign, up, end)
    reach = maximum(_at(span, n, p, sign, up, end), UNREACHABLE_Z)
    if reach < want:
        y = span * want / reach
    else:
        y = lo + (hi - lo) * clip((want - z_lo) / (z_hi - z_lo), 0.0, 1.0)
        if not math.isfinite(y):
            y = lo
    return p + sign * y


@kernel
def _sigmas_rows(x: Any, n: Any, p: Any) -> Any:
    out = np.empty(len(x))
    for i in range(len(x)):
        out[i] = sigmas(x[i], n[i], p[i])
    return out


@kernel
def _edges_rows(n: Any, p: Any, band: Any, grid: Any) -> Any:
    lower, upper = np.empty(len(p)), np.empty(len(p))
    for i in range(len(p)):
        lower[i] = edge(n[i], p[i], band[i], False, grid)
        upper[i] = edge(n[i], p[i], band[i], True, grid)
    return lower, upper


def binomial_sigmas(x: F64, n: F64, p: F64) -> F64:
    """Sigmas of ratio ``x`` of ``n`` calls on its side of rate ``p``; 0 at ``x = p``.

    ``x`` in [0, 1], ``n >= 1``, ``p`` in (0, 1). Above ``p`` it is the upper tail
    ``P(K >= x n)``, below it the lower tail ``P(K <= x n)``.

    Examples
    --------
    >>> binomial_sigmas(np.array([0.25, 0.5, 0.3, 0.0]), np.array([4.0, 4.0, 100.0, 1000.0]),
    ...                 np.full(4, 0.005)).round(2)
    array([ 2.07,  3.58, 13.92,  2.49])
    """
    x, n, p = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, n, p)))
    with float_warnings_ignored():
        out: F64 = _sigmas_rows(x.ravel(), n.ravel(), p.ravel()).reshape(x.shape)
    return out


def band_edges(n: F64, p: F64, band: F64) -> tuple[F64, F64]:
    """The ratios below and above ``p`` whose sigmas are ``band``, for ``n`` calls.

    Found on both sides at once by refining a grid (the sigmas grow monotonically away
    from ``p``), then interpolating. Where even 1 (or 0) is less than ``band`` sigmas
    out, the edge lies beyond it, on the line from ``p`` through the sigmas reached there.

    Examples
    --------
    >>> lower, upper = band_edges(np.array([4.0, 100.0]), np.full(2, 0.005), np.full(2, 3.5))
    >>> (upper * 100).round(1), lower.round(2)
    (array([48.6,  4.8]), array([-0.17, -0.17]))
    """
    n, p, band = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (n, p, band)))
    with float_warnings_ignored():
        lower, upper = _edges_rows(np.ravel(n), np.ravel(p), np.ravel(band), GRID)
    return lower, upper
