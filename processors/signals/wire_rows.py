"""What happens to each scanned gauge point: the checks and stream bookkeeping, compiled.

The same steps, in the same order, as ``metrics._Walk.gauge_points`` and
``SourceTable.advance`` for a gauge (or an up-down counter's level): a missing or future
time is rejected, a point flagged "no recorded value" is accepted and skipped, a non-finite
value is rejected; then a point not newer than its stream's newest is refused as out of
order, and any other point moves its stream on and is scored.
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
    P_TIME,
)
from otel_anomaly.processors.signals.wire_cache import SID, SLOT, combine, probe

# Row outcomes, in the order the checks run.
SCORED, MISSING_TIME, FUTURE_TIME, NO_VALUE, NON_FINITE, OUT_OF_ORDER, UNKNOWN = range(7)
_NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


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
def advance(
    rows: NDArray[np.int64], points: NDArray[np.int64], status: NDArray[np.int64],
    found: NDArray[np.int64], start: NDArray[np.int64], last_ts: NDArray[np.int64],
    newest_ts: NDArray[np.int64], last_seen: NDArray[np.float64], now: float,
) -> None:
    """Move the streams of the ``SCORED`` rows on, in row order; refuse stale points.

    ``SourceTable.advance`` for a gauge: no start time, no partial intervals.
    """
    for i in range(len(rows)):
        if status[i] != SCORED:
            continue
        sid = found[i, 0]
        t = points[rows[i], P_TIME]
        if t <= newest_ts[sid]:
            status[i] = OUT_OF_ORDER
            continue
        newest_ts[sid] = last_ts[sid] = t
        start[sid] = 0
        last_seen[sid] = now
