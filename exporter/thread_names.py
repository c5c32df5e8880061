"""The sidecar's threads under their own names in ``top -H``, ``ps -L`` and ``/proc``.

Python (before 3.14) names a thread only for Python: the kernel keeps the process' name for
all of them, so a sidecar at 100 % of a core does not say whether it is scoring
(``pipeline``) or receiving (``io``). Each thread calls ``name_this_thread`` first thing;
its kernel name is its Python name without the ``otel-anomaly-`` prefix, cut to the 15
bytes Linux keeps (``prctl(PR_SET_NAME)``). Elsewhere, or if the call fails, nothing
changes: a name is a convenience, never a reason to stop.
"""

from __future__ import annotations

import ctypes
import sys
import threading

PREFIX = "otel-anomaly-"
_PR_SET_NAME = 15  # linux/prctl.h
_MAX_BYTES = 15  # TASK_COMM_LEN 16, with the terminating NUL


def kernel_name(python_name: str) -> bytes:
    """The kernel name for a thread named ``python_name``.

    >>> kernel_name("otel-anomaly-pipeline"), kernel_name("otel-anomaly-output-otlp_events")
    (b'pipeline', b'output-otlp_eve')
    """
    short = python_name.removeprefix(PREFIX) or python_name
    return short.encode("utf-8", "replace")[:_MAX_BYTES]


def _prctl() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:  # the process' own symbols, libc's among them (no library search at import)
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return getattr(libc, "prctl", None)


_SET = _prctl()


def name_this_thread() -> bool:
    """Give the calling thread its kernel name (``kernel_name``); whether it was set."""
    if _SET is None:
        return False
    name = ctypes.create_string_buffer(kernel_name(threading.current_thread().name))
    try:
        status = _SET(_PR_SET_NAME, name, 0, 0, 0)  # type: ignore[operator]
    except (OSError, ctypes.ArgumentError):
        return False
    return bool(status == 0)
