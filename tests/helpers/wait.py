"""``wait_for``: poll a condition with short waits; fail with a message saying how far it got."""

from __future__ import annotations

import time
from collections.abc import Callable

_POLL_S = 0.01


def wait_for(
    condition: Callable[[], bool], timeout: float, message: str | Callable[[], str]
) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds.

    ``message`` (or what it returns, evaluated at failure) says what was expected and what
    was seen, e.g. ``lambda: f"got {len(events)}/5 events"``; " within {timeout}s" is added.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            msg = f"{text} within {timeout:g}s"
            raise AssertionError(msg)
        time.sleep(_POLL_S)
