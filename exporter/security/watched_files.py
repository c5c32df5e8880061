"""A value built from secret files and rebuilt when they change, without a restart.

Certificates and tokens are rotated by replacing their files (cert-manager, a Kubernetes
Secret's symlink swap, a script). Each use asks for ``current()``, which looks at the
files' identity (inode, size, modification time) at most once per ``check_interval_s``:
a ``stat`` per file, no thread, no inotify. A change that does not load (a half-written
file, a key that does not match its certificate) keeps the previous value and is logged,
never with the files' contents; the next change is tried again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Signature = tuple[tuple[int, int, int, int] | None, ...]

CHECK_INTERVAL_S = 1.0


class WatchedFiles(Generic[_T]):
    """``build(paths)``'s result, rebuilt when one of ``paths`` changes.

    Thread-safe: gRPC asks from its own threads, aiohttp from the event loop.

    Parameters
    ----------
    paths
        The files the value is built from.
    build
        Reads the files and builds the value; raises ``OSError`` or ``ValueError`` (an
        ``ssl.SSLError`` is an ``OSError``) when they do not make one.
    what
        The config key the files come from, for log lines (``receivers.http.tls``).
    check_interval_s
        Least time between two looks at the files.
    clock
        Monotonic seconds.

    Raises
    ------
    OSError, ValueError
        From the first ``build``: a server must not start without its secrets.
    """

    def __init__(
        self, paths: Sequence[str], build: Callable[[Sequence[str]], _T], what: str,
        check_interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths = tuple(paths)
        self._build = build
        self._what = what
        self._interval = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = self._signature()
        self._value = build(self._paths)
        self._next_check = clock() + check_interval_s
        self.reloads = 0  # changes loaded since start

    def current(self) -> _T:
        """The value for the files as they are now (as of the last look)."""
        if self._clock() < self._next_check:
            return self._value
        with self._lock:
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + self._interval
                self._reload_if_changed()
            return self._value

    def _reload_if_changed(self) -> None:
        # The signature is taken before reading, so a write that lands while we read
        # shows up as a change at the next look.
        signature = self._signature()
        if signature == self._seen:
            return
        self._seen = signature
        try:
            value = self._build(self._paths)
        except (OSError, ValueError) as exc:
            logger.warning("%s: changed files do not load, keeping the previous ones: %s",
                           self._what, describe_error(exc))
            return
        self._value = value
        self.reloads += 1
        logger.info("%s: reloaded %s", self._what, ", ".join(self._paths))

    def _signature(self) -> _Signature:
        return tuple(_identity(path) for path in self._paths)


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns


def describe_error(exc: BaseException) -> str:
    """Say what went wrong with a secret file, without its contents."""
    # OSError's str() can be a bare errno tuple; say which file and what went wrong.
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename!r}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__
