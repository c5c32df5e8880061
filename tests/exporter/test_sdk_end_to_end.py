"""End to end through a started `otel-anomaly run` process, fed by the real OpenTelemetry SDK.

Once over OTLP/gRPC and once over OTLP/HTTP: metrics of every instrument kind, spans and log
records go in; the test scrapes `/metrics`, parses it with `prometheus_client.parser`, and
checks that a spike on one series raises its score and flag while a steady twin stays low;
the anomaly event reaches a test OTLP logs receiver with the spiking series' identity.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import wait_for
from helpers.processes import running_cli
from helpers.sidecars import scrape
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord

RESOURCE = Resource.create({"service.name": "orders", "service.instance.id": "pod-1"})
STEADY_POINTS = 60  # past the default detector's warm-up (30 points)
SPIKE_POINTS = 2
QUEUE_METRIC = "orders_queue_depth"


@dataclass
class Providers:
    """The three SDK providers, exporting only when flushed."""

    meters: MeterProvider
    tracers: TracerProvider
    loggers: LoggerProvider
    queue_depth: dict[str, float] = field(default_factory=dict)

    def flush(self) -> None:
        for provider in (self.meters, self.tracers, self.loggers):
            assert provider.force_flush(10_000), f"{type(provider).__name__} flush failed"


@contextmanager
def sdk_providers(transport: str, grpc_port: int, http_port: int) -> Iterator[Providers]:
    """Providers whose OTLP exporters point at the sidecar over ``transport``."""
    exporters: tuple[Any, Any, Any]
    if transport == "grpc":
        endpoint = f"http://127.0.0.1:{grpc_port}"
        exporters = (GrpcMetrics(endpoint=endpoint, insecure=True),
                     GrpcSpans(endpoint=endpoint, insecure=True),
                     GrpcLogs(endpoint=endpoint, insecure=True))
    else:
        base = f"http://127.0.0.1:{http_port}"
        exporters = (HttpMetrics(endpoint=f"{base}/v1/metrics"),
                     HttpSpans(endpoint=f"{base}/v1/traces"),
                     HttpLogs(endpoint=f"{base}/v1/logs"))
    metric_exporter, span_exporter, log_exporter = exporters
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meters = MeterProvider(
        resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False,
        views=[View(instrument_name="payload.size",
                    aggregation=ExponentialBucketHistogramAggregation())],
    )
    tracers = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    tracers.add_span_processor(SimpleSpanProcessor(span_exporter))
    loggers = LoggerProvider(resource=RESOURCE, shutdown_on_exit=False)
    loggers.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    providers = Providers(meters, tracers, loggers)
    try:
        yield providers
    finally:
        for provider in (meters, tracers, loggers):
            provider.shutdown()


def drive(providers: Providers) -> None:
    """Send STEADY_POINTS rounds of every signal, then a spike on one queue only."""
    rng = random.Random(7)
    meter = providers.meters.get_meter("e2e")

    def queue_depth(_: CallbackOptions) -> list[Observation]:
        return [Observation(v, {"queue": q}) for q, v in providers.queue_depth.items()]

    meter.create_observable_gauge("orders.queue.depth", [queue_depth], unit="{item}")
    requests = meter.create_counter("http.server.requests", unit="{request}")
    in_flight = meter.create_up_down_counter("http.server.active_requests", unit="{request}")
    latency = meter.create_histogram("http.server.duration", unit="ms")
    payload = meter.create_histogram("payload.size", unit="By")  # exponential (view)
    tracer = providers.tracers.get_tracer("e2e")
    logger = providers.loggers.get_logger("e2e")
    for i in range(STEADY_POINTS + SPIKE_POINTS):
        spiking = i >= STEADY_POINTS
        providers.queue_depth["steady"] = 50.0 + rng.uniform(-1, 1)
        providers.queue_depth["spiky"] = 500.0 if spiking else 50.0 + rng.uniform(-1, 1)
        requests.add(10, {"http.route": "/orders"})
        in_flight.add(rng.choice((-1, 1)), {"http.route": "/orders"})
        for _ in range(5):
            latency.record(rng.lognormvariate(3.0, 0.3), {"http.route": "/orders"})
            payload.record(rng.lognormvariate(8.0, 0.5))
        span = tracer.start_span("GET /orders", kind=SpanKind.SERVER)
        span.end()
        logger.emit(severity_number=SeverityNumber.INFO, severity_text="INFO", body="ok")
        providers.flush()


def samples(port: int | None, family: str) -> dict[tuple[str, str], float]:
    """``(metric, queue)`` to value, for one output family."""
    found = scrape(port).get(family)
    return {(s.labels["metric"], s.labels.get("queue", "")): s.value
            for s in (found.samples if found else [])}


def received(port: int | None) -> dict[str, float]:
    family = scrape(port).get("otel_anomaly_points_received")
    return {s.labels["signal"]: s.value for s in (family.samples if family else [])
            if s.name.endswith("_total")}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spike_raises_score_flag_and_event_while_steady_twin_stays_low(
    transport: str, sink: OtlpSink,
) -> None:
    with running_cli("--events-endpoint", sink.endpoint) as sidecar, \
            sdk_providers(transport, sidecar.grpc_port, sidecar.http_port) as providers:
        drive(providers)
        spiky, steady = (QUEUE_METRIC, "spiky"), (QUEUE_METRIC, "steady")
        wait_for(lambda: samples(sidecar.metrics_port, "otel_anomaly_flag").get(spiky) == 1.0,
                 10, lambda: f"flags: {samples(sidecar.metrics_port, 'otel_anomaly_flag')}")
        scores = samples(sidecar.metrics_port, "otel_anomaly_score")
        flags = samples(sidecar.metrics_port, "otel_anomaly_flag")
        values = samples(sidecar.metrics_port, "otel_anomaly_value")
        assert scores[spiky] > 1.0
        assert values[spiky] == 500.0
        assert scores[steady] < 1.0
        assert flags[steady] == 0.0
        # Every instrument kind became scored series.
        metrics = {metric for metric, _ in scores}
        for expected in ("http_server_requests_total:rate", "http_server_active_requests",
                         "http_server_duration_milliseconds:p99", "payload_size_bytes:p50",
                         "traces_span_duration_milliseconds"):
            assert expected in metrics, sorted(metrics)
        counts = received(sidecar.metrics_port)
        assert counts.get("traces", 0) >= STEADY_POINTS, counts
        assert counts.get("logs", 0) >= STEADY_POINTS, counts

        def spike_opened() -> list[SinkRecord]:
            return [r for r in sink.records()
                    if r.event_name == "anomaly.open"
                    and r.attributes.get("anomaly.metric") == QUEUE_METRIC]

        wait_for(lambda: bool(spike_opened()), 10,
                 lambda: f"events: {[(r.event_name, r.attributes) for r in sink.records()]}")
        attributes = [r.attributes for r in spike_opened()]
        assert [a["queue"] for a in attributes] == ["spiky"], attributes
        (opened,) = attributes
        # The event belongs to the monitored service: its resource, not the sidecar's.
        (record,) = spike_opened()
        assert record.resource["service.name"] == "orders"
        assert record.resource["service.instance.id"] == "pod-1"
        assert record.scope == "otel-anomaly"
        assert "service.name" not in opened
        assert opened["anomaly.direction"] == "up"
        assert opened["anomaly.value"] == 500.0
