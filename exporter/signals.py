"""The three OTLP signals: message types, item counts and partial-success replies.

Shared by the gRPC and HTTP receivers and the pipeline so that each fact about a signal
is written down once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_anomaly.processors.types import IngestResult

Signal = Literal["metrics", "traces", "logs"]
SIGNALS: tuple[Signal, ...] = ("metrics", "traces", "logs")

MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest
TracesRequest = trace_service_pb2.ExportTraceServiceRequest
LogsRequest = logs_service_pb2.ExportLogsServiceRequest
ExportRequest: TypeAlias = MetricsRequest | TracesRequest | LogsRequest


def _count_points(request: Message) -> int:
    assert isinstance(request, MetricsRequest)
    total = 0
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind:
                    total += len(getattr(metric, kind).data_points)
    return total


def _count_spans(request: Message) -> int:
    assert isinstance(request, TracesRequest)
    return sum(
        len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
    )


def _count_log_records(request: Message) -> int:
    assert isinstance(request, LogsRequest)
    return sum(
        len(scope.log_records)
        for resource in request.resource_logs
        for scope in resource.scope_logs
    )


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """What the receivers need to know about one signal."""

    signal: Signal
    request_type: type[Message]
    response_type: type[Message]
    rejected_field: str
    grpc_service: str
    http_path: str
    count: Callable[[Message], int]

    def parse(self, data: bytes) -> Message:
        """Decode a binary protobuf request (raises ``DecodeError``)."""
        request = self.request_type()
        request.ParseFromString(data)
        return request

    def response(self, result: IngestResult | None = None) -> Message:
        """The reply: empty when all was accepted, else ``partial_success`` with reasons."""
        response = self.response_type()
        if result is not None and result.rejected_total:
            partial = getattr(response, "partial_success")  # noqa: B009 - typed per signal
            setattr(partial, self.rejected_field, result.rejected_total)
            partial.error_message = result.error_message()
        return response


def _service(module: object, name: str) -> str:
    return str(getattr(module, "DESCRIPTOR").services_by_name[name].full_name)  # noqa: B009


SPECS: dict[Signal, SignalSpec] = {
    "metrics": SignalSpec(
        "metrics", MetricsRequest, metrics_service_pb2.ExportMetricsServiceResponse,
        "rejected_data_points", _service(metrics_service_pb2, "MetricsService"),
        "/v1/metrics", _count_points,
    ),
    "traces": SignalSpec(
        "traces", TracesRequest, trace_service_pb2.ExportTraceServiceResponse,
        "rejected_spans", _service(trace_service_pb2, "TraceService"), "/v1/traces",
        _count_spans,
    ),
    "logs": SignalSpec(
        "logs", LogsRequest, logs_service_pb2.ExportLogsServiceResponse,
        "rejected_log_records", _service(logs_service_pb2, "LogsService"), "/v1/logs",
        _count_log_records,
    ),
}
"""Every signal's spec, by name."""
