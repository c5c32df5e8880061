"""Per-source-stream memory: ordering, counter deltas, histogram bucket deltas.

A source stream is one OTLP metric stream (name, resource, attributes) before it is split
into scored features. Cumulative streams need their previous point to become rates;
every stream needs its last timestamp so a duplicate or out-of-order point is refused
instead of corrupting the series.

A rate is taken over a whole reporting interval. A point that closes an interval much
shorter than the stream's usual one (an SDK's final collection at shutdown, a
``force_flush``) is a partial interval: it is not rated on its own but folded into the next
one, so a sender that stops mid-interval does not read as a drop in throughput.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

OUT_OF_ORDER = "out_of_order"
RESET = "counter_reset"
FIRST = "first_point"
PARTIAL = "partial_interval"
# An interval shorter than this fraction of the stream's last full one is partial. Periodic
# readers keep their interval to within a few percent; an out-of-schedule collection is
# shorter by a good part of it.
_PARTIAL_FRACTION = 0.75


class SourceState:
    """Last point of one source stream; ``payload`` is whatever its delta needs.

    ``last_ts`` and ``payload`` are the base the next rate is taken from; ``newest_ts`` is
    the newest point seen (ahead of the base while a partial interval is held), and
    ``interval`` the length of the last full interval (ns, 0 before the first).
    """

    __slots__ = ("interval", "last_seen", "last_ts", "newest_ts", "payload", "start")

    def __init__(self, start: int, ts: int, payload: Any, now: float) -> None:
        self.start = start
        self.last_ts = self.newest_ts = ts
        self.payload = payload
        self.last_seen = now
        self.interval = 0


class SourceTable:
    """Source streams by key, capped, with idle expiry on the ingest clock."""

    def __init__(self, max_sources: int) -> None:
        self.max_sources = max_sources
        self._states: dict[Hashable, SourceState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def advance(
        self, key: Hashable, start: int, ts: int, payload: Any, now: float, *,
        hold_partial: bool = False,
    ) -> tuple[str, int, Any]:
        """Record a point; return a status and the previous point's timestamp and payload.

        Statuses: ``ok`` (same sequence as the previous point), ``first_point``,
        ``counter_reset`` (start time moved: a new sequence), ``out_of_order`` (the point is
        not newer than the last one: refused, nothing changes), ``series_limit``, and with
        ``hold_partial`` (cumulative rates) ``partial_interval``: the point closes less than
        three quarters of the stream's usual interval, so the base stays where it was and
        the next point is rated over both intervals together.
        """
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= self.max_sources:
                return "series_limit", 0, None
            self._states[key] = SourceState(start, ts, payload, now)
            return FIRST, 0, None
        if ts <= state.newest_ts:
            return OUT_OF_ORDER, 0, None
        state.newest_ts, state.last_seen = ts, now
        restarted = start not in (state.start, 0) and state.start != 0
        if hold_partial and not restarted:
            if ts - state.last_ts < _PARTIAL_FRACTION * state.interval:
                return PARTIAL, 0, None
            state.interval = ts - state.last_ts
        prev_ts, prev_payload = state.last_ts, state.payload
        state.start, state.last_ts, state.payload = start, ts, payload
        if restarted:
            state.interval = 0
        return (RESET if restarted else "ok"), prev_ts, prev_payload

    def state_dict(self) -> dict[str, Any]:
        """Each stream's key and last point (the counter baselines), in insertion order."""
        return {"streams": [(key, s.start, s.last_ts, s.newest_ts, s.payload, s.last_seen,
                             s.interval) for key, s in self._states.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        states: dict[Hashable, SourceState] = {}
        for key, start, last_ts, newest_ts, payload, last_seen, interval in state["streams"]:
            source = SourceState(int(start), int(last_ts), payload, float(last_seen))
            source.newest_ts, source.interval = int(newest_ts), int(interval)
            states[key] = source
        self._states = states

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
