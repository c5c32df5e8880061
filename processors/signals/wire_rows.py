"""What happens to each scanned number point: the checks and stream bookkeeping, compiled.

The same steps, in the same order, as ``metrics._Walk.gauge_points`` (gauges, up-down
counters' levels), ``metrics._Walk.sum`` (counters as rates) and ``SourceTable.advance``:
a missing or future time is rejected, a point flagged "no recorded value" is accepted and
skipped, a non-finite value is rejected; then a point not newer than its stream's newest
is refused as out of order, and any other point moves its stream on. A gauge point is
scored as it is; a counter point is scored as the rate since the previous one, unless it
closes a partial interval, restarts its sequence, or gives no finite rate.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.signals.metrics_wire import (
    G_HASH1,
    G_HASH2,
    M_GROUP,
    M_HASH1,
    M_HASH2,
    P_FLAGS,
    P_HASH1,
    P_HASH2,
    P_METRIC,
    P_START,
    P_TIME,
)
from otel_anomaly.processors.signals.wire_cache import SID, SLOT, combine, probe

# Row outcomes, in the order the checks run.
(SCORED, MISSING_TIME, FUTURE_TIME, NO_VALUE, NON_FINITE, OUT_OF_ORDER, UNKNOWN, PARTIAL,
 RESET, UNRATED) = range(10)
# How a row's stream moves on (``modes``).
LEVEL, CUMULATIVE_RATE, DELTA_RATE = range(3)
_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_PARTIAL_FRACTION = 0.75  # cumulative_streams._PARTIAL_FRACTION
_INT64_END = np.uint64(2**63)


@kernel
def classify(
    rows: NDArray[np.int64], points: NDArray[np.int64], values: NDArray[np.float64],
    metrics: NDArray[np.int64], groups: NDArray[np.int64], latest: int,
    table: NDArray[np.int64], keys: NDArray[np.int64], status: NDArray[np.int64],
    found: NDArray[np.int64],
) -> None:
    """Check each of ``rows`` and find its stream: ``status`` and ``found`` (sid, slot).

    A usable point whose key is not in the cache is ``UNKNOWN`` (the Python path resolves
    it). ``keys[i]`` is row ``i``'s cache key.
    """
    for i in range(len(rows)):
        r = rows[i]
        m = points[r, P_METRIC]
        g = metrics[m, M_GROUP]
        keys[i, 0] = combine(groups[g, G_HASH1], metrics[m, M_HASH1], points[r, P_HASH1])
        keys[i, 1] = combine(groups[g, G_HASH2], metrics[m, M_HASH2], points[r, P_HASH2])
        t = points[r, P_TIME]
        if t == 0:
            status[i] = MISSING_TIME
        elif t > latest:
            status[i] = FUTURE_TIME
        elif points[r, P_FLAGS] & _NO_RECORDED_VALUE:
            status[i] = NO_VALUE
        elif not np.isfinite(values[r]):
            status[i] = NON_FINITE
        else:
            row = probe(table, keys[i, 0], keys[i, 1])
            if table[row, SID] < 0:
                status[i] = UNKNOWN
            else:
                status[i] = SCORED
                found[i, 0], found[i, 1] = table[row, SID], table[row, SLOT]


@kernel
def advance(  # noqa: PLR0912 - the branches of SourceTable.advance and _Walk.sum, in order
    rows: NDArray[np.int64], points: NDArray[np.int64], values: NDArray[np.float64],
    modes: NDArray[np.int64], status: NDArray[np.int64], found: NDArray[np.int64],
    start: NDArray[np.uint64], last_ts: NDArray[np.int64], newest_ts: NDArray[np.int64],
    interval: NDArray[np.int64], last_seen: NDArray[np.float64], level: NDArray[np.float64],
    now: float, scored: NDArray[np.float64], exposure: NDArray[np.float64],
) -> None:
    """Move the streams of the ``SCORED`` rows on, in row order; ``scored`` what is scored.

    ``SourceTable.advance`` with the arguments ``_Walk`` gives it: a level has no start
    time; a cumulative counter holds partial intervals and restarts when its start time
    moves; a delta counter does neither. Then ``_Walk.sum``'s rate, and in ``exposure``
    the seconds it was counted over (NaN for a level).
    """
    for i in range(len(rows)):
        exposure[i] = np.nan
        if status[i] != SCORED:
            continue
        sid, r, mode = found[i, 0], rows[i], modes[i]
        t, value = points[r, P_TIME], values[r]
        previous = newest_ts[sid]
        if t <= previous:
            status[i] = OUT_OF_ORDER
            continue
        newest_ts[sid] = t
        last_seen[sid] = now
        begin = np.uint64(points[r, P_START]) if mode == CUMULATIVE_RATE else np.uint64(0)
        base = start[sid]
        restarted = begin != base and begin != np.uint64(0) and base != np.uint64(0)
        if mode == CUMULATIVE_RATE and not restarted:
            if t - last_ts[sid] < _PARTIAL_FRACTION * interval[sid]:
                status[i] = PARTIAL
                continue
            interval[sid] = min(t - last_ts[sid], t - previous)  # ``usual_interval``
        prev_ts, prev = last_ts[sid], level[sid]
        start[sid], last_ts[sid] = begin, t
        if mode != LEVEL:
            level[sid] = value
        if restarted:
            interval[sid] = 0
            status[i] = RESET
            continue
        if mode == LEVEL:
            scored[i] = value
            continue
        if mode == CUMULATIVE_RATE:
            if value < prev:  # a counter only goes down when it restarted
                status[i] = RESET
                continue
            scored[i] = _per_second(value - prev, t - prev_ts)
            exposure[i] = (t - prev_ts) / 1e9
        else:
            since = np.uint64(points[r, P_START])
            began = prev_ts if since == 0 else np.int64(since) if since < _INT64_END else -1
            scored[i] = _per_second(value, t - began) if began >= 0 else np.nan
            exposure[i] = (t - began) / 1e9
        if not np.isfinite(scored[i]):
            status[i] = UNRATED


@kernel
def _per_second(delta: float, dt_ns: int) -> float:
    """``cumulative_streams.per_second``."""
    return delta / (dt_ns / 1e9) if dt_ns > 0 else np.nan
