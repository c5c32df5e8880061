"""A compiled scan of a serialized ``ExportTraceServiceRequest``: spans as rows of numbers.

The traces adapter's walk of a decoded request reads each span's times, kind, name,
status and ids attribute by attribute in Python (about 1 µs a span). This scan reads the
protobuf wire format once and writes one row per span: its resource group, kind, status
code, the byte spans of its name, trace id and span id, and (in a table of their own, as
OTLP's uint64) its start and end times. Names and ids stay bytes in the request until
someone needs them: ``kept_spans`` takes the rows whose times the walk's checks accept
(with their end, duration, error flag and ids as columns), and ``operations`` tells a
request's operations apart by comparing name bytes, so only one name per operation is
ever decoded, and ``operation_names`` writes them as one key, so a request naming the
operations of an earlier one is known in one lookup.

The structure follows the messages (``scan`` → ``_resource_spans`` → ``_scope_spans`` →
``_span`` → ``_status``); each reads fields as protobuf parsers do: unknown fields are
skipped, a repeated scalar or string keeps its last value, a repeated ``status`` is merged
(its code is the last one set). A field this scan reads that comes with another wire type
(parsers keep it as an unknown field) gives ``UNUSUAL``, and a malformed buffer (or a wire
type of a group) ``MALFORMED``: the caller then walks the decoded message instead, so
behaviour never depends on the scan. Tables too small for the request give ``FULL``
(``count_spans`` says how many rows it takes).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.signals.metrics_wire import (
    ALT_OFFSET,
    FNV_OFFSET,
    fixed64,
    hash_bytes,
    read_varint,
    skip_field,
)

# Columns of the span table (int64).
S_GROUP, S_KIND, S_STATUS, S_NAME_LO, S_NAME_HI, S_TRACE_LO, S_TRACE_HI, S_ID_LO, S_ID_HI = (
    range(9))
SPAN_COLUMNS = 9
# Columns of the times table (uint64, as OTLP's fixed64).
T_START, T_END = range(2)

OK, MALFORMED, UNUSUAL, FULL = 0, -1, -2, -3

_MIX = np.uint64(0x9E3779B97F4A7C15)


@kernel
def _length(data: NDArray[np.uint8], pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's length and the position of its payload (-1 if malformed)."""
    length = int(data[pos]) if pos < end else 0x80
    pos += 1
    if length >= 0x80:
        length, pos = read_varint(data, pos - 1, end)
    if pos < 0 or length < 0 or length > end - pos:
        return 0, -1
    return length, pos


@kernel
def _status(data: NDArray[np.uint8], pos: int, end: int, code: int) -> tuple[int, int]:
    """A ``Status`` merged over ``code``: (its code, status of the read)."""
    while pos < end:
        key = int(data[pos])
        pos += 1
        if key >= 0x80:
            key, pos = read_varint(data, pos - 1, end)
            if pos < 0:
                return code, MALFORMED
        field, wire = key >> 3, key & 7
        if field == 3 and wire == 0:  # noqa: PLR2004 - field numbers of the message
            raw, pos = read_varint(data, pos, end)
            code = int(np.int32(raw & 0xFFFFFFFF))  # an enum is an int32
        elif field == 3:  # noqa: PLR2004
            return code, UNUSUAL
        else:
            pos = skip_field(data, pos, end, wire)
        if pos < 0:
            return code, MALFORMED
    return code, OK


