"""A compiled scan of a serialized ``ExportMetricsServiceRequest``: number points as arrays.

The Python walk of a decoded request costs about 2 µs a point in attribute reads alone; this
scan reads the protobuf wire format once and writes, for every ``NumberDataPoint`` of a gauge
or a sum, one row of plain numbers: which metric it belongs to, its times, value and flags,
and a 128-bit hash of its attribute bytes (with their byte span). Each metric gets a row too
(its resource group, kind, temporality, name and unit spans, a hash of its identity), and
each resource group a hash of its resource bytes. The point's attributes are never decoded:
a series is found by hash (``signals.wire_cache``), and only a series seen for the first
time takes the Python path that builds its ``SeriesKey`` from the decoded message.

The structure follows the messages (``scan`` → ``_resource_metrics`` → ``_scope_metrics``
→ ``_metric`` → ``_number_points`` → ``_number_point``); each reads fields as protobuf
parsers do: unknown fields are skipped, a repeated scalar keeps its last value, the last
of ``as_double``/``as_int`` wins. What this scan does not model exactly marks its metric
``M_OK = 0`` (a data field present twice, which parsers merge; a known field with another
wire type), and a malformed buffer (or a wire type of a group) returns a negative status:
the caller then uses the decoded message instead, so behaviour never depends on the scan.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel

# Columns of the point table (int64; values are in their own float64 array).
P_METRIC, P_INDEX, P_START, P_TIME, P_FLAGS, P_HASH1, P_HASH2, P_ATTR_LO, P_ATTR_HI = range(9)
POINT_COLUMNS = 9
# Columns of the metric table.
(M_GROUP, M_SCOPE, M_INDEX, M_KIND, M_TEMPORALITY, M_MONOTONIC, M_NAME_LO, M_NAME_HI,
 M_UNIT_LO, M_UNIT_HI, M_FIRST_ROW, M_ROWS, M_OK, M_HASH1, M_HASH2) = range(15)
METRIC_COLUMNS = 15
# Columns of the resource-group table.
G_HASH1, G_HASH2 = range(2)
GROUP_COLUMNS = 2

# Metric kinds (M_KIND): the field number of the ``data`` oneof member, 0 when none is set.
GAUGE, SUM, HISTOGRAM, EXPONENTIAL_HISTOGRAM, SUMMARY = 5, 7, 9, 10, 11

OK, MALFORMED = 0, -1
_TOO_MANY = -2  # more rows than the tables hold (cannot happen: sized from the buffer)

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
ALT_OFFSET = np.uint64(0x84222325CBF29CE4)
_ALT_PRIME = np.uint64(0x9E3779B97F4A7C15)
_TIME_MAX = np.uint64(2**63 - 1)


@kernel
def read_varint(data: NDArray[np.uint8], pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` (as int64 bits) and the position after it (-1 if malformed).

    Callers read a one-byte varint (most tags and lengths) inline and come here for the
    rest: numba does not inline a function with a loop, and a call per field costs more
    than the field.
    """
    value = np.uint64(0)
    shift = np.uint64(0)
    while pos < end and shift < np.uint64(70):
        byte = np.uint64(data[pos])
        pos += 1
        value |= (byte & np.uint64(0x7F)) << shift
        if byte < np.uint64(0x80):
            return int(np.int64(value)), pos
        shift += np.uint64(7)
    return 0, -1


@kernel
def fixed64(data: NDArray[np.uint8], pos: int) -> np.uint64:
    """The little-endian 64-bit word at ``pos`` (unrolled: no loop, so it inlines)."""
    return (np.uint64(data[pos]) | np.uint64(data[pos + 1]) << np.uint64(8)
            | np.uint64(data[pos + 2]) << np.uint64(16)
            | np.uint64(data[pos + 3]) << np.uint64(24)
            | np.uint64(data[pos + 4]) << np.uint64(32)
            | np.uint64(data[pos + 5]) << np.uint64(40)
            | np.uint64(data[pos + 6]) << np.uint64(48)
            | np.uint64(data[pos + 7]) << np.uint64(56))


@kernel
def skip_field(data: NDArray[np.uint8], pos: int, end: int, wire: int) -> int:
    """Position after an unknown field's payload (-1 if malformed or a group)."""
    if wire == 0:
        return read_varint(data, pos, end)[1]
    if wire == 1:
        return pos + 8 if pos + 8 <= end else -1
    if wire == 5:
        return pos + 4 if pos + 4 <= end else -1
    if wire == 2:
        length = int(data[pos]) if pos < end else 0x80
        pos += 1
        if length >= 0x80:  # inline: a call per field costs more than the field
            length, pos = read_varint(data, pos - 1, end)
        if pos < 0 or length < 0 or length > end - pos:
            return -1
        return pos + length
    return -1


