"""The OTLP events output: anomaly events as OTLP log records, through the SDK.

Each event belongs to the monitored service: its record's resource is the scored series'
resource (``service.name``, ``service.namespace``, ``service.instance.id``, ``host.name``,
``k8s.*``...), and the sidecar names itself as the instrumentation scope (``otel-anomaly``
and its version). An SDK ``LoggerProvider`` binds one resource, so records are built here
(``ReadWriteLogRecord``, with their own resource and scope) and handed to one
``BatchLogRecordProcessor``: one bounded queue, one batch thread and one exporter for every
service, and the SDK's OTLP encoder turns each batch into one ``ResourceLogs`` per
resource. One provider per resource would instead bring a queue and a thread each.

The SDK's ``OTLPLogExporter`` brings jittered retries and honours RetryInfo; the batch
processor is the bounded queue of events. ``publish`` (on the output's own thread) never
waits for the network: when that queue is full an event is dropped and counted (the SDK's
processor would drop silently, so we keep our own count of records not yet handed to the
exporter).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import AttributeValue

from otel_anomaly.exporter.config_outputs import OtlpEventsConfig
from otel_anomaly.exporter.distribution import version
from otel_anomaly.exporter.outputs.base import ScoringRound
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.settings import EVENTS_SCOPE_NAME
from otel_anomaly.processors.types import AnomalyEvent, Labels

SERVICE_NAME = "otel-anomaly"
"""The sidecar's own ``service.name`` (its scores pushed over OTLP)."""
SCOPE_NAME = EVENTS_SCOPE_NAME
"""The instrumentation scope of every event: the sidecar that raised it."""
_RESOURCES = 1024  # distinct resources kept built (most events repeat a few services)
# An event waits at most this long for others to share its export: the Collector's batch
# processor's default timeout. Events are rare, so batching them longer saves little and
# delays every page (500 ms: anomaly.open reached a sink 501 ms after its point, p50).
_SCHEDULE_DELAY_MS = 200
_MAX_BATCH = 512
_SEVERITY = {
    "open": (SeverityNumber.WARN, "WARN"),
    "update": (SeverityNumber.WARN, "WARN"),
    "close": (SeverityNumber.INFO, "INFO"),
}


class _CountingExporter(LogRecordExporter):
    """Counts records handed to the real exporter and how each export ended."""

    def __init__(self, inner: LogRecordExporter, telemetry: Telemetry) -> None:
        self._inner = inner
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self.handed = 0
        self.deadline = float("inf")  # monotonic; set by shutdown

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with self._lock:
            self.handed += len(batch)
        if time.monotonic() > self.deadline:
            self._telemetry.events_dropped("shutdown_timeout", len(batch))
            return LogRecordExportResult.FAILURE
        try:
            result = self._inner.export(batch)
        except Exception:  # noqa: BLE001 - the SDK would log and drop it; we count it
            result = LogRecordExportResult.FAILURE
        if result is LogRecordExportResult.SUCCESS:
            self._telemetry.events_sent(len(batch))
        else:
            self._telemetry.events_dropped("export_failed", len(batch))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def event_attributes(event: AnomalyEvent) -> dict[str, AttributeValue]:
    """The record's attributes: the series' point attributes, then ``anomaly.*``.

    The series' resource attributes are the record's resource (``event_resource``).
    """
    attributes: dict[str, AttributeValue] = dict(event.key.attributes)
    attributes.update(
        {
            "anomaly.id": event.anomaly_id,
            "anomaly.direction": event.direction,
            "anomaly.score": event.score,
            "anomaly.value": event.value,
            "anomaly.expected": event.expected,
            "anomaly.lower": event.lower,
            "anomaly.upper": event.upper,
            "anomaly.detector": event.detector,
            "anomaly.metric": event.key.metric,
        }
    )
    return attributes


def event_resource(resource: Labels) -> Resource:
    """The monitored series' resource, as the record's resource (no SDK defaults merged)."""
    return Resource(dict(resource))


