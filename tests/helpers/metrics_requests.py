"""OTLP metrics requests for the compiled-path tests: every kind, odd points, SDK-encoded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

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

from otel_anomaly.processors.testing import CUMULATIVE, SECOND, counter, gauge, histogram, kv

T0 = 1_700_000_000 * SECOND
_NO_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


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
