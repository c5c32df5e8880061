"""End to end with the real OpenTelemetry SDK: OTLP/gRPC in, Prometheus scrape out."""

from __future__ import annotations

from helpers import wait_for
from helpers.sidecars import loopback_config, running, scrape
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

RESOURCE = Resource.create({"service.name": "checkout", "service.namespace": "shop",
                            "service.instance.id": "pod-7"})


def scored(port: int | None) -> dict[str, dict[str, str]]:
    families = scrape(port)
    family = families.get("otel_anomaly_value")
    return {s.labels["metric"]: dict(s.labels) for s in (family.samples if family else [])}


def test_sdk_metrics_become_scored_series() -> None:
    with running(loopback_config()) as sidecar:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://127.0.0.1:{sidecar.grpc_port}", insecure=True),
            export_interval_millis=3_600_000,  # exports only when flushed
        )
        provider = MeterProvider(resource=RESOURCE, metric_readers=[reader],
                                 shutdown_on_exit=False)
        try:
            meter = provider.get_meter("e2e")

            def cpu(_: CallbackOptions) -> list[Observation]:
                return [Observation(0.42, {"cpu": "0"})]

            meter.create_observable_gauge("system.cpu.utilization", [cpu], unit="1")
            queue = meter.create_up_down_counter("queue.length", unit="{item}")
            queue.add(5, {"queue": "jobs"})
            assert provider.force_flush(10_000)
            wait_for(lambda: "system_cpu_utilization_ratio" in scored(sidecar.metrics_port), 5,
                     lambda: f"scored series: {sorted(scored(sidecar.metrics_port))}")
            series = scored(sidecar.metrics_port)
            assert series["system_cpu_utilization_ratio"] == {
                "metric": "system_cpu_utilization_ratio", "detector": "ensemble",
                "job": "shop/checkout", "instance": "pod-7", "cpu": "0",
            }
            assert any(name.startswith("queue_length") for name in series), sorted(series)
        finally:
            provider.shutdown()


def test_sdk_spans_become_span_duration_series() -> None:
    with running(loopback_config()) as sidecar:
        provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{sidecar.grpc_port}",
                                    insecure=True)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        try:
            tracer = provider.get_tracer("e2e")
            start = 1_700_000_000_000_000_000
            span = tracer.start_span("GET /cart", kind=SpanKind.SERVER, start_time=start)
            span.end(end_time=start + 12_000_000)
            assert provider.force_flush(10_000)
            wait_for(lambda: "traces_span_duration_milliseconds" in scored(sidecar.metrics_port),
                     5, lambda: f"scored series: {sorted(scored(sidecar.metrics_port))}")
            labels = scored(sidecar.metrics_port)["traces_span_duration_milliseconds"]
            assert labels["job"] == "shop/checkout"
            assert labels["span_name"] == "GET /cart"
        finally:
            provider.shutdown()