@kernel
def hash_bytes(
    data: NDArray[np.uint8], lo: int, hi: int, h1: np.uint64, h2: np.uint64,
) -> tuple[np.uint64, np.uint64]:
    """Fold ``data[lo:hi]``, led by its length, into two independent 64-bit hashes."""
    n = np.uint64(hi - lo)
    h1 = (h1 ^ n) * _FNV_PRIME
    h2 = (h2 ^ n) * _ALT_PRIME
    for i in range(lo, hi):
        b = np.uint64(data[i])
        h1 = (h1 ^ b) * _FNV_PRIME
        h2 = (h2 ^ b) * _ALT_PRIME
    return h1, h2


@kernel
def _number_point(  # noqa: PLR0912, PLR0915 - one branch per field of the message
    data: NDArray[np.uint8], pos: int, end: int, row: int, points: NDArray[np.int64],
    values: NDArray[np.float64], bits: NDArray[np.uint64], as_double: NDArray[np.float64],
) -> int:
    """One ``NumberDataPoint`` into ``points[row]``: 0, or -1 if malformed, 1 if unusual."""
    start = time = np.uint64(0)
    flags = 0
    h1, h2 = FNV_OFFSET, ALT_OFFSET
    attr_lo, attr_hi = -1, -1
    value = 0.0
    unusual = 0
    while pos < end:
        key = int(data[pos])
        pos += 1
        if key >= 0x80:
            key, pos = read_varint(data, pos - 1, end)
            if pos < 0:
                return -1
        field, wire = key >> 3, key & 7
        if wire == 1 and (field == 2 or field == 3 or field == 4 or field == 6):  # noqa: PLR1714
            if pos + 8 > end:
                return -1
            raw = fixed64(data, pos)
            pos += 8
            if field == 2:
                start = raw
            elif field == 3:
                time = raw
            elif field == 4:
                bits[0] = raw
                value = as_double[0]
            else:
                value = float(np.int64(raw))
        elif field == 7 and wire == 2:  # noqa: PLR2004 - field numbers of the message
            length = int(data[pos]) if pos < end else -1
            pos += 1
            if length >= 0x80:
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1
            h1, h2 = hash_bytes(data, pos, pos + length, h1, h2)
            attr_lo = pos if attr_lo < 0 else attr_lo
            pos += length
            attr_hi = pos
        elif field == 8 and wire == 0:  # noqa: PLR2004
            flags, pos = read_varint(data, pos, end)
        else:
            if 2 <= field <= 8 and field != 5:  # noqa: PLR2004
                unusual = 1  # a known field with another wire type: parsers differ on it
            pos = skip_field(data, pos, end, wire)
        if pos < 0:
            return -1
    points[row, P_START] = np.int64(start)  # the uint64's bits: compared, never ordered
    points[row, P_TIME] = np.int64(min(time, _TIME_MAX))
    points[row, P_FLAGS] = flags & 0xFFFFFFFF
    points[row, P_HASH1] = np.int64(h1)
    points[row, P_HASH2] = np.int64(h2)
    points[row, P_ATTR_LO] = attr_lo
    points[row, P_ATTR_HI] = attr_hi
    values[row] = value
    return unusual


@kernel
def _number_points(  # noqa: PLR0912 - one branch per field of the message
    data: NDArray[np.uint8], pos: int, end: int, m: int, rows: int,
    points: NDArray[np.int64], values: NDArray[np.float64], metrics: NDArray[np.int64],
    bits: NDArray[np.uint64], as_double: NDArray[np.float64],
) -> tuple[int, int]:
    """A ``Gauge`` or ``Sum``: its points from row ``rows`` on; (position, rows after)."""
    first = rows
    while pos < end:
        key = int(data[pos]) if pos < end else 0x80
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
        if pos < 0:
            return -1, rows
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:  # noqa: PLR2004
            length = int(data[pos]) if pos < end else 0x80
            pos += 1
            if length >= 0x80:  # inline: a call per field costs more than the field
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos or rows >= len(values):
                return -1, rows
            points[rows, P_METRIC] = m
            points[rows, P_INDEX] = rows - first
            status = _number_point(data, pos, pos + length, rows, points, values, bits,
                                   as_double)
            if status < 0:
                return -1, rows
            if status > 0:
                metrics[m, M_OK] = 0
            rows += 1
            pos += length
        elif (field == 2 or field == 3) and wire == 0:  # noqa: PLR1714, PLR2004
            raw, pos = read_varint(data, pos, end)
            if field == 2:  # noqa: PLR2004
                metrics[m, M_TEMPORALITY] = np.int64(np.int32(raw & 0xFFFFFFFF))
            else:
                metrics[m, M_MONOTONIC] = 1 if raw != 0 else 0
        else:
            if 1 <= field <= 3:  # noqa: PLR2004
                metrics[m, M_OK] = 0
            pos = skip_field(data, pos, end, wire)
        if pos < 0:
            return -1, rows
    return pos, rows


