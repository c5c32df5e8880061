"""OTLP traces requests for the compiled spans path tests: many resources, odd spans, raw bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_anomaly.processors.testing import SECOND, kv, span

T0 = 1_700_000_000 * SECOND
NAMES = ("GET /cart", "POST /checkout", "café ☕ /menü", "訂單查詢", "")


def request_of(*groups: tuple[dict[str, Any], Sequence[Sequence[Span]]],
               ) -> ExportTraceServiceRequest:
    """One resource group per ``(resource attributes, [spans of each scope])``."""
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=kv(resource)), scope_spans=[
            ScopeSpans(scope=InstrumentationScope(name=f"scope{s}"), spans=list(spans))
            for s, spans in enumerate(scopes)])
        for resource, scopes in groups])


def ids(r: int, i: int) -> dict[str, bytes]:
    """A distinct trace and span id per round and span."""
    return {"trace_id": (r * 1000 + i).to_bytes(16, "big"),
            "span_id": (r * 1000 + i + 1).to_bytes(8, "big")}


def odd_spans(r: int, ts: int) -> list[Span]:
    """Spans the checks refuse or skip: no times, future, negative, late, empty."""
    late = T0 - 60 * SECOND  # a window long closed once the run is under way
    spans = [
        Span(name="no end", start_time_unix_nano=ts),
        Span(name="no start", end_time_unix_nano=ts),
        Span(name="future", start_time_unix_nano=ts, end_time_unix_nano=2**63 + 5),
        Span(name="future start", start_time_unix_nano=2**62 + 1, end_time_unix_nano=ts),
        Span(name="negative", start_time_unix_nano=ts + SECOND, end_time_unix_nano=ts),
        Span(),
    ]
    if r > 3:
        spans.append(span("GET /cart", late, 3.0, **ids(r, 999)))
    return spans


def mixed_round(r: int, *, version: str = "1.0") -> ExportTraceServiceRequest:
    """Two services, one with two instances; scopes with and without spans; odd spans.

    Durations are steady apart from a slow spell in rounds 50 to 52 (span outliers open
    and close, their events carrying trace ids); errors come and go.
    """
    ts = T0 + r * SECOND
    slow = 25.0 if 50 <= r <= 52 else 1.0  # noqa: PLR2004
    scopes: list[list[Span]] = []
    for host in range(2):
        spans = [span(NAMES[i % len(NAMES)], ts + i * 50_000_000, slow * (5.0 + i % 3 + host),
                      error=(r + i) % 7 == 0, kind=1 + i % 5, **ids(r, 10 * host + i))
                 for i in range(12)]
        scopes.append(spans)
    cart = [span("GET /cart", ts + 7 * SECOND // 10, 2.0 + r % 3, kind=3, **ids(r, 500)),
            span("GET /cart", ts + 2 * SECOND // 10, 2.5, kind=3, **ids(r, 501))]
    return request_of(
        ({"service.name": "checkout", "host.name": "a"}, [scopes[0], [], odd_spans(r, ts)]),
        ({"service.name": "empty"}, []),
        ({"service.name": "checkout", "host.name": "b"}, [scopes[1]]),
        ({"service.name": "cart", "service.version": version}, [cart, []]),
    )


# A hand encoder of the protobuf wire format, for encodings the SDKs never produce.

def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (negative values as their 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    """One field: its key, then a varint (wire 0), 8 bytes (1), a length and bytes (2)."""
    key = varint(number << 3 | wire)
    if wire == 0:
        assert isinstance(payload, int)
        return key + varint(payload)
    if wire == 1:
        assert isinstance(payload, int)
        return key + payload.to_bytes(8, "little")
    if wire == 5:  # noqa: PLR2004
        assert isinstance(payload, int)
        return key + payload.to_bytes(4, "little")
    assert isinstance(payload, bytes)
    return key + varint(len(payload)) + payload


def raw_request(resource: dict[str, Any], *spans: bytes) -> bytes:
    """A request of one resource and one scope holding the given encoded spans."""
    res = Resource(attributes=kv(resource)).SerializeToString()
    scope = b"".join(field(2, 2, s) for s in spans)
    group = field(1, 2, res) + field(2, 2, scope)
    return field(1, 2, group)
