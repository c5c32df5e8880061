"""The wire scan of traces requests reads what the protobuf (upb) decoder reads."""

from __future__ import annotations

import numpy as np
from helpers.traces_requests import T0, field, mixed_round, raw_request, request_of
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_anomaly.processors.signals import traces_wire as w
from otel_anomaly.processors.signals.traces import TracesExtractor, time_checks
from otel_anomaly.processors.testing import SECOND

Scanned = tuple[int, NDArray[np.int64], NDArray[np.uint64], int]


def scan(data: bytes) -> Scanned:
    """(status, spans, times, groups), the tables cut to the rows written."""
    buffer = np.frombuffer(data, np.uint8)
    n = w.count_spans(buffer)
    assert n >= 0
    spans = np.full((n, w.SPAN_COLUMNS), -7, np.int64)
    times = np.full((n, 2), 7, np.uint64)
    status, rows, groups = w.scan(buffer, spans, times)
    return status, spans[:rows], times[:rows], groups


def assert_matches_upb(data: bytes) -> None:
    request = ExportTraceServiceRequest.FromString(data)
    status, spans, times, groups = scan(data)
    assert status == w.OK
    parsed = [(g, s) for g, rs in enumerate(request.resource_spans)
              for ss in rs.scope_spans for s in ss.spans]
    assert (len(spans), groups) == (len(parsed), len(request.resource_spans))
    assert w.count_spans(np.frombuffer(data, np.uint8)) == TracesExtractor.count(request)
    for row, (g, s) in enumerate(parsed):
        r = spans[row]
        assert (r[w.S_GROUP], r[w.S_KIND], r[w.S_STATUS]) == (g, s.kind, s.status.code)
        assert data[r[w.S_NAME_LO]:r[w.S_NAME_HI]].decode() == s.name
        assert data[r[w.S_TRACE_LO]:r[w.S_TRACE_HI]] == s.trace_id
        assert data[r[w.S_ID_LO]:r[w.S_ID_HI]] == s.span_id
        assert times[row].tolist() == [s.start_time_unix_nano, s.end_time_unix_nano]


def test_scan_reads_every_span_as_upb_does() -> None:
    for r in (0, 7, 51):
        assert_matches_upb(mixed_round(r).SerializeToString())
    assert_matches_upb(b"")


def test_repeated_fields_and_odd_values_as_upb_reads_them() -> None:
    ts = T0 + SECOND
    assert_matches_upb(raw_request(
        {"service.name": "raw"},
        field(1, 2, b"\x03" * 16) + field(1, 2, b"\x04" * 16) + field(2, 2, b"\x05")
        + field(2, 2, b"\x06" * 8) + field(5, 2, b"a") + field(5, 2, "é".encode())
        + field(6, 0, 2**32 + 3) + field(7, 1, ts) + field(7, 1, ts + 1) + field(8, 1, 2**64 - 1)
        + field(15, 2, field(3, 0, 2)) + field(15, 2, field(2, 2, b"m")),
        field(6, 0, -3) + field(15, 2, field(3, 0, -1)) + field(16, 5, 1) + field(9, 2, b""),
        field(15, 2, field(3, 0, 1) + field(3, 0, 2**33 + 2)),
        b"",
    ))


def test_fields_read_with_another_wire_type_are_unusual() -> None:
    for span in (field(5, 0, 1), field(7, 0, 1), field(8, 5, 1), field(6, 2, b"x"),
                 field(1, 0, 1), field(2, 1, 1), field(15, 0, 1), field(15, 2, field(3, 2, b""))):
        assert scan(raw_request({"service.name": "s"}, span))[0] == w.UNUSUAL


def test_malformed_bytes_are_refused() -> None:
    data = request_of(({"service.name": "s"}, [[Span(name="abc")]])).SerializeToString()
    for broken in (data[:-1], data[:3], b"\x0a\x05\x12"):
        buffer = np.frombuffer(broken, np.uint8)
        count = w.count_spans(buffer)
        spans = np.empty((max(count, 1), w.SPAN_COLUMNS), np.int64)
        status, _, _ = w.scan(buffer, spans, np.empty((max(count, 1), 2), np.uint64))
        assert count < 0 or status == w.MALFORMED


@st.composite
def spans_of(draw: st.DrawFn) -> Span:
    span = Span(
        name=draw(st.text(max_size=12)),
        kind=draw(st.integers(-(2**31), 2**31 - 1)),  # type: ignore[arg-type]
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        trace_id=draw(st.binary(max_size=17)), span_id=draw(st.binary(max_size=9)),
    )
    if draw(st.booleans()):
        span.status.code = draw(st.sampled_from(list(Status.StatusCode.values())))  # type: ignore[assignment]
    if draw(st.booleans()):
        span.attributes.add(key="k").value.string_value = "v"
    return span


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.lists(spans_of(), max_size=4), max_size=3), max_size=3))
def test_generated_requests_match_upb(groups: list[list[list[Span]]]) -> None:
    request = request_of(*(({"service.name": f"s{g}"}, scopes) for g, scopes in enumerate(groups)))
    assert_matches_upb(request.SerializeToString())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    buffer = np.frombuffer(data, np.uint8)
    n = w.count_spans(buffer)
    if n >= 0:
        spans = np.empty((n, w.SPAN_COLUMNS), np.int64)
        status, rows, _ = w.scan(buffer, spans, np.empty((n, 2), np.uint64))
        # FULL: more spans than counted, where the two read broken bytes differently (the
        # span path then counts, scans again, and leaves such a request to the walk).
        assert status in (w.OK, w.UNUSUAL, w.MALFORMED, w.FULL) and rows <= n


