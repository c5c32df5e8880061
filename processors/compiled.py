"""How numeric kernels are compiled: one decorator, so every kernel shares its options.

The per-row steps of detectors and alerting (predict, score, learn, calibration, tail
statistics, hysteresis) are loops over the rows of a round, compiled with numba: a round
of one row (a backtest of one series, a live series that reports alone) then costs one
call per component instead of dozens of small numpy calls.

- ``cache=True``: compiled code is written beside the module (or, where that folder is
  read-only, to numba's user cache: ``NUMBA_CACHE_DIR``), so only the first start on a
  machine pays for compilation.
- ``error_model="numpy"``: a float division by zero gives inf or NaN, as numpy does, instead
  of raising ``ZeroDivisionError``.
- ``nogil=True``: a kernel releases the GIL, so the event loop keeps serving while a large
  round is scored.
- No ``fastmath``: results must equal the reference (the same code run as plain Python with
  ``NUMBA_DISABLE_JIT=1``) to float tolerance; ``tests/processors/test_compiled_reference.py``
  compares the two on NAB files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def kernel(function: F) -> F:
    """Compile ``function`` as a kernel (see the module docstring for the options)."""
    return cast(F, numba.njit(cache=True, nogil=True, error_model="numpy")(function))
