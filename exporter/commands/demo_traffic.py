"""A small simulated shop that reports through the real OpenTelemetry SDK over OTLP/gRPC.

Three services, each with its own resource and SDK providers: a request counter, a
request-duration histogram, an active-requests up-down counter and an observable CPU
gauge; a server span per request with explicit start and end times; INFO and ERROR log
records. ``Incident``s change latency, error rate, CPU or throughput for a while.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation, UpDownCounter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, use_span


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint of a service and its normal behaviour."""

    name: str
    rate_per_s: float
    latency_ms: float
    error_ratio: float = 0.01


@dataclass(frozen=True, slots=True)
class Incident:
    """A change to one service (or one of its operations) between two demo times."""

    title: str
    service: str
    start_s: float
    end_s: float
    operation: str | None = None
    latency_factor: float = 1.0
    error_ratio: float | None = None
    cpu: float | None = None
    rate_factor: float = 1.0
    signal_hint: str = ""  # substring of the metric names expected to be flagged

    def active(self, t: float, service: str, operation: str | None = None) -> bool:
        """True at demo time ``t`` for this service (and operation, when it names one)."""
        if service != self.service or not self.start_s <= t < self.end_s:
            return False
        return self.operation is None or operation is None or operation == self.operation


SERVICES: dict[str, tuple[float, tuple[Operation, ...]]] = {
    "checkout": (0.30, (Operation("POST /checkout", 12.0, 120.0),)),
    "payments": (0.25, (Operation("POST /charge", 10.0, 80.0),)),
    "catalog": (0.35, (Operation("GET /products", 16.0, 25.0), Operation("GET /item", 8.0, 15.0))),
}
"""Service name -> (normal CPU utilisation, operations)."""


@dataclass(slots=True)
class _Gauge:
    value: float

    def observe(self, _: CallbackOptions) -> list[Observation]:
        return [Observation(self.value)]


@dataclass(slots=True)
class _Service:
    name: str
    cpu: float
    operations: tuple[Operation, ...]
    providers: tuple[MeterProvider, TracerProvider, LoggerProvider]
    requests: Counter
    duration: Histogram
    active_requests: UpDownCounter
    current_cpu: _Gauge
    active: int = 0


class ShopTraffic:
    """Generates the shop's telemetry tick by tick; ``shutdown`` flushes everything.

    Parameters
    ----------
    endpoint
        The sidecar's OTLP/gRPC ``host:port``.
    incidents
        What goes wrong, and when.
    seed
        Seeds all randomness, so two runs send the same values.
    """

    def __init__(self, endpoint: str, incidents: tuple[Incident, ...], seed: int) -> None:
        self._endpoint = f"http://{endpoint}"
        self._incidents = incidents
        self._rng = random.Random(seed)
        self._services: list[_Service] = []

    def start(self) -> None:
        """Create the SDK providers (their export threads start here)."""
        for name, (cpu, operations) in SERVICES.items():
            self._services.append(self._service(name, cpu, operations))

    def _service(self, name: str, cpu: float, operations: tuple[Operation, ...]) -> _Service:
        resource = Resource.create(
            {"service.name": name, "service.namespace": "shop", "service.instance.id": f"{name}-1"}
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=self._endpoint, insecure=True),
            export_interval_millis=1000,
        )
        meters = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
        tracers = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracers.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=self._endpoint, insecure=True),
                schedule_delay_millis=1000,
            )
        )
        loggers = LoggerProvider(resource=resource, shutdown_on_exit=False)
        loggers.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=self._endpoint, insecure=True),
                schedule_delay_millis=1000,
            )
        )
        meter = meters.get_meter("shop.demo")
        current_cpu = _Gauge(cpu)
        meter.create_observable_gauge("process.cpu.utilization", [current_cpu.observe], unit="1")
        return _Service(
            name, cpu, operations, (meters, tracers, loggers),
            requests=meter.create_counter("http.server.requests", unit="{request}"),
            duration=meter.create_histogram("http.server.request.duration", unit="ms"),
            active_requests=meter.create_up_down_counter(
                "http.server.active_requests", unit="{request}"
            ),
            current_cpu=current_cpu,
        )

    def tick(self, t: float, now_ns: int, tick_s: float) -> None:
        """Emit ``tick_s`` seconds of traffic ending at wall time ``now_ns`` (demo time t)."""
        for service in self._services:
            cpu = next((i.cpu for i in self._incidents if i.cpu and i.active(t, service.name)),
                       service.cpu)
            service.current_cpu.value = max(0.0, cpu + self._rng.gauss(0.0, 0.01))
            for operation in service.operations:
                self._requests(service, operation, t, now_ns, tick_s)

    def _requests(
        self, service: _Service, op: Operation, t: float, now_ns: int, tick_s: float
    ) -> None:
        active = [i for i in self._incidents if i.active(t, service.name, op.name)]
        rate = op.rate_per_s * tick_s
        for incident in active:
            rate *= incident.rate_factor
        count = int(rate) + (self._rng.random() < rate - int(rate))
        error_ratio = next((i.error_ratio for i in active if i.error_ratio), op.error_ratio)
        factor = 1.0
        for incident in active:
            factor *= incident.latency_factor
        _, tracers, loggers = service.providers
        tracer = tracers.get_tracer("shop.demo")
        logger = loggers.get_logger("shop.demo")
        attributes = {"http.route": op.name}
        for _ in range(count):
            duration_ms = op.latency_ms * factor * self._rng.lognormvariate(0.0, 0.25)
            error = self._rng.random() < error_ratio
            end = now_ns - int(self._rng.random() * tick_s * 1e9)
            start = end - int(duration_ms * 1e6)
            span = tracer.start_span(op.name, kind=SpanKind.SERVER, start_time=start,
                                     attributes=attributes)
            if error:
                span.set_status(Status(StatusCode.ERROR, "upstream failed"))
            # Measured inside its server span, as instrumentation does: the histogram's
            # exemplars then name the request's trace, and so do latency anomaly events.
            with use_span(span, end_on_exit=False):
                service.requests.add(1, attributes)
                service.duration.record(duration_ms, attributes)
            span.end(end_time=end)
            if error:
                logger.emit(timestamp=end, severity_number=SeverityNumber.ERROR,
                            severity_text="ERROR", body=f"{op.name} failed: upstream error")
            elif self._rng.random() < 0.2:
                logger.emit(timestamp=end, severity_number=SeverityNumber.INFO,
                            severity_text="INFO", body=f"{op.name} ok in {duration_ms:.0f} ms")
        service.active_requests.add(count - service.active)
        service.active = count

    def shutdown(self) -> None:
        """Flush and stop every provider."""
        for service in self._services:
            meters, tracers, loggers = service.providers
            meters.shutdown(timeout_millis=5000)
            tracers.shutdown()
            loggers.shutdown()
        self._services.clear()
