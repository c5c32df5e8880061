"""Upgrades of saved state between checkpoint format versions, all in one place.

When a component's ``state_dict`` changes shape, bump ``checkpoint.FORMAT`` and add the
step from the previous version here: it receives the decoded state tree of version ``N``
and returns that of version ``N + 1``. A checkpoint is upgraded one step at a time up to
the current version, so every step only knows its two neighbours.

Format 4 is the first one saved without pickle; older checkpoints are foreign.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FIRST_FORMAT = 4
"""The oldest format that can be read (the first saved as arrays and JSON)."""

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]

MIGRATIONS: dict[int, Upgrade] = {}
"""Format ``N`` -> the step that turns its state into format ``N + 1``'s."""


def upgrade(state: dict[str, Any], version: int, target: int) -> dict[str, Any]:
    """``state`` of format ``version`` brought to format ``target``.

    Raises
    ------
    KeyError
        If a step on the way is missing (a format that cannot be upgraded).

    Examples
    --------
    >>> upgrade({"x": 1}, 4, 4)
    {'x': 1}
    """
    for step in range(version, target):
        state = MIGRATIONS[step](state)
    return state