@kernel
def _span(  # noqa: PLR0912 - one branch per field of the message
    data: NDArray[np.uint8], pos: int, end: int, row: int, spans: NDArray[np.int64],
    times: NDArray[np.uint64],
) -> int:
    """One ``Span`` into ``spans[row]`` and ``times[row]``; its read status."""
    kind = code = 0
    start = stop = np.uint64(0)
    name_lo = name_hi = trace_lo = trace_hi = id_lo = id_hi = 0
    while pos < end:
        key = int(data[pos])
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
            if pos < 0:
                return MALFORMED
        field, wire = key >> 3, key & 7
        if wire == 2 and (field == 1 or field == 2 or field == 5 or field == 15):  # noqa: PLR1714, PLR2004
            # ``_length`` inline, here and per span in ``_scope_spans``: the calls were half
            # of the scan (97 -> 50 ns a span of the ingest benchmark's requests).
            length = int(data[pos]) if pos < end else 0x80
            pos += 1
            if length >= 0x80:
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos:
                return MALFORMED
            if field == 1:
                trace_lo, trace_hi = pos, pos + length
            elif field == 2:  # noqa: PLR2004
                id_lo, id_hi = pos, pos + length
            elif field == 5:  # noqa: PLR2004
                name_lo, name_hi = pos, pos + length
            else:
                code, status = _status(data, pos, pos + length, code)
                if status != OK:
                    return status
            pos += length
        elif wire == 1 and (field == 7 or field == 8):  # noqa: PLR1714, PLR2004
            if pos + 8 > end:
                return MALFORMED
            if field == 7:  # noqa: PLR2004
                start = fixed64(data, pos)
            else:
                stop = fixed64(data, pos)
            pos += 8
        elif wire == 0 and field == 6:  # noqa: PLR2004
            raw, pos = read_varint(data, pos, end)
            kind = int(np.int32(raw & 0xFFFFFFFF))  # an enum is an int32
        elif field in (1, 2, 5, 6, 7, 8, 15):
            return UNUSUAL  # a field read here, with another wire type: parsers differ
        else:
            pos = skip_field(data, pos, end, wire)
        if pos < 0:
            return MALFORMED
    spans[row, S_KIND], spans[row, S_STATUS] = kind, code
    spans[row, S_NAME_LO], spans[row, S_NAME_HI] = name_lo, name_hi
    spans[row, S_TRACE_LO], spans[row, S_TRACE_HI] = trace_lo, trace_hi
    spans[row, S_ID_LO], spans[row, S_ID_HI] = id_lo, id_hi
    times[row, T_START], times[row, T_END] = start, stop
    return OK


@kernel
def _scope_spans(
    data: NDArray[np.uint8], pos: int, end: int, g: int, rows: int, spans: NDArray[np.int64],
    times: NDArray[np.uint64],
) -> tuple[int, int]:
    """A ``ScopeSpans``: its spans (field 2) from row ``rows`` on; (status, rows after)."""
    while pos < end:
        key = int(data[pos])
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
            if pos < 0:
                return MALFORMED, rows
        field, wire = key >> 3, key & 7
        if field == 2 and wire == 2:  # noqa: PLR2004
            length = int(data[pos]) if pos < end else 0x80  # ``_length`` inline (``_span``)
            pos += 1
            if length >= 0x80:
                length, pos = read_varint(data, pos - 1, end)
            if pos < 0 or length < 0 or length > end - pos:
                return MALFORMED, rows
            if rows >= len(spans):
                return FULL, rows  # the tables are too small: count, and scan again
            spans[rows, S_GROUP] = g
            status = _span(data, pos, pos + length, rows, spans, times)
            if status != OK:
                return status, rows
            rows += 1
            pos += length
        elif field == 2:  # noqa: PLR2004
            return UNUSUAL, rows
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return MALFORMED, rows
    return OK, rows


@kernel
def _resource_spans(
    data: NDArray[np.uint8], pos: int, end: int, g: int, rows: int, spans: NDArray[np.int64],
    times: NDArray[np.uint64],
) -> tuple[int, int]:
    """A ``ResourceSpans``: its scopes' spans (field 2); (status, rows after)."""
    while pos < end:
        key = int(data[pos])
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
            if pos < 0:
                return MALFORMED, rows
        field, wire = key >> 3, key & 7
        if field == 2 and wire == 2:  # noqa: PLR2004
            length, pos = _length(data, pos, end)
            if pos < 0:
                return MALFORMED, rows
            status, rows = _scope_spans(data, pos, pos + length, g, rows, spans, times)
            if status != OK:
                return status, rows
            pos += length
        elif field == 2:  # noqa: PLR2004
            return UNUSUAL, rows
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return MALFORMED, rows
    return OK, rows


