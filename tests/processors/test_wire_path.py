"""The compiled metrics path (request bytes) gives what the Python walk (message) gives.

Two engines with equal settings and one clock ingest the same requests: one from the
decoded message only (the walk), one with the request's bytes too (``signals.wire_path``).
Every result must match: counts, scores, events, series labels, and the stream table a
checkpoint saves. Each scenario also checks that the compiled path did run.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.engine_twins import assert_same_outcome, restarted
from helpers.metrics_requests import T0, mixed_round, request_of, sdk_requests, updown
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.span_coverage import SPANMETRICS_SCOPE
from otel_anomaly.processors.testing import CUMULATIVE, DELTA, SECOND, FakeClock, gauge
from otel_anomaly.processors.types import IngestResult


class Twins:
    """Two engines on one clock: ``walk`` gets messages, ``wire`` messages and bytes."""

    def __init__(self, **settings: Any) -> None:
        self.clock = FakeClock(1000.0)
        self.settings = EngineSettings(clock=self.clock, **settings)
        self.walk = Engine(self.settings)
        self.wire = Engine(self.settings)
        self.compiled = 0  # compiled points the wire engine scored, over every request

    def ingest(self, request: ExportMetricsServiceRequest, data: bytes | None = None
               ) -> IngestResult:
        """Ingest into both; assert equal outcomes; return the walk's result."""
        expected = self.walk.ingest("metrics", request)
        out_before = self.wire.wire.handled if self.wire.wire else 0
        got = self.wire.ingest("metrics", request,
                               request.SerializeToString() if data is None else data)
        assert self.wire.wire is not None
        self.compiled += self.wire.wire.handled - out_before
        assert_same(self.walk, self.wire, expected, got)
        return expected

    def evict(self) -> None:
        a, b = self.walk.evict_expired(), self.wire.evict_expired()
        assert a.tolist() == b.tolist()

    def restore(self) -> None:
        """Both engines restart from their own checkpoints."""
        self.walk = restarted(self.walk, self.settings)
        self.wire = restarted(self.wire, self.settings)


def assert_same(walk: Engine, wire: Engine, expected: IngestResult, got: IngestResult) -> None:
    assert_same_outcome(walk, wire, expected, got)
    assert repr(wire.state_dict()["sources"]) == repr(walk.state_dict()["sources"])
    assert wire.deploys.state_dict().keys() == walk.deploys.state_dict().keys()


def test_mixed_requests_match_the_walk() -> None:
    twins = Twins()
    events = 0
    for r in range(60):
        result = twins.ingest(mixed_round(r, reverse=r % 3 == 1))
        events += len(result.events)
        twins.clock.advance(10.0)
    assert events > 0, "the scenario should open an anomaly"
    assert twins.compiled > 60 * 8, "the compiled path did not score most gauge points"


def test_out_of_order_and_duplicates_within_and_across_requests() -> None:
    twins = Twins()
    for r, offsets in enumerate([(0, 1, 2), (2, 1, 3), (3, 3, 4), (0,), (5, 6, 4)]):
        points = [(T0 + o * SECOND, float(o + r)) for o in offsets]
        twins.ingest(request_of(({"service.name": "s"}, [
            gauge("g", points, attributes={"k": "v"}), gauge("h", points[:1])])))
    assert twins.compiled > 0


def test_series_limit_is_reached_the_same_way() -> None:
    twins = Twins(max_series=5)
    for r in range(4):
        ts = T0 + r * SECOND
        result = twins.ingest(request_of(({"service.name": "s"}, [
            gauge("g", [(ts, 1.0 + r)], attributes={"i": str(i)}) for i in range(8)])))
    assert result.rejected.get("series_limit", 0) + result.skipped.get("series_limit", 0) > 0
    assert twins.compiled > 0