def _context(event: AnomalyEvent) -> Context:
    """An explicit context: carries the event's trace and span ids when it has them."""
    if not event.trace_id:
        return Context()
    span_context = SpanContext(
        trace_id=int.from_bytes(event.trace_id, "big"),
        span_id=int.from_bytes(event.span_id, "big") if event.span_id else 0,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


class OtlpEventsOutput:
    """Sends ``AnomalyEvent``s as OTLP log records with ``event_name`` ``anomaly.<kind>``.

    Parameters
    ----------
    config
        ``outputs.otlp_events`` (endpoint, insecure, headers, queue_size, timeout).
    telemetry
        Counts sent and dropped events.
    now_ns
        Wall clock for ``observed_timestamp`` (the record's ``timestamp`` is event time).
    """

    name = "otlp_events"
    inline = False

    def __init__(
        self,
        config: OtlpEventsConfig,
        telemetry: Telemetry,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._telemetry = telemetry
        self._now_ns = now_ns
        self._processor: BatchLogRecordProcessor | None = None
        self._counting: _CountingExporter | None = None
        self._scope = InstrumentationScope(SCOPE_NAME, version())
        self._resource = functools.lru_cache(maxsize=_RESOURCES)(event_resource)
        self._emitted = 0
        self._closed = False

    def start(self) -> None:
        """Create the SDK pipeline (its batch thread starts here, not in ``__init__``)."""
        if self._processor is not None or self._closed or not self._config.endpoint:
            return
        otlp = OTLPLogExporter(
            endpoint=self._config.endpoint,
            insecure=self._config.insecure,
            headers=dict(self._config.headers),
            timeout=self._config.timeout,
        )
        self._counting = _CountingExporter(otlp, self._telemetry)
        self._processor = BatchLogRecordProcessor(
            self._counting,
            schedule_delay_millis=_SCHEDULE_DELAY_MS,
            max_export_batch_size=min(_MAX_BATCH, self._config.queue_size),
            max_queue_size=self._config.queue_size,
        )

    def publish(self, scoring_round: ScoringRound) -> None:
        """Queue the round's events for export. Drops (counted) when the queue is full."""
        processor, counting = self._processor, self._counting
        if processor is None or counting is None or self._closed:
            return
        for event in scoring_round.events:
            if self._emitted - counting.handed >= self._config.queue_size:
                self._telemetry.events_dropped("queue_full", 1)
                continue
            self._emitted += 1
            processor.on_emit(self._record(event))

    def dropped(self, scoring_round: ScoringRound, reason: str) -> None:
        """Count the events of a round its worker dropped (queue full, shutting down)."""
        self._telemetry.events_dropped(reason, len(scoring_round.events))

    def _record(self, event: AnomalyEvent) -> ReadWriteLogRecord:
        """The event as an SDK log record of its series' resource, in the sidecar's scope."""
        severity, severity_text = _SEVERITY[event.kind]
        record = LogRecord(
            timestamp=event.ts_unix_nano,
            observed_timestamp=self._now_ns(),
            context=_context(event),
            severity_number=severity,
            severity_text=severity_text,
            body=event.explanation,
            attributes=event_attributes(event),
            event_name=f"anomaly.{event.kind}",
        )
        return ReadWriteLogRecord(record, resource=self._resource(event.key.resource),
                                  instrumentation_scope=self._scope)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Flush what is queued and stop.

        Batches still queued after ``timeout`` are dropped (counted as
        ``shutdown_timeout``); one export already in flight may take up to
        ``outputs.otlp_events.timeout``, as the SDK's batch processor offers no deadline of its own.
        """
        self._closed = True
        processor, self._processor = self._processor, None
        if processor is not None and self._counting is not None:
            self._counting.deadline = time.monotonic() + timeout
            processor.shutdown()  # type: ignore[no-untyped-call]