@kernel
def _metric(  # noqa: PLR0912 - one branch per field of the message
    data: NDArray[np.uint8], pos: int, end: int, m: int, rows: int,
    points: NDArray[np.int64], values: NDArray[np.float64], metrics: NDArray[np.int64],
    bits: NDArray[np.uint64], as_double: NDArray[np.float64],
) -> tuple[int, int]:
    """One ``Metric`` into ``metrics[m]`` and its number points; (position, rows after)."""
    metrics[m, M_OK] = 1
    metrics[m, M_FIRST_ROW] = rows
    metrics[m, M_TEMPORALITY] = 0
    metrics[m, M_MONOTONIC] = 0
    name_lo = name_hi = unit_lo = unit_hi = pos
    kind = 0
    data_fields = 0
    while pos < end:
        key = int(data[pos]) if pos < end else 0x80
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
        if pos < 0:
            return -1, rows
        field, wire = key >> 3, key & 7
        known = field in (1, 3, 5, 7, 9, 10, 11)
        if known and wire == 2:  # noqa: PLR2004
            length = int(data[pos]) if pos < end else 0x80
            pos += 1
            if length >= 0x80:  # inline: a call per field costs more than the field
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos:
                return -1, rows
            stop = pos + length
            if field == 1:
                name_lo, name_hi = pos, stop
            elif field == 3:  # noqa: PLR2004
                unit_lo, unit_hi = pos, stop
            else:
                kind = field
                data_fields += 1
                if field in (GAUGE, SUM):
                    done, rows = _number_points(data, pos, stop, m, rows, points, values,
                                                metrics, bits, as_double)
                    if done < 0:
                        return -1, rows
            pos = stop
        else:
            if known:
                metrics[m, M_OK] = 0
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return -1, rows
    if data_fields > 1:  # parsers merge a repeated member, or keep the last of two
        metrics[m, M_OK] = 0
    metrics[m, M_KIND] = kind
    metrics[m, M_NAME_LO], metrics[m, M_NAME_HI] = name_lo, name_hi
    metrics[m, M_UNIT_LO], metrics[m, M_UNIT_HI] = unit_lo, unit_hi
    metrics[m, M_ROWS] = rows - metrics[m, M_FIRST_ROW]
    h1, h2 = hash_bytes(data, name_lo, name_hi, FNV_OFFSET, ALT_OFFSET)
    h1, h2 = hash_bytes(data, unit_lo, unit_hi, h1, h2)
    shape = np.uint64(kind * 64 + metrics[m, M_MONOTONIC] * 32 + (metrics[m, M_TEMPORALITY] & 31))
    metrics[m, M_HASH1] = np.int64((h1 ^ shape) * _FNV_PRIME)
    metrics[m, M_HASH2] = np.int64((h2 ^ shape) * _ALT_PRIME)
    return pos, rows


@kernel
def _scope_metrics(
    data: NDArray[np.uint8], pos: int, end: int, g: int, scope: int, rows: int,
    n_metrics: int, points: NDArray[np.int64], values: NDArray[np.float64],
    metrics: NDArray[np.int64], bits: NDArray[np.uint64], as_double: NDArray[np.float64],
) -> tuple[int, int, int]:
    """A ``ScopeMetrics``: its metrics (field 2); (status, rows, metrics after)."""
    index = int(np.int64(0))  # not a literal: see scan
    while pos < end:
        key = int(data[pos]) if pos < end else 0x80
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
        if pos < 0:
            return MALFORMED, rows, n_metrics
        field, wire = key >> 3, key & 7
        if field == 2 and wire == 2:  # noqa: PLR2004
            length = int(data[pos]) if pos < end else 0x80
            pos += 1
            if length >= 0x80:  # inline: a call per field costs more than the field
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos:
                return MALFORMED, rows, n_metrics
            if n_metrics >= len(metrics):
                return _TOO_MANY, rows, n_metrics
            m = n_metrics
            n_metrics += 1
            metrics[m, M_GROUP], metrics[m, M_SCOPE], metrics[m, M_INDEX] = g, scope, index
            index += 1
            done, rows = _metric(data, pos, pos + length, m, rows, points, values, metrics,
                                 bits, as_double)
            if done < 0:
                return MALFORMED, rows, n_metrics
            pos += length
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return MALFORMED, rows, n_metrics
    return OK, rows, n_metrics


