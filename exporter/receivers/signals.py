"""The transport side of each OTLP signal: routes, services and partial-success replies.

Shared by the gRPC and HTTP receivers and the pipeline so that each fact about a signal
is written down once. What a request is and how many items it holds is the signal
adapter's (``processors.signals``): the spec takes both from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_anomaly.processors.signals.adapter import Signal
from otel_anomaly.processors.signals.metrics_wire_count import count_points
from otel_anomaly.processors.signals.registry import ADAPTERS
from otel_anomaly.processors.types import IngestResult

__all__ = ["SIGNALS", "SPECS", "ExportRequest", "LogsRequest", "MetricsRequest", "Received",
           "Signal", "SignalSpec", "TracesRequest"]

SIGNALS: tuple[Signal, ...] = tuple(ADAPTERS)

MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest
TracesRequest = trace_service_pb2.ExportTraceServiceRequest
LogsRequest = logs_service_pb2.ExportLogsServiceRequest
ExportRequest: TypeAlias = MetricsRequest | TracesRequest | LogsRequest


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded request and, for metrics and traces, the bytes it was decoded from.

    The engine scans a metrics or traces request's bytes instead of walking every point
    or span of the message (``processors.signals.wire_path``, ``span_path``); nothing is
    serialized again for it.
    """

    message: Message
    data: bytes | None = None
    count: int | None = None  # the items in it, when the bytes told (else the adapter counts)


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

    def receive(self, data: bytes) -> Received:
        """Decode a binary protobuf request, keeping its bytes if the engine scans them.

        A metrics request is counted from its bytes (``metrics_wire_count.count_points``): the
        adapter's count reads every metric of the message in Python. A traces request is
        counted by the adapter (a length per scope).
        """
        message = self.parse(data)
        if self.signal == "metrics":
            return Received(message, data, count_points(data))
        if self.signal == "traces":
            return Received(message, data)
        return Received(message)

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


def _spec(signal: Signal, response_type: type[Message], rejected_field: str,
          grpc_module: object, grpc_name: str, http_path: str) -> SignalSpec:
    adapter = ADAPTERS[signal]
    return SignalSpec(signal, adapter.request_type, response_type, rejected_field,
                      _service(grpc_module, grpc_name), http_path, adapter.count)


SPECS: dict[Signal, SignalSpec] = {
    "metrics": _spec("metrics", metrics_service_pb2.ExportMetricsServiceResponse,
                     "rejected_data_points", metrics_service_pb2, "MetricsService", "/v1/metrics"),
    "traces": _spec("traces", trace_service_pb2.ExportTraceServiceResponse, "rejected_spans",
                    trace_service_pb2, "TraceService", "/v1/traces"),
    "logs": _spec("logs", logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records",
                  logs_service_pb2, "LogsService", "/v1/logs"),
}
"""Every signal's spec, by name."""