def test_tables_too_small_are_full_and_count_says_how_many_rows_it_takes() -> None:
    data = request_of(({"service.name": "s"}, [[Span(name=f"op{i}") for i in range(5)]]),
                      ).SerializeToString()
    buffer = np.frombuffer(data, np.uint8)
    for rows in (0, 3, 4):
        status, read, _ = w.scan(buffer, np.empty((rows, w.SPAN_COLUMNS), np.int64),
                                 np.empty((rows, 2), np.uint64))
        assert (status, read) == (w.FULL, rows)
    n = w.count_spans(buffer)
    assert n == 5
    status, read, groups = w.scan(buffer, np.empty((n, w.SPAN_COLUMNS), np.int64),
                                  np.empty((n, 2), np.uint64))
    assert (status, read, groups) == (w.OK, 5, 1)


def test_operations_are_told_apart_by_group_kind_and_name_bytes() -> None:
    spans = [Span(name=name, kind=kind) for name, kind in  # type: ignore[arg-type]
             [("a", 2), ("a", 3), ("b", 2), ("a", 2), ("ab", 2), ("", 2), ("b", 2)]]
    data = request_of(({"service.name": "s"}, [spans]), ({"service.name": "t"}, [spans[:2]])
                      ).SerializeToString()
    status, table, _, _ = scan(data)
    assert status == w.OK
    rows = np.arange(len(table), dtype=np.int64)
    op_of, first_row = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
    n_ops = w.operations(np.frombuffer(data, np.uint8), table, rows, op_of, first_row)
    assert op_of.tolist() == [0, 1, 2, 0, 3, 4, 2, 5, 6]
    assert first_row[:n_ops].tolist() == [0, 1, 2, 4, 5, 7, 8]
    picked = rows[[1, 3, 4]]  # numbered among the rows given only
    n_ops = w.operations(np.frombuffer(data, np.uint8), table, picked, op_of, first_row)
    assert (n_ops, op_of[:3].tolist()) == (3, [0, 1, 2])


def test_operation_names_are_one_key_per_list_of_operations() -> None:
    def key(*groups: list[tuple[str, int]]) -> bytes:
        data = request_of(*(({"service.name": "s"}, [[Span(name=n, kind=k)  # type: ignore[arg-type]
                                                       for n, k in ops]]) for ops in groups)
                          ).SerializeToString()
        buffer = np.frombuffer(data, np.uint8)
        status, table, _, _ = scan(data)
        assert status == w.OK
        rows = np.arange(len(table), dtype=np.int64)
        op_of, first_row = np.empty(len(rows), np.int64), np.empty(len(rows), np.int64)
        first_row = first_row[:w.operations(buffer, table, rows, op_of, first_row)]
        need = -w.operation_names(buffer, table, first_row, np.empty(0, np.uint8))
        out = np.empty(need, np.uint8)
        assert w.operation_names(buffer, table, first_row, out) == need
        return out.tobytes()

    base = key([("GET /a", 2), ("b", 3)])
    assert key([("GET /a", 2), ("b", 3), ("GET /a", 2)]) == base  # the same operations
    assert len(base) == 2 * 24 + len("GET /a") + len("b")
    different = [key([("b", 3), ("GET /a", 2)]), key([("GET /a", 2), ("b", 2)]),
                 key([("GET /a", 2), ("c", 3)]), key([("GET /a", 2)], [("b", 3)]),
                 key([("GET /", 2), ("ab", 3)]), key([("GET /a", 2 + 256), ("b", 3)])]
    assert len({base, *different}) == 1 + len(different)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 5, 2**62, 2**63 + 5, 2**64 - 1]),
                          st.sampled_from([0, 1, 5, 2**62, 2**63 + 5, 2**64 - 1]),
                          st.sampled_from([0, 1, 2])), max_size=12),
       st.sampled_from([0, 5, 2**62, 2**64 - 1]))
def test_kept_spans_are_what_the_walks_time_checks_keep(
        rows: list[tuple[int, int, int]], latest: int) -> None:
    """Times near every edge (zero, the clock, past 2**63): the same rows and reasons."""
    n = len(rows)
    times = np.array([(start, end) for start, end, _ in rows], np.uint64).reshape(n, 2)
    spans = np.zeros((n, w.SPAN_COLUMNS), np.int64)
    spans[:, w.S_STATUS] = [status for _, _, status in rows]
    spans[:, w.S_TRACE_LO] = np.arange(n)
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64),
           np.empty(n, np.bool_), np.empty((n, 4), np.int64), np.zeros(3, np.int64))
    kept = w.kept_spans(spans, times, np.uint64(latest), *out)
    usable, reasons = time_checks(times[:, w.T_END], times[:, w.T_START], np.uint64(latest))
    expected = np.flatnonzero(usable)
    assert out[0][:kept].tolist() == expected.tolist()
    assert out[5].tolist() == [reasons["missing_timestamp"], reasons["future_timestamp"],
                               reasons["negative_duration"]]
    ends = times[expected, w.T_END].astype(np.int64)
    assert out[1][:kept].tolist() == ends.tolist()
    assert out[2][:kept].tolist() == ((ends - times[expected, w.T_START].astype(np.int64))
                                      / 1e6).tolist()
    assert out[3][:kept].tolist() == (spans[expected, w.S_STATUS] == 2).tolist()  # noqa: PLR2004
    assert out[4][:kept, 0].tolist() == expected.tolist()
