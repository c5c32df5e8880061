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

References
----------
[^1]: Peizer, D. B., & Pratt, J. W. (1968). A normal approximation for binomial, F, beta,
    and other common, related tail probabilities, I. Journal of the American Statistical
    Association, 63(324), 1416-1456.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_GRID = np.linspace(0.0, 1.0, 33)
_ROUNDS = 3  # grid refinements: brackets of 32**-3 of the range, then interpolated
UNREACHABLE_Z = 0.1
"""Sigmas assumed at 0 or 1 when even those are less than a single sigma out."""

F64 = NDArray[np.float64]


def _g(x: F64) -> F64:
    """Peizer-Pratt's ``g(x) = (1 - x^2 + 2 x ln x) / (1 - x)^2``, ``g(1) = 0``."""
    e = x - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        far = (1.0 - x * x + 2.0 * x * np.log(np.maximum(x, 1e-300))) / (e * e)
    # Near 1 the formula cancels: its series instead.
    out: F64 = np.where(np.abs(e) < 1e-3, -e / 3.0 + e * e / 6.0, far)
    return out


def _cdf_sigmas(k: F64, n: F64, p: F64) -> F64:
    """``z`` with ``P(K <= k) = Phi(z)``, for ``0 <= k <= n - 1``."""
    q = 1.0 - p
    s, t = k + 0.5, n - k - 0.5
    d = s + 1.0 / 6.0 - (n + 1.0 / 3.0) * p + 0.02 * (
        q / (k + 1.0) - p / (n - k) + (q - 0.5) / (n + 1.0))
    spread = (1.0 + q * _g(s / (n * p)) + p * _g(t / (n * q))) / ((n + 1.0 / 6.0) * p * q)
    out: F64 = d * np.sqrt(np.maximum(spread, 0.0))
    return out


def _sided(k: F64, n: F64, p: F64, up: NDArray[np.bool_], end: F64) -> F64:
    """Sigmas of ``k`` errors on the side ``up`` (or down) of the mean.

    ``end``: the sigmas at 1 error (up) or ``n - 1`` errors (down), from ``_ends``.
    """
    mean = n * p
    with np.errstate(invalid="ignore", divide="ignore"):
        z = _cdf_sigmas(np.clip(np.where(up, k - 1.0, k), 0.0, n - 1.0), n, p)
        z = np.where(up, z, -z)
        # Closer to the mean than one error (or n - 1): linear from 0 at the mean.
        near = np.where(up, (k - mean) / np.maximum(1.0 - mean, 1e-300),
                        (mean - k) / np.maximum(mean - (n - 1.0), 1e-300))
    out: F64 = np.where(np.where(up, k < 1.0, k > n - 1.0), end * near, z)
    return out


def _ends(n: F64, p: F64, up: NDArray[np.bool_]) -> F64:
    with np.errstate(invalid="ignore", divide="ignore"):
        z = _cdf_sigmas(np.where(up, 0.0, n - 1.0), n, p)
    out: F64 = np.maximum(np.where(up, z, -z), 0.0)
    return out


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
    up = x >= p
    return _sided(x * n, n, p, up, _ends(n, p, up))


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
    rows = len(p)
    # Distance ``y`` from ``p``: upward on the first ``rows`` rows, downward on the rest.
    up = np.r_[np.ones(rows, np.bool_), np.zeros(rows, np.bool_)]
    sign = np.where(up, 1.0, -1.0)
    nn, pp, want = np.r_[n, n], np.r_[p, p], np.r_[band, band]
    span = np.where(up, 1.0 - pp, pp)
    end = _ends(nn, pp, up)[:, None]

    def sigmas(y: F64) -> F64:
        k = np.clip(pp[:, None] + sign[:, None] * y, 0.0, 1.0) * nn[:, None]
        return _sided(k, nn[:, None], pp[:, None], up[:, None], end)

    lo, hi = np.zeros(2 * rows), span.copy()
    at_rows = np.arange(2 * rows)
    for _ in range(_ROUNDS):
        grid = lo[:, None] + (hi - lo)[:, None] * _GRID[None, :]
        below = (sigmas(grid) < want[:, None]).sum(axis=1)  # monotone: a prefix
        at = np.clip(below, 1, len(_GRID) - 1)
        lo, hi = grid[at_rows, at - 1], grid[at_rows, at]
    z = sigmas(np.c_[lo, hi, span])
    with np.errstate(invalid="ignore", divide="ignore"):
        y = lo + (hi - lo) * np.clip((want - z[:, 0]) / (z[:, 1] - z[:, 0]), 0.0, 1.0)
    reach = np.maximum(z[:, 2], UNREACHABLE_Z)
    y = np.where(reach < want, span * want / reach, np.where(np.isfinite(y), y, lo))
    edge = pp + sign * y
    return edge[rows:], edge[:rows]
