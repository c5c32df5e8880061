"""The compiled spans path (request bytes) gives what the traces walk (message) gives.

Two engines with equal settings and one clock ingest the same requests: one from the
decoded message only (the walk), one with the request's bytes too (``signals.span_path``).
Every result must match: counts by reason, scores, events with their exemplars, series,
windows, pooled durations, versions and the services seen sending spans. Each scenario
also checks how much the compiled path did.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.engine_twins import assert_same_outcome, restarted
from helpers.traces_requests import T0, field, ids, mixed_round, raw_request, request_of
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import SPAN_DURATION_METRIC, EngineSettings
from otel_anomaly.processors.signals import span_path
from otel_anomaly.processors.testing import SECOND, FakeClock, span
from otel_anomaly.processors.types import IngestResult


class Twins:
    """Two engines on one clock: ``walk`` gets messages, ``wire`` messages and bytes."""

    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock(T0 / SECOND)
        self.settings = EngineSettings(clock=self.clock, **settings)
        self.walk = Engine(self.settings)
        self.wire = Engine(self.settings)
        self.compiled = 0  # span outliers the wire engine scored from slots
        self.events = 0
        self.exemplars = 0  # events that carry a trace id

    def ingest(self, request: ExportTraceServiceRequest, data: bytes | None = None
               ) -> IngestResult:
        """Ingest into both; assert equal outcomes; return the walk's result."""
        expected = self.walk.ingest("traces", request)
        assert self.wire.spans is not None
        before = self.wire.spans.handled
        got = self.wire.ingest("traces", request,
                               request.SerializeToString() if data is None else data)
        self.compiled += self.wire.spans.handled - before
        assert_same(self.walk, self.wire, expected, got)
        self.events += len(expected.events)
        self.exemplars += sum(bool(event.trace_id) for event in expected.events)
        return expected

    def restore(self) -> None:
        """Both engines restart from their own checkpoints."""
        self.walk = restarted(self.walk, self.settings)
        self.wire = restarted(self.wire, self.settings)


def assert_same(walk: Engine, wire: Engine, expected: IngestResult, got: IngestResult) -> None:
    assert_same_outcome(walk, wire, expected, got)
    walked, compiled = walk.state_dict(), wire.state_dict()
    for part in ("adapters", "span_coverage", "deploys", "index"):
        assert repr(compiled[part]) == repr(walked[part]), part


def test_mixed_requests_match_the_walk() -> None:
    twins = Twins()
    for r in range(90):
        twins.ingest(mixed_round(r, version="1.0" if r < 60 else "1.1"))
        twins.clock.advance(1.0)
    assert twins.events > 0 and twins.exemplars > 0, "slow spans should open span outliers"
    assert twins.compiled > 80 * 26, "the compiled path did not score most span outliers"
    assert twins.walk.deploys.deploys_total == 1  # 1.0 -> 1.1 (the first version is none)


def test_operations_known_from_earlier_requests_match_the_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The labels of operations seen before are kept (``_KNOWN_OPERATIONS`` of them): with
    # room for 2 of the requests' 4 operations (one name of two kinds), the kept ones are
    # forgotten and found again, and nothing differs from the walk.
    monkeypatch.setattr(span_path, "_KNOWN_OPERATIONS", 2)
    twins = Twins()
    for r in range(60):
        ts = T0 + r * SECOND
        spans = [span(name, ts + i * 1000, 1.0 + i % 5, kind=1 + i % 2, **ids(r, i))
                 for i, name in enumerate(["GET /a", "café", "訂單", "GET /a"] * 3)]
        twins.ingest(request_of(({"service.name": "s"}, [spans])))
        twins.clock.advance(1.0)
    assert twins.compiled > 50 * 12
    assert twins.wire.spans is not None
    assert len(twins.wire.spans._operations) <= 2  # noqa: SLF001 -- the bound itself


