"""Per-source-stream memory: ordering, counter deltas, histogram bucket deltas.

A source stream is one OTLP metric stream (name, resource, attributes) before it is split
into scored features. Cumulative streams need their previous point to become rates;
every stream needs its last timestamp so a duplicate or out-of-order point is refused
instead of corrupting the series.

A rate is taken over a whole reporting interval. A point that closes an interval much
shorter than the stream's usual one (an SDK's final collection at shutdown, a
``force_flush``) is a partial interval: it is not rated on its own but folded into the next
one, so a sender that stops mid-interval does not read as a drop in throughput. The usual
interval is the last full one, or the spacing of the point that closed it when shorter
(``usual_interval``), so a gap in a stream's points is not taken for its cadence.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays

_IN_LEVEL = object()  # a stream's payload is the float in its ``level`` column
OUT_OF_ORDER = "out_of_order"
RESET = "counter_reset"
FIRST = "first_point"
PARTIAL = "partial_interval"
# An interval shorter than this fraction of the stream's last full one is partial. Periodic
# readers keep their interval to within a few percent; an out-of-schedule collection is
# shorter by a good part of it.
_PARTIAL_FRACTION = 0.75


def usual_interval(full: int, spacing: int) -> int:
    """A stream's usual interval after a full one: the shorter of it and the point's spacing.

    ``full`` is the interval closed, ``spacing`` the point's distance from the point before
    it, folded or not. After a gap (a missed export: one interval twice the usual) the
    next point is partial and the one after closes a full interval of twice the usual
    again; taken as the usual, it made every other point partial for good (a 60-s stream
    rated every 120 s). The spacing of the points that close it says what the cadence is.

    >>> usual_interval(120, 60), usual_interval(60, 60)
    (60, 60)
    """
    return min(full, spacing)


class SourceTable:
    """Source streams by key, capped, with idle expiry on the ingest clock.

    Each stream has a dense id (``sid``) into struct-of-arrays columns (``arrays``):
    ``start``, ``last_ts`` and the payload are the base the next rate is taken from (a
    float payload, a counter's value, lives in the ``level`` column; others in a list);
    ``newest_ts`` is the newest point seen (ahead of the base while a partial interval is
    held), ``interval`` the length of the last full interval (ns, 0 before the first), and
    ``last_seen`` the ingest time of the last point. Arrays, so the compiled wire path
    (``signals.wire_rows``) advances known streams without a Python step per point; the
    Python path reads them through memoryviews (a list index's cost, not numpy's).
    ``generation`` changes whenever a stream id is freed or reloaded: caches of ids
    (``signals.wire_cache``) start over then.
    """

    def __init__(self, max_sources: int) -> None:
        self.max_sources = max_sources
        self._sid: dict[Hashable, int] = {}
        self._keys: list[Hashable | None] = []
        self._payloads: list[Any] = []
        self._free: list[int] = []
        # ``start`` is uint64 as in OTLP (never checked, unlike event times).
        self.arrays = SlotArrays(
            start=Column(np.uint64), last_ts=Column(np.int64), newest_ts=Column(np.int64),
            interval=Column(np.int64), last_seen=Column(np.float64, 0.0),
            level=Column(np.float64, 0.0))
        self.generation = 0
        self._views()

    def _views(self) -> None:
        a = self.arrays
        self._start, self._last_ts, self._newest, self._interval = (
            a.start.data, a.last_ts.data, a.newest_ts.data, a.interval.data)
        # typeshed's memoryview takes ints only
        self._seen: Any = a.last_seen.data
        self._level: Any = a.level.data

    def __len__(self) -> int:
        return len(self._sid)

    def sid(self, key: Hashable) -> int | None:
        """The id of stream ``key``, if it exists (nothing changes)."""
        return self._sid.get(key)

    def _new(self, key: Hashable, start: int, ts: int, payload: Any, now: float) -> None:
        if self._free:
            sid = self._free.pop()
            self._keys[sid] = key
        else:
            sid = len(self._keys)
            self._keys.append(key)
            self._payloads.append(None)
            if sid >= len(self.arrays):
                self.arrays.grow(sid + 1)
                self._views()
        self._set_payload(sid, payload)
        self._sid[key] = sid
        self._start[sid], self._last_ts[sid], self._newest[sid] = start, ts, ts
        self._interval[sid], self._seen[sid] = 0, now

    def _set_payload(self, sid: int, payload: Any) -> None:
        if isinstance(payload, float):
            self._level[sid] = payload
            self._payloads[sid] = _IN_LEVEL
        else:
            self._payloads[sid] = payload

    def _payload(self, sid: int) -> Any:
        payload = self._payloads[sid]
        return self._level[sid] if payload is _IN_LEVEL else payload

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
        sid = self._sid.get(key)
        if sid is None:
            if len(self._sid) >= self.max_sources:
                return "series_limit", 0, None
            self._new(key, start, ts, payload, now)
            return FIRST, 0, None
        previous = self._newest[sid]
        if ts <= previous:
            return OUT_OF_ORDER, 0, None
        self._newest[sid], self._seen[sid] = ts, now
        base = self._start[sid]
        restarted = start not in (base, 0) and base != 0
        last_ts = self._last_ts[sid]
        if hold_partial and not restarted:
            if ts - last_ts < _PARTIAL_FRACTION * self._interval[sid]:
                return PARTIAL, 0, None
            self._interval[sid] = usual_interval(ts - last_ts, ts - previous)
        prev_payload = self._payload(sid)
        self._start[sid], self._last_ts[sid] = start, ts
        self._set_payload(sid, payload)
        if restarted:
            self._interval[sid] = 0
        return (RESET if restarted else "ok"), last_ts, prev_payload

    def state_dict(self) -> dict[str, Any]:
        """Each stream's key and last point (the counter baselines), in insertion order."""
        return {"streams": [
            (key, self._start[i], self._last_ts[i], self._newest[i], self._payload(i),
             self._seen[i], self._interval[i]) for key, i in self._sid.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``."""
        self._sid, self._keys, self._payloads, self._free = {}, [], [], []
        self.arrays.reset(np.arange(len(self.arrays)))
        self.generation += 1
        for key, start, last_ts, newest_ts, payload, last_seen, interval in state["streams"]:
            self._new(key, int(start), int(last_ts), payload, float(last_seen))
            sid = self._sid[key]
            self._newest[sid], self._interval[sid] = int(newest_ts), int(interval)

    def shift_clock(self, delta: float) -> None:
        """Move every ingest-time "last seen" by ``delta`` seconds (after a restore)."""
        self.arrays.last_seen[:] += delta

    def expire(self, now: float, ttl: float) -> int:
        """Drop streams idle longer than ``ttl``; return how many."""
        seen = self._seen
        stale = [(k, i) for k, i in self._sid.items() if seen[i] < now - ttl]
        for key, sid in stale:
            del self._sid[key]
            self._keys[sid] = self._payloads[sid] = None
            self._free.append(sid)
        if stale:
            self.generation += 1
        return len(stale)


def per_second(delta: float, dt_ns: int) -> float:
    """Rate per second of ``delta`` over ``dt_ns`` nanoseconds (NaN for a zero interval)."""
    return delta / (dt_ns / 1e9) if dt_ns > 0 else float(np.nan)


def seconds(dt_ns: int) -> float:
    """``dt_ns`` in seconds: the exposure a rate of ``per_second`` was counted over."""
    return dt_ns / 1e9
