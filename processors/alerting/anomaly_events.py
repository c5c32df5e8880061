"""The events of a round: opens, updates and closes, explained and stamped in order."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.calibration import Calibrated
from otel_anomaly.processors.alerting.explain import explain
from otel_anomaly.processors.alerting.hysteresis import Transitions
from otel_anomaly.processors.series.slot_arrays import SlotArrays
from otel_anomaly.processors.types import (
    AnomalyEvent,
    EventKind,
    SeriesBatch,
    SeriesKey,
    anomaly_id,
)


def round_events(  # noqa: PLR0913 -- the round, its moves, and what explains them
    per_slot: SlotArrays, detector: str, part: SeriesBatch, rows: NDArray[np.intp],
    cal: Calibrated, moves: Transitions, evented: NDArray[np.bool_],
    key_of: Callable[[int], SeriesKey], exemplars: Mapping[int, tuple[bytes, bytes]],
    agree: dict[int, tuple[str, ...]], baseline: NDArray[np.bool_] | None,
    drifts: dict[int, float] | None = None,
) -> list[AnomalyEvent]:
    """The events of a round's ``evented`` rows, each explained and stamped.

    ``per_slot`` holds each slot's ``direction``, ``opened_ns`` and ``stamped_ns``;
    ``rows`` maps the round's rows to the request's (for ``exemplars``: trace and span
    ids); ``agree``: the members that saw each row out of band; ``baseline``: closes whose
    value is still outside the held band (the new level is the baseline); ``drifts``: rows
    still drifting away, their drift per hour.
    """
    events = []
    for i in np.flatnonzero(evented).tolist():
        slot = int(part.slots[i])
        kind: EventKind = (
            "open" if moves.opened[i] else "close" if moves.closed[i] else "update"
        )
        value, expected = float(part.values[i]), float(cal.expected[i])
        ts = stamp(per_slot, slot, kind, int(part.ts_unix_nano[i]))
        if kind == "open":
            per_slot.direction[slot] = 1 if value >= expected else -1
        up = per_slot.direction[slot] >= 0
        key = key_of(slot)
        fields = {
            "value": value, "expected": expected, "lower": float(cal.lower[i]),
            "upper": float(cal.upper[i]), "score": float(cal.score[i]),
        }
        trace_id, span_id = exemplars.get(int(rows[i]), (b"", b""))
        count = math.nan if part.counts is None else float(part.counts[i])
        events.append(AnomalyEvent(
            kind=kind, slot=slot, key=key, ts_unix_nano=ts,
            direction="up" if up else "down", detector=detector,
            explanation=explain(kind, key, detector=detector, agreeing=agree.get(i, ()),
                                baseline=baseline is not None and bool(baseline[i]),
                                count=count, drift=(drifts or {}).get(i, math.nan),
                                **fields),
            trace_id=trace_id, span_id=span_id,
            anomaly_id=anomaly_id(key, int(per_slot.opened_ns[slot])), **fields,
        ))
    return events


def stamp(per_slot: SlotArrays, slot: int, kind: EventKind, ts: int) -> int:
    """The event time an event is stamped with: never before its anomaly's last event.

    Points may arrive out of event-time order (span outliers carry their spans' end
    times), so an update or close stamped with its point's time could precede the open.
    """
    if kind == "open":
        per_slot.opened_ns[slot] = ts
    else:
        ts = max(ts, int(per_slot.stamped_ns[slot]))
    per_slot.stamped_ns[slot] = ts
    return ts
