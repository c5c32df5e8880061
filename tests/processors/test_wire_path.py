"""The compiled metrics path (request bytes) gives what the Python walk (message) gives.

Two engines with equal settings and one clock ingest the same requests: one from the
decoded message only (the walk), one with the request's bytes too (``signals.wire_path``).
Every result must match: counts, scores, events, series labels, and the stream table a
checkpoint saves. Each scenario also checks that the compiled path did run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    DataPointFlags,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource as SdkResource

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.span_coverage import SPANMETRICS_SCOPE
from otel_anomaly.processors.testing import (
    CUMULATIVE,
    DELTA,
    SECOND,
    FakeClock,
    counter,
    gauge,
    histogram,
    kv,
)
from otel_anomaly.processors.types import IngestResult

T0 = 1_700_000_000 * SECOND
_NO_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


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
        for name in ("walk", "wire"):
            engine = Engine(self.settings)
            engine.load_state_dict(getattr(self, name).state_dict())
            setattr(self, name, engine)


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_same(walk: Engine, wire: Engine, expected: IngestResult, got: IngestResult) -> None:
    assert (got.accepted, got.rejected, got.skipped) == (
        expected.accepted, expected.rejected, expected.skipped)
    for name in ("slots", "ts_unix_nano", "values", "expected", "lower", "upper", "score",
                 "flag"):
        np.testing.assert_array_equal(getattr(got.scores, name), getattr(expected.scores, name),
                                      err_msg=name)
    assert len(got.events) == len(expected.events)
    for a, b in zip(expected.events, got.events, strict=True):
        for field in dataclasses.fields(a):
            x, y = getattr(a, field.name), getattr(b, field.name)
            assert _same_float(x, y) if isinstance(x, float) else x == y, field.name
    for slot in set(expected.scores.slots.tolist()):
        assert wire.series_key(slot) == walk.series_key(slot)
        assert wire.series_labels(slot) == walk.series_labels(slot)
    assert repr(wire.state_dict()["sources"]) == repr(walk.state_dict()["sources"])
    assert wire.deploys.state_dict().keys() == walk.deploys.state_dict().keys()


def request_of(*groups: tuple[dict[str, Any], Sequence[Metric]]) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[
        ResourceMetrics(resource=Resource(attributes=kv(resource)),
                        scope_metrics=[ScopeMetrics(metrics=list(metrics))])
        for resource, metrics in groups])


def updown(name: str, points: Sequence[tuple[int, float]], attributes: dict[str, Any]) -> Metric:
    metric = Metric(name=name, unit="{item}")
    metric.sum.aggregation_temporality = CUMULATIVE
    for ts, value in points:
        p = metric.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=ts,
                                       as_int=int(value))
        p.attributes.extend(kv(attributes))
    return metric


def odd_attributes(i: int) -> list[KeyValue]:
    """Attributes of every AnyValue kind, with a repeated key (the first one counts)."""
    values = [
        AnyValue(string_value=f"s{i % 3}"), AnyValue(bool_value=i % 2 == 0),
        AnyValue(int_value=i % 4), AnyValue(double_value=0.5 * (i % 2)),
        AnyValue(bytes_value=bytes([i % 5])),
        AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(
            string_value="x")])),
        AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(
            string_value="v"))])),
        AnyValue(),
    ]
    attrs = [KeyValue(key=f"a{j}", value=v) for j, v in enumerate(values)]
    attrs.append(KeyValue(key="a0", value=AnyValue(string_value="repeated")))
    return attrs


def mixed_round(r: int, *, reverse: bool = False) -> ExportMetricsServiceRequest:
    """Gauges and sums of both temporalities, histograms, odd points, two resources."""
    ts = T0 + r * 10 * SECOND
    level = 100.0 + (40.0 if r == 45 else 0.0)  # within the deploy's grace
    gauges = []
    for i in range(6):
        attrs = {"host": f"h{i % 2}", "cpu": str(i)}
        if reverse:  # the same series, attributes in another byte order
            attrs = dict(reversed(list(attrs.items())))
        gauges.append(gauge("system.cpu.utilization", [(ts, level + i + 0.1 * (r % 7))],
                            attributes=attrs, unit="1"))
    odd = Metric(name="odd.kinds")
    for i in range(4):
        p = odd.gauge.data_points.add(time_unix_nano=ts, as_int=i + r)
        p.attributes.extend(odd_attributes(i))
    bad = Metric(name="bad.points")
    bad.gauge.data_points.add(time_unix_nano=0, as_double=1.0)  # missing
    bad.gauge.data_points.add(time_unix_nano=2**63 + 5, as_double=1.0)  # future
    bad.gauge.data_points.add(time_unix_nano=ts, as_double=float("nan"))
    bad.gauge.data_points.add(time_unix_nano=ts, as_double=float("inf"))
    bad.gauge.data_points.add(time_unix_nano=ts, as_double=2.0, flags=_NO_VALUE)
    repeated = gauge("dup.points", [(ts, 1.0), (ts, 2.0), (ts - SECOND, 3.0), (ts + 1, 4.0)])
    metrics_a = [*gauges, odd, bad, repeated,
                 updown("queue.size", [(ts, 10 + r % 5)], {"q": "a"}),
                 counter("requests", [(ts, 10.0 * r)], start=T0, attributes={"route": "/"}),
                 counter("bytes", [(ts, 5.0 + r)], cumulative=False, start=ts - 10 * SECOND),
                 histogram("latency", [(ts, [1.0, 2.0, float(r % 9)])], [1, 5, 10],
                           start=T0, cumulative=r % 2 == 0)]
    version = "1.0" if r < 30 else "1.1"
    memory = 500.0 if r in (50, 51, 52) else 5.0 + (r % 3)  # an anomaly, in a resource
    metrics_b = [gauge("memory.used", [(ts, memory)], attributes={"pool": "heap"},
                       unit="By"),
                 updown("queue.size", [(ts, 3.0)], {"q": "b"})]
    return request_of(({"service.name": "checkout", "service.version": version}, metrics_a),
                      ({"service.name": "cart", "host.name": "n1"}, metrics_b))


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


def sdk_requests(rounds: int) -> Iterator[ExportMetricsServiceRequest]:
    """Requests as the OpenTelemetry SDK's OTLP exporter encodes them."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=SdkResource.create(
        {"service.name": "sdk", "service.version": "3"}))
    meter = provider.get_meter("wire-test")
    level = meter.create_gauge("queue.depth", unit="{item}")
    updowns = meter.create_up_down_counter("connections")
    requests = meter.create_counter("requests")
    durations = meter.create_histogram("duration", unit="ms")
    for r in range(rounds):
        for i in range(5):
            attrs = {"route": f"/r{i}", "code": 200 + i, "ok": i % 2 == 0, "w": 0.5 * i}
            level.set(10 + i + r % 4, attrs)
            updowns.add(1 if r % 2 else -1, attrs)
            requests.add(i + 1, attrs)
            durations.record(float(i * r % 17), attrs)
        data = reader.get_metrics_data()
        assert data is not None
        yield encode_metrics(data)
    provider.shutdown()


def test_sdk_requests_match() -> None:
    twins = Twins()
    for request in sdk_requests(8):
        twins.ingest(request)
        twins.clock.advance(10.0)
    assert twins.compiled > 0


@pytest.mark.parametrize("kind", [CUMULATIVE, DELTA])
def test_sums_other_than_levels_take_the_walk(kind: int) -> None:
    twins = Twins()
    for r in range(3):
        metric = updown("s", [(T0 + r * SECOND, float(r))], {"a": "b"})
        metric.sum.aggregation_temporality = kind
        metric.sum.is_monotonic = True
        twins.ingest(request_of(({"service.name": "s"}, [metric])))
    assert twins.compiled == 0
