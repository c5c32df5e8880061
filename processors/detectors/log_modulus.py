"""The log-modulus transform detectors use to make skewed values' bands multiplicative.

``sign(x) * log(1 + |x| / offset)`` is logarithmic for values well above ``offset``,
linear near 0 and mirrored below it, so it is monotonic and invertible over every value:
a series that dips below 0 keeps its shape instead of being clipped flat (clipping made a
normal series around -100 score 1e13).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def log_modulus(values: NDArray[np.float64], offset: float = 1.0) -> NDArray[np.float64]:
    """``sign(x) * log1p(|x| / offset)`` (NaN stays NaN).

    >>> log_modulus(np.array([-99.0, 0.0, 99.0])).round(3).tolist()
    [-4.605, 0.0, 4.605]
    """
    with np.errstate(invalid="ignore"):
        out: NDArray[np.float64] = np.sign(values) * np.log1p(np.abs(values) / offset)
    return out


def inverse_log_modulus(values: NDArray[np.float64], offset: float = 1.0) -> NDArray[np.float64]:
    """The inverse of ``log_modulus`` (an overflow becomes an infinite edge).

    >>> inverse_log_modulus(log_modulus(np.array([-5.0, 2.5]), 2.0), 2.0).tolist()
    [-5.0, 2.5]
    """
    with np.errstate(over="ignore", invalid="ignore"):
        out: NDArray[np.float64] = np.sign(values) * offset * np.expm1(np.abs(values))
    return out
