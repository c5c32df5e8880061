"""The log-modulus transform detectors use to make skewed values' bands multiplicative.

``sign(x) * log(1 + |x| / offset)`` is logarithmic for values well above ``offset``,
linear near 0 and mirrored below it, so it is monotonic and invertible over every value:
a series that dips below 0 keeps its shape instead of being clipped flat (clipping made a
normal series around -100 score 1e13).

Both directions are compiled loops (``processors.compiled``) for small rounds: a round of
one row costs one call instead of four numpy ones. Large rounds stay with numpy, whose
vectorised ``log1p``/``expm1`` are faster than the C library's the loops call (and may
differ from them in the last bit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored, kernel

_FLOAT64 = np.dtype(np.float64)
_MAX_ROWS = 64
"""Rounds up to this many rows take the compiled loop (numpy is faster above ~150)."""


@kernel
def _sign(x: float) -> float:
    """``np.sign``: 1, -1, 0 (also for -0.0) or NaN."""
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return 0.0 if x == 0 else x


@kernel
def _log_modulus_rows(values: Any, offset: float) -> Any:
    out = np.empty(len(values))
    for i in range(len(values)):
        x = values[i]
        out[i] = _sign(x) * np.log1p(np.abs(x) / offset)
    return out


@kernel
def _inverse_rows(values: Any, offset: float) -> Any:
    out = np.empty(len(values))
    for i in range(len(values)):
        x = values[i]
        out[i] = _sign(x) * offset * np.expm1(np.abs(x))
    return out


def _plain(values: Any) -> bool:
    """A small one-dimensional float64 array, what the kernels take (else numpy works)."""
    return (isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype == _FLOAT64
            and len(values) <= _MAX_ROWS)


def log_modulus(values: NDArray[np.float64], offset: float = 1.0) -> NDArray[np.float64]:
    """``sign(x) * log1p(|x| / offset)`` (NaN stays NaN).

    >>> log_modulus(np.array([-99.0, 0.0, 99.0])).round(3).tolist()
    [-4.605, 0.0, 4.605]
    """
    if not _plain(values):
        with np.errstate(invalid="ignore"):
            return np.sign(values) * np.log1p(np.abs(values) / offset)
    with float_warnings_ignored():
        out: NDArray[np.float64] = _log_modulus_rows(values, float(offset))
    return out


def inverse_log_modulus(values: NDArray[np.float64], offset: float = 1.0) -> NDArray[np.float64]:
    """The inverse of ``log_modulus`` (an overflow becomes an infinite edge).

    >>> inverse_log_modulus(log_modulus(np.array([-5.0, 2.5]), 2.0), 2.0).tolist()
    [-5.0, 2.5]
    """
    if not _plain(values):
        with np.errstate(over="ignore", invalid="ignore"):
            return np.sign(values) * offset * np.expm1(np.abs(values))
    with float_warnings_ignored():
        out: NDArray[np.float64] = _inverse_rows(values, float(offset))
    return out
