"""Per-source-stream memory: ordering, counter deltas, histogram bucket deltas.

A source stream is one OTLP metric stream (name, resource, attributes) before it is split
into scored features. Cumulative streams need their previous point to become rates;
every stream needs its last timestamp so a duplicate or out-of-order point is refused
instead of corrupting the series.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

OUT_OF_ORDER = "out_of_order"
RESET = "counter_reset"
FIRST = "first_point"


class SourceState:
    """Last point of one source stream; ``payload`` is whatever its delta needs."""

    __slots__ = ("last_seen", "last_ts", "payload", "start")

    def __init__(self, start: int, ts: int, payload: Any, now: float) -> None:
        self.start = start
        self.last_ts = ts
        self.payload = payload
        self.last_seen = now


class SourceTable:
    """Source streams by key, capped, with idle expiry on the ingest clock."""

    def __init__(self, max_sources: int) -> None:
        self.max_sources = max_sources
        self._states: dict[Hashable, SourceState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def advance(
        self, key: Hashable, start: int, ts: int, payload: Any, now: float
    ) -> tuple[str, int, Any]:
        """Record a point; return a status and the previous point's timestamp and payload.

        Statuses: ``ok`` (same sequence as the previous point), ``first_point``,
        ``counter_reset`` (start time moved: a new sequence), ``out_of_order`` (the point is
        not newer than the last one: refused, nothing changes), ``series_limit``.
        """
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= self.max_sources:
                return "series_limit", 0, None
            self._states[key] = SourceState(start, ts, payload, now)
            return FIRST, 0, None
        if ts <= state.last_ts:
            return OUT_OF_ORDER, 0, None
        prev_ts, prev_payload = state.last_ts, state.payload
        restarted = start not in (state.start, 0) and state.start != 0
        state.start, state.last_ts, state.payload, state.last_seen = start, ts, payload, now
        return (RESET if restarted else "ok"), prev_ts, prev_payload

    def shift_clock(self, delta: float) -> None:
        """Move every ingest-time "last seen" by ``delta`` seconds (after a restore)."""
        for state in self._states.values():
            state.last_seen += delta

    def expire(self, now: float, ttl: float) -> int:
        """Drop streams idle longer than ``ttl``; return how many."""
        stale = [k for k, s in self._states.items() if s.last_seen < now - ttl]
        for key in stale:
            del self._states[key]
        return len(stale)


def per_second(delta: float, dt_ns: int) -> float:
    """Rate per second of ``delta`` over ``dt_ns`` nanoseconds (NaN for a zero interval)."""
    return delta / (dt_ns / 1e9) if dt_ns > 0 else float(np.nan)