@kernel
def _count_field(data: NDArray[np.uint8], pos: int, end: int, wanted: int) -> int:
    """Length-delimited entries of field ``wanted`` in a message; < 0 if malformed."""
    n = 0
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return MALFORMED
        if key == (wanted << 3 | 2):
            n += 1
        pos = skip_field(data, pos, end, key & 7)
        if pos < 0:
            return MALFORMED
    return n


@kernel
def _count_scopes(data: NDArray[np.uint8], pos: int, end: int) -> int:
    """Spans in a ``ResourceSpans``: entries of field 2 of each of its scopes (field 2)."""
    n = 0
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return MALFORMED
        if key == (2 << 3 | 2):
            length, pos = _length(data, pos, end)
            if pos < 0:
                return MALFORMED
            inner = _count_field(data, pos, pos + length, 2)
            if inner < 0:
                return inner
            n += inner
            pos += length
        else:
            pos = skip_field(data, pos, end, key & 7)
            if pos < 0:
                return MALFORMED
    return n


@kernel
def count_spans(data: NDArray[np.uint8]) -> int:
    """Spans in a request's bytes (the rows ``scan`` needs); < 0 if malformed."""
    n = 0
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos, end)
        if pos < 0:
            return MALFORMED
        if key == (1 << 3 | 2):
            length, pos = _length(data, pos, end)
            if pos < 0:
                return MALFORMED
            inner = _count_scopes(data, pos, pos + length)
            if inner < 0:
                return inner
            n += inner
            pos += length
        else:
            pos = skip_field(data, pos, end, key & 7)
            if pos < 0:
                return MALFORMED
    return n


@kernel
def scan(data: NDArray[np.uint8], spans: NDArray[np.int64], times: NDArray[np.uint64],
         ) -> tuple[int, int, int]:
    """Scan a request into the tables; (status, spans, resource groups) read.

    ``status`` is ``OK``, ``UNUSUAL`` or ``MALFORMED`` (see the module doc), or ``FULL``
    when the tables have fewer rows than the request has spans (``count_spans`` says how
    many it needs).
    """
    # np.int64, not 0: numba would compile each callee again for a literal 0 argument.
    rows = n_groups = int(np.int64(0))
    pos, end = 0, len(data)
    while pos < end:
        key = int(data[pos])
        pos += 1
        if key >= 0x80:  # inline: a call per field costs more than the field
            key, pos = read_varint(data, pos - 1, end)
            if pos < 0:
                return MALFORMED, rows, n_groups
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            length, pos = _length(data, pos, end)
            if pos < 0:
                return MALFORMED, rows, n_groups
            status, rows = _resource_spans(data, pos, pos + length, n_groups, rows, spans,
                                           times)
            if status != OK:
                return status, rows, n_groups
            n_groups += 1
            pos += length
        elif field == 1:
            return UNUSUAL, rows, n_groups
        else:
            pos = skip_field(data, pos, end, wire)
            if pos < 0:
                return MALFORMED, rows, n_groups
    return OK, rows, n_groups


@kernel
def operations(
    data: NDArray[np.uint8], spans: NDArray[np.int64], rows: NDArray[np.int64],
    op_of: NDArray[np.int64], first_row: NDArray[np.int64],
) -> int:
    """Number the operations (resource group, kind, name) of ``rows`` in order of appearance.

    ``op_of[i]`` is row ``rows[i]``'s operation; ``first_row[op]`` the first row of each
    (both sized ``len(rows)``). Returns how many operations there are. Names are compared
    byte for byte: equal bytes, equal names (a hash only picks where to look).
    """
    capacity = 16
    while capacity < 2 * len(rows):
        capacity *= 2
    mask = capacity - 1
    slots = np.full(capacity, -1, np.int64)
    n_ops = 0
    for i in range(len(rows)):
        r = rows[i]
        h1, _ = hash_bytes(data, spans[r, S_NAME_LO], spans[r, S_NAME_HI], FNV_OFFSET,
                           ALT_OFFSET)
        h = (h1 ^ np.uint64(spans[r, S_GROUP] * 64 + (spans[r, S_KIND] & 63))) * _MIX
        at = int(h >> np.uint64(33)) & mask
        # Probe until a free slot or the same operation (compared inline: as a call per
        # span it cost a quarter of this kernel).
        lo, hi = spans[r, S_NAME_LO], spans[r, S_NAME_HI]
        while slots[at] >= 0:
            other = first_row[slots[at]]
            if (spans[other, S_GROUP] == spans[r, S_GROUP]
                    and spans[other, S_KIND] == spans[r, S_KIND]
                    and spans[other, S_NAME_HI] - spans[other, S_NAME_LO] == hi - lo):
                offset = spans[other, S_NAME_LO] - lo
                same = True
                for k in range(lo, hi):
                    if data[k] != data[k + offset]:
                        same = False
                        break
                if same:
                    break
            at = (at + 1) & mask
        if slots[at] < 0:
            slots[at] = n_ops
            first_row[n_ops] = r
            n_ops += 1
        op_of[i] = slots[at]
    return n_ops


