"""numpy's rules for two scalars inside kernels: which NaN wins, which argument on a tie.

Kernels repeat numpy code operation for operation, so their scalar max, min and clip
follow numpy's ufuncs exactly: ``maximum`` and ``minimum`` propagate NaN and return the
second argument on a tie (which decides the sign of a zero), ``fmax`` and ``fmin`` let a
number win over NaN and return the first on a tie, ``clip`` is ``np.clip``.

>>> maximum(-0.0, 0.0), maximum(0.0, -0.0), fmax(float("nan"), 1.0), minimum(1.0, float("nan"))
(0.0, -0.0, 1.0, nan)
"""

from __future__ import annotations

from otel_anomaly.processors.compiled import kernel


@kernel
def maximum(a: float, b: float) -> float:
    """``np.maximum``: NaN if either is NaN, else the larger (``b`` on a tie)."""
    if a != a:  # noqa: PLR0124 - NaN test
        return a
    return a if a > b else b


@kernel
def minimum(a: float, b: float) -> float:
    """``np.minimum``: NaN if either is NaN, else the smaller (``b`` on a tie)."""
    if a != a:  # noqa: PLR0124
        return a
    return a if a < b else b


@kernel
def fmax(a: float, b: float) -> float:
    """``np.fmax``: a NaN loses to a number; ``a`` on a tie."""
    if a != a:  # noqa: PLR0124
        return b
    if b != b:  # noqa: PLR0124
        return a
    return a if a >= b else b


@kernel
def fmin(a: float, b: float) -> float:
    """``np.fmin``: a NaN loses to a number; ``a`` on a tie."""
    if a != a:  # noqa: PLR0124
        return b
    if b != b:  # noqa: PLR0124
        return a
    return a if a <= b else b


@kernel
def clip(x: float, low: float, high: float) -> float:
    """``np.clip``: NaN if any is NaN; ``x`` itself on a tie (keeps -0.0)."""
    if x != x or low != low or high != high:  # noqa: PLR0124
        return x + low + high
    y = low if x < low else x
    return high if y > high else y