@pytest.mark.parametrize("key_bytes", [1 << 16, 8])
def test_requests_known_from_earlier_ones_match_the_walk(
    monkeypatch: pytest.MonkeyPatch, key_bytes: int,
) -> None:
    # Requests' operation lists are kept (``_KNOWN_REQUESTS`` of them, keys up to
    # ``_MAX_KEY_BYTES``): with room for one list, three that take turns (one a list of the
    # same operations in another order) are forgotten and found again; with keys too long
    # to keep, none is kept. Nothing differs from the walk.
    monkeypatch.setattr(span_path, "_KNOWN_REQUESTS", 1)
    monkeypatch.setattr(span_path, "_MAX_KEY_BYTES", key_bytes)
    twins = Twins()
    lists = [["GET /a", "POST /b"], ["POST /b", "GET /a"], ["GET /a", "GET /c"]]
    for r in range(60):
        ts = T0 + r * SECOND
        names = lists[r % 3] if r % 10 else lists[0]
        spans = [span(name, ts + i * 1000, 1.0 + i % 5, **ids(r, i))
                 for i, name in enumerate(names * 3)]
        twins.ingest(request_of(({"service.name": "s"}, [spans]),
                                ({"service.name": "t"}, [spans[:2]])))
        twins.clock.advance(1.0)
    assert twins.compiled > 50 * 8
    assert twins.wire.spans is not None
    spans = twins.wire.spans
    kept = (spans._request_labels, spans._request_groups)  # noqa: SLF001 -- the bounds
    assert [len(k) for k in kept] == [1 if key_bytes > 8 else 0] * 2  # noqa: PLR2004


def test_new_operations_and_expired_series_go_by_key_then_by_slot() -> None:
    twins = Twins(series_ttl_s=30.0)
    for r in range(120):
        ts = T0 + r * SECOND
        names = ["a", "b"] if r < 40 or r >= 80 else ["a", "c"]  # b expires, then returns
        spans = [span(name, ts + i * 1000, 1.0 + i, **ids(r, i))
                 for i, name in enumerate(names * 3)]
        twins.ingest(request_of(({"service.name": "s"}, [spans])))
        twins.clock.advance(1.0)
        if r % 10 == 0:
            assert (twins.walk.evict_expired().tolist()
                    == twins.wire.evict_expired().tolist())
    assert twins.compiled > 0


@pytest.mark.parametrize("operations", [9, 15])
def test_series_limit_is_reached_the_same_way(operations: int) -> None:
    # 9 operations: their outlier series fit, their RED series do not all fit; 15: some
    # outlier series never get a slot, so every request's outliers go by key.
    twins = Twins(max_series=12)
    limited = 0
    for r in range(40):
        ts = T0 + r * SECOND
        spans = [span(f"op{i % operations}", ts + i * 1000, 1.0 + i % 4, **ids(r, i))
                 for i in range(3 * operations)]
        result = twins.ingest(request_of(({"service.name": "s"}, [spans])))
        limited += result.skipped.get("series_limit", 0)
        twins.clock.advance(1.0)
    assert limited > 0
    assert (twins.compiled > 0) == (operations < 12)  # noqa: PLR2004


def test_restored_engines_match() -> None:
    twins = Twins()
    for r in range(70):
        if r in (20, 51):
            twins.restore()
        twins.ingest(mixed_round(r))
        twins.clock.advance(1.0)
    assert twins.compiled > 0 and twins.events > 0


def test_without_span_outliers_only_windows_count() -> None:
    twins = Twins(span_outliers=False)
    for r in range(40):
        twins.ingest(mixed_round(r))
        twins.clock.advance(1.0)
    assert twins.compiled == 0
    assert not any(twins.walk.series_key(int(s)).metric == SPAN_DURATION_METRIC
                   for s in twins.walk.index.live_slots())