@kernel
def operation_names(data: NDArray[np.uint8], spans: NDArray[np.int64],
                    first_row: NDArray[np.int64], out: NDArray[np.uint8]) -> int:
    """Each operation's group, kind and name bytes, one after another, into ``out``.

    Operation ``op`` is the one of row ``first_row[op]``; each is written as its group,
    kind and name length (8 bytes each, little-endian) then the name. Equal bytes, the
    same operations in the same order: a request's key to what an earlier one resolved.
    Returns the length written, or minus the length needed if ``out`` is too short.
    """
    need = 0
    for op in range(len(first_row)):
        r = first_row[op]
        need += 24 + spans[r, S_NAME_HI] - spans[r, S_NAME_LO]
    if need > len(out):
        return -need
    pos = 0
    for op in range(len(first_row)):
        r = first_row[op]
        lo, hi = spans[r, S_NAME_LO], spans[r, S_NAME_HI]
        for value in (spans[r, S_GROUP], spans[r, S_KIND], hi - lo):
            for k in range(8):
                out[pos + k] = np.uint8((value >> (8 * k)) & 0xFF)
            pos += 8
        for k in range(lo, hi):
            out[pos] = data[k]
            pos += 1
    return pos


_STATUS_CODE_ERROR = 2  # Status.STATUS_CODE_ERROR


@kernel
def kept_spans(  # noqa: PLR0913 - the table, the clock and one output column each
    spans: NDArray[np.int64], times: NDArray[np.uint64], latest: np.uint64,
    rows: NDArray[np.int64], end_ns: NDArray[np.int64], duration_ms: NDArray[np.float64],
    errors: NDArray[np.bool_], ids: NDArray[np.int64], reasons: NDArray[np.int64],
) -> int:
    """The spans whose times ``traces.time_checks`` accepts, as columns; how many.

    Fills the first ``kept`` entries of ``rows`` (table rows), ``end_ns``, ``duration_ms``,
    ``errors`` and ``ids`` (trace id and span id byte ranges), and ``reasons`` with the
    refused: missing timestamp, future timestamp, negative duration (the checks' order:
    the end before the start). One pass instead of twenty array steps a request.
    """
    kept = missing = future = negative = 0
    for r in range(len(times)):
        start, end = times[r, T_START], times[r, T_END]
        if end == 0:
            missing += 1
        elif end > latest:
            future += 1
        elif start == 0:
            missing += 1
        elif start > latest:
            future += 1
        elif end < start:
            negative += 1
        else:
            rows[kept] = r
            end_ns[kept] = np.int64(end)
            duration_ms[kept] = (np.int64(end) - np.int64(start)) / 1e6
            errors[kept] = spans[r, S_STATUS] == _STATUS_CODE_ERROR
            ids[kept, 0], ids[kept, 1] = spans[r, S_TRACE_LO], spans[r, S_TRACE_HI]
            ids[kept, 2], ids[kept, 3] = spans[r, S_ID_LO], spans[r, S_ID_HI]
            kept += 1
    reasons[0], reasons[1], reasons[2] = missing, future, negative
    return kept
