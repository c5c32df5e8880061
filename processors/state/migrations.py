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

import numpy as np
from numpy.typing import NDArray

FIRST_FORMAT = 4
"""The oldest format that can be read (the first saved as arrays and JSON)."""

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]



def _anomaly_stamps(state: dict[str, Any]) -> dict[str, Any]:
    """Format 4 -> 5: open anomalies remember their open's stamp (their ``anomaly_id``).

    An anomaly open at the upgrade gets its last event's time as its open's: its id then
    stays the same until it closes, which is all an id needs.
    """
    per_slot = state["scorer"]["per_slot"]
    last = np.asarray(state["scorer"]["hysteresis"]["last_event_ts"], np.int64)
    opened = np.where(np.asarray(state["scorer"]["hysteresis"]["open"], np.bool_), last, 0)
    rows = len(per_slot["age"])
    per_slot["opened_ns"] = _fit(opened, rows)
    per_slot["stamped_ns"] = _fit(opened, rows)
    state["silence"]["services"] = [
        [*service, 0] for service in state["silence"]["services"]]
    return state


def _fit(values: NDArray[np.int64], rows: int) -> NDArray[np.int64]:
    """``values`` cut or padded with zeros to ``rows`` rows."""
    out = np.zeros(rows, np.int64)
    n = min(rows, len(values))
    out[:n] = values[:n]
    return out


MIGRATIONS: dict[int, Upgrade] = {4: _anomaly_stamps}
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