def _odd_spans(ts: int) -> list[bytes]:
    """Spans encoded as parsers read them but SDKs do not write them."""
    return [
        # The name twice (the last counts), two statuses: an error code, then a message.
        field(5, 2, b"first") + field(7, 1, ts) + field(8, 1, ts + 10**6) + field(5, 2, b"last")
        + field(15, 2, field(3, 0, 2)) + field(15, 2, field(2, 2, b"boom")),
        # Unknown fields of every wire type; a kind beyond int32, then a negative one.
        field(99, 0, 7) + field(98, 1, 1) + field(97, 2, b"x") + field(96, 5, 3)
        + field(6, 0, 2**32 + 3) + field(5, 2, "ünïcode".encode()) + field(7, 1, ts)
        + field(8, 1, ts + 3 * 10**6) + field(1, 2, b"\x01" * 16) + field(2, 2, b"\x02" * 8),
        field(6, 0, -1) + field(5, 2, b"neg") + field(7, 1, ts) + field(8, 1, ts + 1),
        # Ids given twice (the last counts); a status code given twice (the last counts);
        # a kind of no known value.
        field(1, 2, b"\x03" * 16) + field(1, 2, b"\x04" * 16) + field(5, 2, b"ids")
        + field(7, 1, ts) + field(8, 1, ts + 2) + field(15, 2, field(3, 0, 2) + field(3, 0, 1))
        + field(6, 0, 9),
    ]


def test_encodings_parsers_merge_match_the_walk() -> None:
    """Repeated fields (the last wins; statuses merge), unknown fields, odd enum values."""
    twins = Twins()
    for r in range(3):
        data = raw_request({"service.name": "raw"}, *_odd_spans(T0 + r * SECOND))
        request = ExportTraceServiceRequest.FromString(data)
        first = request.resource_spans[0].scope_spans[0].spans[0]
        assert (first.name, first.status.code, first.status.message) == ("last", 2, "boom")
        twins.ingest(request, data)
        twins.clock.advance(1.0)
    assert twins.compiled == 2 * 4  # the first request's operations were new


def test_requests_the_scan_does_not_model_take_the_walk() -> None:
    twins = Twins()
    ts = T0 + SECOND
    wrong_wire = field(5, 0, 3) + field(7, 1, ts) + field(8, 1, ts + 10)  # a varint name
    data = raw_request({"service.name": "raw"}, wrong_wire)
    request = ExportTraceServiceRequest.FromString(data)
    twins.ingest(request, data)
    good = request_of(({"service.name": "s"}, [[span("a", ts, 1.0)]]))
    other = request_of(({"service.name": "s"}, [[span("b", ts, 1.0), span("c", ts, 1.0)]]))
    encoded = good.SerializeToString()
    for broken in (encoded[: len(encoded) // 2], b"\xff" * 11, b"\x0f",
                   other.SerializeToString(), b""):
        twins.ingest(good, broken)
    assert twins.compiled == 0


def test_a_large_request_matches_and_its_scan_tables_are_not_kept() -> None:
    twins = Twins()
    n = 70_000
    assert n > span_path._KEEP_ROWS  # noqa: SLF001 - tables kept up to this many spans
    for r in range(2):
        ts = T0 + r * SECOND
        spans = [span(f"op{i % 50}", ts + i, 1.0 + i % 7, **ids(r, i)) for i in range(n)]
        twins.ingest(request_of(({"service.name": "big"}, [spans])))
    assert twins.compiled == n
    assert twins.wire.spans is not None
    assert len(twins.wire.spans._spans) == 0  # noqa: SLF001 - the kept table


def test_empty_requests_and_resources_without_spans_match() -> None:
    twins = Twins()
    twins.ingest(ExportTraceServiceRequest())
    twins.ingest(request_of(({"service.name": "a"}, []), ({"service.name": "b"}, [[]])))
    twins.ingest(request_of(({"service.name": "a"}, [[Span()]])))
    assert twins.compiled == 0
