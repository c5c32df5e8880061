"""Hysteresis: scores become flags, and flags become open / update / close transitions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series import grown
from otel_anomaly.processors.settings import AlertPolicy

_LONG_AGO = 1 << 40  # "points since the last close" of a slot that never closed


@dataclass(frozen=True, slots=True)
class Transitions:
    """Per row: the flag after the row, and which rows opened, updated or closed."""

    flag: NDArray[np.bool_]
    opened: NDArray[np.bool_]
    updated: NDArray[np.bool_]
    closed: NDArray[np.bool_]


class Hysteresis:
    """Per-slot alert state: an anomaly opens after ``min_duration`` high scores in a row.

    It also opens once the high scores in a row span ``min_duration_time_s`` of event time, each
    point counting as the series' usual spacing (a running average of the gaps between its
    points, so one point after a gap of days does not count as days of evidence). One
    score at or above ``instant_threshold`` opens it at once. It closes after
    ``close_after`` scores below ``close_threshold`` in a row, and only once they also span
    ``close_after_time_s`` of event time (a shifted level whose noise dips inside the band
    now and then is not over); while open it asks for at
    most one update per ``update_interval_s`` of event time. For ``cooldown`` points after
    a close no new anomaly opens (the rest of one event stays one anomaly), or for
    ``cooldown_time_s`` of event time if that ends first: an hourly series is not blind for
    60 hours. NaN scores (invalid points) leave the state as it is.

    Examples
    --------
    >>> h = Hysteresis()
    >>> policy = AlertPolicy(min_duration=2, close_after=1)
    >>> slots = np.array([0])
    >>> [bool(h.step(slots, np.array([s]), np.array([0]), policy).flag[0])
    ...  for s in (0.2, 1.5, 1.6, 0.9, 0.1)]
    [False, False, True, True, False]
    >>> half_hourly = np.arange(1, 4) * 1800 * 10**9  # one high point is 30 minutes of it
    >>> [bool(h.step(np.array([1]), np.array([s]), np.array([t]), policy).flag[0])
    ...  for s, t in zip((0.2, 0.2, 1.5), half_hourly)]
    [False, False, True]
    """

    def __init__(self) -> None:
        self._above = np.zeros(0, np.int64)
        self._below = np.zeros(0, np.int64)
        self._open = np.zeros(0, np.bool_)
        self._last_event_ts = np.zeros(0, np.int64)
        self._open_for = np.zeros(0, np.int64)  # points since the anomaly opened
        self._since_close = np.zeros(0, np.int64)  # points since the last close
        self._prev_ts = np.zeros(0, np.int64)  # event time of the last valid point
        self._spacing = np.zeros(0, np.float64)  # usual gap between points, ns
        self._high_for = np.zeros(0, np.float64)  # event time the high run spans, ns
        self._low_for = np.zeros(0, np.float64)  # event time the low run spans, ns
        self._closed_ts = np.zeros(0, np.int64)  # event time of the last close

    def __setstate__(self, state: dict[str, object]) -> None:
        # Checkpoints from before the time-based minimum duration load with it fresh.
        self.__dict__.update(state)
        for name, dtype in (("_prev_ts", np.int64), ("_spacing", np.float64),
                            ("_high_for", np.float64), ("_closed_ts", np.int64),
                            ("_low_for", np.float64)):
            self.__dict__.setdefault(name, np.zeros(0, dtype))

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        if len(slots):
            needed = int(slots.max()) + 1
            self._above = grown(self._above, needed, 0)  # type: ignore[assignment]
            self._below = grown(self._below, needed, 0)  # type: ignore[assignment]
            self._open = grown(self._open, needed, False)  # type: ignore[assignment]
            self._last_event_ts = grown(self._last_event_ts, needed, 0)  # type: ignore[assignment]
            self._open_for = grown(self._open_for, needed, 0)  # type: ignore[assignment]
            self._since_close = grown(self._since_close, needed, _LONG_AGO)  # type: ignore[assignment]
            self._prev_ts = grown(self._prev_ts, needed, 0)  # type: ignore[assignment]
            self._spacing = grown(self._spacing, needed, 0.0)  # type: ignore[assignment]
            self._high_for = grown(self._high_for, needed, 0.0)  # type: ignore[assignment]
            self._low_for = grown(self._low_for, needed, 0.0)  # type: ignore[assignment]
            self._closed_ts = grown(self._closed_ts, needed, 0)  # type: ignore[assignment]

    def is_open(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Whether each slot has an open anomaly."""
        self._ensure(slots)
        return self._open[slots].copy()

    def spacing_s(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Each slot's usual gap between points in seconds (0 while unknown)."""
        self._ensure(slots)
        out: NDArray[np.float64] = self._spacing[slots] / 1e9
        return out

    def open_for(self, slots: NDArray[np.intp]) -> NDArray[np.int64]:
        """Points each slot's open anomaly has lasted (0 when none is open)."""
        self._ensure(slots)
        return np.where(self._open[slots], self._open_for[slots], 0)

    def step(
        self,
        slots: NDArray[np.intp],
        score: NDArray[np.float64],
        ts_unix_nano: NDArray[np.int64],
        policy: AlertPolicy,
    ) -> Transitions:
        """Advance distinct ``slots`` by one scored point each."""
        self._ensure(slots)
        valid = ~np.isnan(score)
        high = valid & (score >= policy.open_threshold)
        low = valid & (score < policy.close_threshold)
        above = np.where(high, self._above[slots] + 1, np.where(valid, 0, self._above[slots]))
        below = np.where(low, self._below[slots] + 1, np.where(valid, 0, self._below[slots]))
        was_open = self._open[slots]
        since_close = np.where(valid, self._since_close[slots] + 1, self._since_close[slots])
        cooled = since_close > policy.cooldown
        if policy.cooldown_time_s > 0:
            cooled |= ts_unix_nano - self._closed_ts[slots] >= int(policy.cooldown_time_s * 1e9)
        may_open = ~was_open & cooled
        spacing = self._learn_spacing(slots, ts_unix_nano, valid)
        high_for = np.where(high, self._high_for[slots] + spacing,
                            np.where(valid, 0.0, self._high_for[slots]))
        self._high_for[slots] = high_for
        low_for = np.where(low, self._low_for[slots] + spacing,
                           np.where(valid, 0.0, self._low_for[slots]))
        self._low_for[slots] = low_for
        min_time_ns = policy.min_duration_time_s * 1e9
        long_enough = (above >= policy.min_duration) | (
            high & (min_time_ns > 0) & (high_for >= min_time_ns))
        opened = may_open & (long_enough | (valid & (score >= policy.instant_threshold)))
        # A series whose spacing is not known yet closes on points alone.
        closed = was_open & (below >= policy.close_after) & (
            (low_for >= policy.close_after_time_s * 1e9) | (spacing <= 0))
        interval_ns = int(policy.update_interval_s * 1e9)
        updated = (
            was_open & ~closed & high
            & (ts_unix_nano - self._last_event_ts[slots] >= interval_ns)
        )
        now_open = (was_open | opened) & ~closed
        self._above[slots] = above
        self._below[slots] = below
        self._open[slots] = now_open
        self._open_for[slots] = np.where(
            opened, 1, np.where(now_open & valid, self._open_for[slots] + 1, 0)
        )
        self._since_close[slots] = np.where(closed, 0, since_close)
        self._closed_ts[slots] = np.where(closed, ts_unix_nano, self._closed_ts[slots])
        evented = opened | updated | closed
        self._last_event_ts[slots[evented]] = ts_unix_nano[evented]
        return Transitions(now_open, opened, updated, closed)

    def _learn_spacing(
        self, slots: NDArray[np.intp], ts: NDArray[np.int64], valid: NDArray[np.bool_]
    ) -> NDArray[np.float64]:
        """Each slot's usual gap between points (ns), updated with this row's gap."""
        prev = self._prev_ts[slots]
        spacing = self._spacing[slots]
        seen = valid & (prev > 0) & (ts > prev)
        gap = (ts - prev).astype(np.float64)
        # A gap of days moves the average by at most one usual gap.
        learned = np.where(spacing > 0, spacing + 0.1 * (np.minimum(gap, 2 * spacing) - spacing),
                           gap)
        spacing = np.where(seen, learned, spacing)
        self._spacing[slots] = spacing
        self._prev_ts[slots] = np.where(valid, np.maximum(ts, prev), prev)
        return spacing

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots`` (no close event is produced)."""
        self._ensure(slots)
        self._above[slots] = 0
        self._below[slots] = 0
        self._open[slots] = False
        self._last_event_ts[slots] = 0
        self._open_for[slots] = 0
        self._since_close[slots] = _LONG_AGO
        self._prev_ts[slots] = 0
        self._spacing[slots] = 0.0
        self._high_for[slots] = 0.0
        self._low_for[slots] = 0.0
        self._closed_ts[slots] = 0
