"""How many data points an OTLP metrics request holds, read from its bytes.

The receivers count a request before it is queued (for ``otel_anomaly_points_received``
and the answer's rejected counts); walking every metric of the decoded message in Python
on the event loop cost 2.4 µs a point where each metric has one point, this 0.07 µs. The
count equals ``MetricsExtractor.count`` of the decoded request, also where parsers merge
a repeated oneof member or let a later one replace it; bytes the count does not model
give ``None``, and the caller counts the message.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.signals.metrics_wire import (
    EXPONENTIAL_HISTOGRAM,
    GAUGE,
    HISTOGRAM,
    SUM,
    SUMMARY,
    read_varint,
    skip_field,
)


@kernel
def _count_data_points(data: NDArray[np.uint8], pos: int, end: int) -> int:
    """Entries of field 1 (``data_points`` of every metric kind) in a data message; -1 if odd."""
    n = 0
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return -1
        field, wire = key >> 3, key & 7
        if field == 1 and wire != 2:  # noqa: PLR2004
            return -1
        if field == 1:
            n += 1
        pos = skip_field(data, pos, end, wire)
        if pos < 0:
            return -1
    return n


@kernel
def _count_metric(data: NDArray[np.uint8], pos: int, end: int) -> int:
    """``MetricsExtractor.count`` of one ``Metric``: its data points, 1 without data; -1 if odd.

    Parsers merge a repeated member of the ``data`` oneof and replace one member by
    another: the count follows.
    """
    kind = 0
    n = 0
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return -1
        field, wire = key >> 3, key & 7
        member = field in (GAUGE, SUM, HISTOGRAM, EXPONENTIAL_HISTOGRAM, SUMMARY)
        if member and wire != 2:  # noqa: PLR2004
            return -1
        if member:
            length, pos = read_varint(data, pos, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1
            here = _count_data_points(data, pos, pos + length)
            if here < 0:
                return -1
            n = n + here if field == kind else here
            kind = field
            pos += length
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return -1
    return n if kind else 1


@kernel
def _count_scope(data: NDArray[np.uint8], pos: int, end: int) -> int:
    """Points in a ``ScopeMetrics``: each of its metrics (field 2); -1 if odd."""
    n = 0
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return -1
        field, wire = key >> 3, key & 7
        if field == 2 and wire != 2:  # noqa: PLR2004
            return -1
        if field == 2:  # noqa: PLR2004
            length, pos = read_varint(data, pos, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1
            here = _count_metric(data, pos, pos + length)
            if here < 0:
                return -1
            n += here
            pos += length
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return -1
    return n


@kernel
def _count_resource(data: NDArray[np.uint8], pos: int, end: int) -> int:
    """Points in a ``ResourceMetrics``: each of its scope_metrics (field 2); -1 if odd."""
    n = 0
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return -1
        field, wire = key >> 3, key & 7
        if field == 2 and wire != 2:  # noqa: PLR2004
            return -1
        if field == 2:  # noqa: PLR2004
            length, pos = read_varint(data, pos, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1
            here = _count_scope(data, pos, pos + length)
            if here < 0:
                return -1
            n += here
            pos += length
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return -1
    return n


@kernel
def _count_request(data: NDArray[np.uint8]) -> int:
    """Points in a request: resource_metrics (1) → scope_metrics (2) → metrics (2)."""
    n = 0
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return -1
        field, wire = key >> 3, key & 7
        if field == 1 and wire != 2:  # noqa: PLR2004
            return -1
        if field == 1:
            length, pos = read_varint(data, pos, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1
            here = _count_resource(data, pos, pos + length)
            if here < 0:
                return -1
            n += here
            pos += length
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return -1
    return n


def count_points(data: bytes) -> int | None:
    """``MetricsExtractor.count`` of the request ``data`` serializes, without decoding it.

    None where the bytes hold something the count does not model (a known field of
    another wire type) or are malformed: the caller counts the decoded message then.
    """
    n = _count_request(np.frombuffer(data, np.uint8))
    return None if n < 0 else n