def test_eviction_and_reused_slots_start_the_cache_over() -> None:
    twins = Twins(series_ttl_s=60.0)
    for r in range(12):
        ts = T0 + r * 10 * SECOND
        # "old" stops after round 3 and is evicted; "new" then takes its slot.
        names = ["keep", "old"] if r < 4 else ["keep", "new"]
        twins.ingest(request_of(({"service.name": "s"}, [
            gauge(n, [(ts, float(r % 4))], attributes={"x": "1"}) for n in names])))
        twins.clock.advance(30.0)
        twins.evict()
    assert twins.compiled > 0


def test_restored_engines_match() -> None:
    twins = Twins()
    for r in range(40):
        if r == 20:
            twins.restore()
        twins.ingest(mixed_round(r))
        twins.clock.advance(10.0)
    assert twins.compiled > 0


def test_bytes_that_are_not_the_request_fall_back_to_the_walk() -> None:
    twins = Twins()
    request = mixed_round(0)
    data = request.SerializeToString()
    for broken in (data[: len(data) // 2], b"\xff" * 11, b"\x0f"):
        twins.ingest(request, broken)
    assert twins.compiled == 0


def test_spanmetrics_scopes_and_unspecified_temporality_take_the_walk() -> None:
    twins = Twins()
    request = mixed_round(1)
    request.resource_metrics[0].scope_metrics[0].scope.name = SPANMETRICS_SCOPE
    twins.ingest(request)
    odd = updown("no.temporality", [(T0, 1.0)], {})
    odd.sum.aggregation_temporality = 0
    twins.ingest(request_of(({"service.name": "s"}, [odd, gauge("g", [(T0, 1.0)])])))


def test_sdk_requests_match() -> None:
    twins = Twins()
    for request in sdk_requests(8):
        twins.ingest(request)
        twins.clock.advance(10.0)
    assert twins.compiled > 0


@pytest.mark.parametrize("kind", [CUMULATIVE, DELTA])
@pytest.mark.parametrize("monotonic", [True, False])
def test_counters_as_rates_match(kind: int, monotonic: bool) -> None:
    """Resets, restarts, partial intervals, odd start times, repeated and stale points."""
    twins = Twins()
    steps = [(10, 100.0, T0), (20, 150.0, T0), (30, 250.0, T0), (36, 260.0, T0),  # partial
             (40, 5.0, T0), (50, 55.0, T0), (60, 70.0, T0 + 45 * SECOND),  # reset, restart
             (60, 80.0, T0), (55, 1.0, T0), (70, 90.0, 0), (80, 95.0, 2**64 - 1),
             (90, 99.0, 95 * SECOND + T0), (100, 120.0, T0), (110, 130.0, T0)]
    for r, (t, value, start) in enumerate(steps):
        metric = updown("s", [(T0 + t * SECOND, value)], {"a": "b"})
        metric.sum.aggregation_temporality = kind
        metric.sum.is_monotonic = monotonic
        metric.sum.data_points[0].start_time_unix_nano = start
        if r % 2:
            metric.sum.data_points[0].as_double = value + 0.5
        twins.ingest(request_of(({"service.name": "s"}, [metric, gauge("g", [(T0 + r, 1.0)])])))
        twins.clock.advance(10.0)
    assert twins.compiled > len(steps)


def test_a_large_request_matches_and_its_scan_tables_are_not_kept() -> None:
    # Tables are sized by a request's bytes (two a row at most): kept after a 5 MiB request,
    # they would hold hundreds of MiB for every later request.
    twins = Twins(max_series=100_000)
    for minute in range(2):
        metrics = [gauge("queue.depth", [(T0 + minute * 60 * SECOND, float(i % 7))],
                       attributes={"queue": f"q{i}", "padding": "x" * 40})
                   for i in range(60_000)]
        request = request_of(({"service.name": "big"}, metrics))
        assert request.ByteSize() > 5 << 20
        twins.ingest(request)
    assert twins.compiled == 60_000  # the second request's points, all compiled
    assert twins.wire.wire is not None
    assert len(twins.wire.wire._tables.values) == 0