@kernel
def scan(
    data: NDArray[np.uint8], points: NDArray[np.int64], values: NDArray[np.float64],
    metrics: NDArray[np.int64], groups: NDArray[np.int64], bits: NDArray[np.uint64],
    as_double: NDArray[np.float64],
) -> tuple[int, int, int, int]:
    """Scan a request into the tables; (status, points, metrics, groups) written.

    ``status`` is ``OK`` or negative (malformed, or tables too small). Tables sized by
    ``table_sizes(len(data))`` always suffice. ``bits`` and ``as_double`` are one 8-byte
    buffer seen as uint64 and as float64 (``scratch()``): how a fixed64 becomes a double.
    """
    # np.int64, not 0: numba would compile each callee again for a literal 0 argument.
    rows = n_metrics = n_groups = int(np.int64(0))
    pos, end = 0, len(data)
    while pos < end:
        key = int(data[pos]) if pos < end else 0x80
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
        if pos < 0:
            return MALFORMED, rows, n_metrics, n_groups
        field, wire = key >> 3, key & 7
        if not (field == 1 and wire == 2):  # noqa: PLR2004
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return MALFORMED, rows, n_metrics, n_groups
            continue
        length = int(data[pos]) if pos < end else 0x80
        pos += 1
        if length >= 0x80:  # inline: a call per field costs more than the field
            length, pos = read_varint(data, pos - 1, end)
        if pos < 0 or length < 0 or length > end - pos or n_groups >= len(groups):
            return MALFORMED, rows, n_metrics, n_groups
        stop = pos + length
        status, rows, n_metrics = _resource_metrics(
            data, pos, stop, n_groups, rows, n_metrics, points, values, metrics, groups, bits,
            as_double)
        if status < 0:
            return status, rows, n_metrics, n_groups
        n_groups += 1
        pos = stop
    return OK, rows, n_metrics, n_groups


@kernel
def _resource_metrics(
    data: NDArray[np.uint8], pos: int, end: int, g: int, rows: int, n_metrics: int,
    points: NDArray[np.int64], values: NDArray[np.float64], metrics: NDArray[np.int64],
    groups: NDArray[np.int64], bits: NDArray[np.uint64], as_double: NDArray[np.float64],
) -> tuple[int, int, int]:
    """A ``ResourceMetrics``: the hash of its resource (1), its scopes (2)."""
    h1, h2 = FNV_OFFSET, ALT_OFFSET
    scope = int(np.int64(0))  # not a literal: see scan
    while pos < end:
        key = int(data[pos]) if pos < end else 0x80
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
        if pos < 0:
            return MALFORMED, rows, n_metrics
        field, wire = key >> 3, key & 7
        if (field == 1 or field == 2) and wire == 2:  # noqa: PLR1714, PLR2004
            length = int(data[pos]) if pos < end else 0x80
            pos += 1
            if length >= 0x80:  # inline: a call per field costs more than the field
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos:
                return MALFORMED, rows, n_metrics
            if field == 1:
                h1, h2 = hash_bytes(data, pos, pos + length, h1, h2)
            else:
                status, rows, n_metrics = _scope_metrics(
                    data, pos, pos + length, g, scope, rows, n_metrics, points, values,
                    metrics, bits, as_double)
                if status < 0:
                    return status, rows, n_metrics
                scope += 1
            pos += length
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return MALFORMED, rows, n_metrics
    groups[g, G_HASH1], groups[g, G_HASH2] = np.int64(h1), np.int64(h2)
    return OK, rows, n_metrics


def scratch() -> tuple[NDArray[np.uint64], NDArray[np.float64]]:
    """The 8-byte buffer ``scan`` reinterprets words in, as uint64 and as float64."""
    bits = np.zeros(1, np.uint64)
    return bits, bits.view(np.float64)


def table_sizes(n_bytes: int) -> tuple[int, int, int]:
    """Rows of the point, metric and group tables that a request of ``n_bytes`` may need.

    Every point, metric and group costs at least two bytes (a tag and a length).
    """
    bound = n_bytes // 2 + 1
    return bound, bound, bound
