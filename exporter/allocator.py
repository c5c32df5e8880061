"""glibc's malloc, told to give large freed arrays back to the system (``mallopt(3)``).

glibc serves a block above its mmap threshold (128 KiB at start) from a mapping of its own,
returned to the system when the block is freed. But freeing such a block also raises the
threshold to the block's size (up to 32 MiB): later blocks below it come from the heap, and
memory freed in the middle of the heap stays resident. The engine's per-series arrays grow
a quarter at a time, many arrays in turn, so their old copies are freed among live blocks:
at 100,000 series the sidecar kept 6,078 B per series resident where 4,085 B did with the
threshold fixed (``benchmarks/memory.py``). Setting the threshold turns the adjustment off;
a threshold chosen by the operator (``MALLOC_MMAP_THRESHOLD_``) is left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3  # mallopt(3)'s parameter number
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept from then on
_OPERATOR_SETTING = "MALLOC_MMAP_THRESHOLD_"


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
    except (OSError, AttributeError):
        return None
    return libc


def keep_large_blocks_mapped(environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap threshold at 128 KiB; True if it was set here.

    False on other C libraries and platforms, or when ``MALLOC_MMAP_THRESHOLD_`` is set
    (glibc has applied the operator's value at start).
    """
    libc = _glibc()
    if libc is None or _OPERATOR_SETTING in environ:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
