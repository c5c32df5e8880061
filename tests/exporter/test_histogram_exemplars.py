"""A latency histogram's anomaly event names a slow request's trace (the SDK's exemplars).

The real OpenTelemetry SDK records request durations inside their server spans, as
instrumentation libraries do, so each exported histogram point carries exemplars (one per
bucket, the trace-based filter's sampled spans). When a request 20 times slower than
the rest lifts the interval's mean, the ``anomaly.open`` of ``...:mean`` must carry that
request's trace and span id: the slowest exemplar, not merely any of them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from helpers import wait_for
from helpers.processes import running_cli
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord

RESOURCE = Resource.create({"service.name": "orders"})
# No unit: the default rule, whose single point far out opens. (The built-in latency rules
# wait for two points, and their false-alarm budget is a rate per day: flushed every few
# milliseconds, as here, a series has millions of chances a day and its band stays wide.)
MEAN = "http_server_duration:mean"
STEADY_ROUNDS, SLOW_ROUNDS, CALLS = 100, 3, 5


@contextmanager
def providers(grpc_port: int) -> Iterator[tuple[MeterProvider, TracerProvider]]:
    """A meter exporting only when flushed, and a tracer whose spans are all sampled."""
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://127.0.0.1:{grpc_port}", insecure=True),
        export_interval_millis=3_600_000)
    meters = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    tracers = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    try:
        yield meters, tracers
    finally:
        meters.shutdown()
        tracers.shutdown()


def test_latency_anomaly_event_carries_the_slowest_requests_trace(sink: OtlpSink) -> None:
    rng = random.Random(3)
    slow_requests: dict[bytes, bytes] = {}  # trace id -> span id of each 20x request
    with running_cli("--events-endpoint", sink.endpoint) as sidecar, \
            providers(sidecar.grpc_port) as (meters, tracers):
        latency = meters.get_meter("e2e").create_histogram("http.server.duration")
        tracer = tracers.get_tracer("e2e")
        for i in range(STEADY_ROUNDS + SLOW_ROUNDS):
            for call in range(CALLS):
                ms = rng.lognormvariate(3.0, 0.3)  # about 20 ms
                slow = i >= STEADY_ROUNDS and call == CALLS // 2
                span = tracer.start_span("GET /orders", kind=SpanKind.SERVER)
                with trace.use_span(span, end_on_exit=True):
                    latency.record(20 * ms if slow else ms, {"http.route": "/orders"})
                if slow:
                    ctx = span.get_span_context()
                    slow_requests[ctx.trace_id.to_bytes(16, "big")] = ctx.span_id.to_bytes(
                        8, "big")
            assert meters.force_flush(10_000), "metrics flush failed"

        def opened() -> list[SinkRecord]:
            return [r for r in sink.records() if r.event_name == "anomaly.open"
                    and r.attributes.get("anomaly.metric") == MEAN]

        wait_for(lambda: bool(opened()), 20,
                 lambda: f"events: {[(r.event_name, r.attributes) for r in sink.records()]}")
        record = opened()[0].record
        assert record.trace_id in slow_requests, (record.trace_id.hex(), slow_requests)
        assert record.span_id == slow_requests[record.trace_id]
