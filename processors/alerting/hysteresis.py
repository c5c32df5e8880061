"""Hysteresis: scores become flags, and flags become open / update / close transitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.settings import AlertPolicy

_LONG_AGO = (1 << 31) - 1  # "points since the last close" of a slot that never closed
_COUNT_MAX = (1 << 31) - 1  # point counts saturate here (int32 storage)


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
    60 hours. NaN scores (invalid points) leave the state as it is. After a restore, each
    anomaly still open asks for an update at its first valid point, so outputs that
    started empty (the Prometheus info gauge) learn of it again.

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
        self._state = SlotArrays(
            # Point counts are int32, saturating (event times stay int64).
            above=Column(np.int32),
            below=Column(np.int32),
            open=Column(np.bool_, False),
            last_event_ts=Column(np.int64),
            open_for=Column(np.int32),  # points since the anomaly opened
            since_close=Column(np.int32, _LONG_AGO),  # points since the last close
            prev_ts=Column(np.int64),  # event time of the last valid point
            spacing=Column(np.float64, 0.0),  # usual gap between points, ns
            high_for=Column(np.float64, 0.0),  # event time the high run spans, ns
            low_for=Column(np.float64, 0.0),  # event time the low run spans, ns
            closed_ts=Column(np.int64),  # event time of the last close
        )
        self._resumed: set[int] = set()  # restored open anomalies not yet announced

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._state.ensure(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot alert state."""
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore the state saved by ``state_dict``."""
        self._state.load_state_dict(state)
        self._resumed = set(np.flatnonzero(self._state.open).tolist())

    def is_open(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Whether each slot has an open anomaly."""
        self._ensure(slots)
        return self._state.open[slots].copy()

    def spacing_s(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Each slot's usual gap between points in seconds (0 while unknown)."""
        self._ensure(slots)
        out: NDArray[np.float64] = self._state.spacing[slots] / 1e9
        return out

    def open_for(self, slots: NDArray[np.intp]) -> NDArray[np.int64]:
        """Points each slot's open anomaly has lasted (0 when none is open)."""
        self._ensure(slots)
        return np.where(self._state.open[slots], self._state.open_for[slots], 0)

    def step(
        self,
        slots: NDArray[np.intp],
        score: NDArray[np.float64],
        ts_unix_nano: NDArray[np.int64],
        policy: AlertPolicy,
    ) -> Transitions:
        """Advance distinct ``slots`` by one scored point each."""
        self._ensure(slots)
        state = self._state
        valid = ~np.isnan(score)
        high = valid & (score >= policy.open_threshold)
        low = valid & (score < policy.close_threshold)
        above = np.where(high, _more(state.above[slots]), np.where(valid, 0, state.above[slots]))
        below = np.where(low, _more(state.below[slots]), np.where(valid, 0, state.below[slots]))
        was_open = state.open[slots]
        since_close = np.where(valid, _more(state.since_close[slots]), state.since_close[slots])
        cooled = since_close > policy.cooldown
        if policy.cooldown_time_s > 0:
            cooled |= ts_unix_nano - state.closed_ts[slots] >= int(policy.cooldown_time_s * 1e9)
        may_open = ~was_open & cooled
        spacing = self._learn_spacing(slots, ts_unix_nano, valid)
        high_for = np.where(high, state.high_for[slots] + spacing,
                            np.where(valid, 0.0, state.high_for[slots]))
        state.high_for[slots] = high_for
        low_for = np.where(low, state.low_for[slots] + spacing,
                           np.where(valid, 0.0, state.low_for[slots]))
        state.low_for[slots] = low_for
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
            & (ts_unix_nano - state.last_event_ts[slots] >= interval_ns)
        )
        if self._resumed:
            updated |= was_open & ~closed & valid & self._announce(slots, valid)
        now_open = (was_open | opened) & ~closed
        state.above[slots] = above
        state.below[slots] = below
        state.open[slots] = now_open
        state.open_for[slots] = np.where(
            opened, 1, np.where(now_open & valid, _more(state.open_for[slots]), 0)
        )
        state.since_close[slots] = np.where(closed, 0, since_close)
        state.closed_ts[slots] = np.where(closed, ts_unix_nano, state.closed_ts[slots])
        evented = opened | updated | closed
        state.last_event_ts[slots[evented]] = ts_unix_nano[evented]
        return Transitions(now_open, opened, updated, closed)

    def _announce(self, slots: NDArray[np.intp], valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Which rows are a restored anomaly's first valid point (each is announced once)."""
        resumed = np.isin(slots, np.fromiter(self._resumed, np.intp, len(self._resumed)))
        self._resumed.difference_update(slots[resumed & valid].tolist())
        return resumed

    def _learn_spacing(
        self, slots: NDArray[np.intp], ts: NDArray[np.int64], valid: NDArray[np.bool_]
    ) -> NDArray[np.float64]:
        """Each slot's usual gap between points (ns), updated with this row's gap."""
        state = self._state
        prev = state.prev_ts[slots]
        spacing = state.spacing[slots]
        seen = valid & (prev > 0) & (ts > prev)
        gap = (ts - prev).astype(np.float64)
        # A gap of days moves the average by at most one usual gap.
        learned = np.where(spacing > 0, spacing + 0.1 * (np.minimum(gap, 2 * spacing) - spacing),
                           gap)
        spacing = np.where(seen, learned, spacing)
        state.spacing[slots] = spacing
        state.prev_ts[slots] = np.where(valid, np.maximum(ts, prev), prev)
        return spacing

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots`` (no close event is produced)."""
        self._state.reset(slots)
        if self._resumed:
            self._resumed.difference_update(slots.tolist())


def _more(count: NDArray[Any]) -> NDArray[np.int64]:
    """``count + 1``, saturating at the largest count an int32 column holds."""
    out: NDArray[np.int64] = np.minimum(count.astype(np.int64) + 1, _COUNT_MAX)
    return out
