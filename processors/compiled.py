"""How numeric kernels are compiled: ``kernel`` and ``row_kernel``, with one set of options.

The per-row steps of detectors and alerting (predict, score, learn, calibration, tail
statistics, hysteresis) are loops over the rows of a round, compiled with numba: a round
of one row (a backtest of one series, a live series that reports alone) then costs one
call per component instead of dozens of small numpy calls.

- ``cache=True``: compiled code is written to ``NUMBA_CACHE_DIR`` if set, else to this
  package's ``__pycache__/kernels``, else to ``~/.cache/otel-anomaly``, the first of them
  that is writable, so only the first start on a machine pays for compilation. Under any of them
  it goes to a folder named after a digest of this package's sources
  (``kernel_cache_dir``): numba keys a cache entry on the stamp of its own file only, so a
  kernel that calls a kernel of another file would otherwise keep that file's old code
  after it changed (an upgrade, a ``git pull``). Where none of them is writable (a
  read-only image run as a user without a home), kernels are compiled at every start
  instead of failing to import (``uncached`` names them; the CLI warns); the container
  image and the chart set ``NUMBA_CACHE_DIR`` to the state volume.
- ``error_model="numpy"``: a float division by zero gives inf or NaN, as numpy does, instead
  of raising ``ZeroDivisionError``.
- ``nogil=True``: a kernel releases the GIL, so the event loop keeps serving while a large
  round is scored.
- No ``fastmath``: results must equal the reference (the same code run as plain Python with
  ``NUMBA_DISABLE_JIT=1``) to float tolerance; ``tests/processors/test_compiled_reference.py``
  compares the two on every incident kind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar, cast

import numba
import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

_NOTHING = nullcontext()
_OPTIONS: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
_uncached: list[str] = []


def source_digest(root: Path) -> str:
    """A digest of every ``.py`` file under ``root``, names and contents (16 hex digits)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def kernel_cache_dir(base: str) -> str:
    """Where kernels compiled from these sources are cached under ``NUMBA_CACHE_DIR=base``."""
    return os.path.join(base, f"otel-anomaly-{source_digest(Path(__file__).parent)}")


def cache_dir() -> str:
    """Where this process caches compiled kernels ("" when nowhere)."""
    return str(numba.config.CACHE_DIR or "")  # type: ignore[attr-defined]


def default_cache_base() -> str:
    """Where kernels are cached without ``NUMBA_CACHE_DIR``: the first writable candidate.

    This package's ``__pycache__/kernels``, then the user's cache folder; "" if neither
    can be written (numba then finds no cache folder either: kernels are not cached).
    """
    for candidate in (Path(__file__).parent / "__pycache__" / "kernels",
                      Path.home() / ".cache" / "otel-anomaly"):
        if not candidate.is_absolute():  # no home to expand "~" to: not the working folder
            continue
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return str(candidate)
    return ""


# numba's own reading of NUMBA_CACHE_DIR, refined before any kernel is defined (numba reads
# it then); once only, should this file be imported under a second name.
_base = numba.config.CACHE_DIR or default_cache_base()  # type: ignore[attr-defined]
if _base and not os.path.basename(os.path.normpath(_base)).startswith("otel-anomaly-"):
    numba.config.CACHE_DIR = kernel_cache_dir(_base)  # type: ignore[attr-defined]


def kernel(function: F) -> F:
    """Compile ``function`` as a kernel (see the module docstring for the options)."""
    if not function.__module__.startswith("otel_anomaly."):
        # The same file imported under another name (pytest's doctests import
        # ``processors.x``) must not write cache entries: numba would later resolve that
        # name in every process that loads them, and fail outside the source tree.
        return cast(F, numba.njit(**_OPTIONS)(function))
    try:
        return cast(F, numba.njit(cache=True, **_OPTIONS)(function))
    except RuntimeError:  # numba found no writable cache folder
        _uncached.append(f"{function.__module__}.{function.__qualname__}")
        return cast(F, numba.njit(**_OPTIONS)(function))


def row_kernel(function: F) -> F:
    """Compile ``function``, one row of a kernel's loop, to be inlined where it is called.

    A round kernel's loop and ``row_scan``'s one-row path (``detectors/ensemble_row.py``)
    share their arithmetic through these. Row kernels take and return scalars where they
    can, and the loop reads and writes the columns: an array argument costs two atomic
    reference counts at every call, inlined or not (a loop calling one with the seasonal
    profile's 13 columns ran the batched backtest 21 % slower, 863,000 -> 682,000
    points/s). The few that must update a slot's columns in place (a tail histogram's bins,
    a profile's codes, a trend fit) are row kernels too: inlined, their calls cost the
    loops less than called (``benchmarks/engine_speed.py`` folder about 3 % faster).
    Inlined in numba's IR (``inline="always"``); a caller must name its arguments (numba
    cannot inline a call with ``*args``).
    """
    if not function.__module__.startswith("otel_anomaly."):  # as ``kernel``
        return cast(F, numba.njit(inline="always", **_OPTIONS)(function))
    try:
        return cast(F, numba.njit(inline="always", cache=True, **_OPTIONS)(function))
    except RuntimeError:
        _uncached.append(f"{function.__module__}.{function.__qualname__}")
        return cast(F, numba.njit(inline="always", **_OPTIONS)(function))


def uncached() -> tuple[str, ...]:
    """The kernels compiled without a cache (no writable cache folder was found)."""
    return tuple(_uncached)


def compiled() -> bool:
    """Whether kernels are compiled (not run as plain Python under ``NUMBA_DISABLE_JIT=1``)."""
    return not numba.config.DISABLE_JIT  # type: ignore[attr-defined]


def float_warnings_ignored() -> AbstractContextManager[Any]:
    """What a kernel call needs around it, so absurd inputs (near 1e308, infinities) stay quiet.

    ``np.errstate(all="ignore")`` when kernels run as plain Python (``NUMBA_DISABLE_JIT=1``),
    where numpy scalars warn on ``inf - inf`` or an overflow; nothing when they are
    compiled, since compiled code never warns (and entering ``errstate`` costs more than a
    small kernel call).
    """
    plain = numba.config.DISABLE_JIT  # type: ignore[attr-defined]  # set from the environment
    return np.errstate(all="ignore") if plain else _NOTHING
