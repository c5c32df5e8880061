"""OtlpSink: an in-process OTLP/gRPC endpoint (logs and metrics) that keeps what it receives.

Shipped for the demo and for tests: point ``outputs.otlp_events.endpoint`` (and
``outputs.otlp_scores.endpoint``) at it and read the anomaly events (and the score metrics)
back, without running a Collector.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_anomaly.exporter.errors import StartupError

THREAD_PREFIX = "otel-anomaly-sink"


def any_value(value: AnyValue) -> object:
    """The Python value of an OTLP ``AnyValue`` (scalars; others as their proto)."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One received log record with its resource attributes and scope name."""

    resource: dict[str, object]
    scope: str
    record: LogRecord

    @property
    def attributes(self) -> dict[str, object]:
        """The record's attributes as a plain dict."""
        return {kv.key: any_value(kv.value) for kv in self.record.attributes}

    @property
    def event_name(self) -> str:
        """The record's ``event_name`` (field 12)."""
        return str(self.record.event_name)


class OtlpSink:
    """Collects OTLP logs and metrics sent to ``127.0.0.1:<port>`` (port 0 picks one).

    Parameters
    ----------
    endpoint
        Where to listen.
    """

    def __init__(self, endpoint: str = "127.0.0.1:0") -> None:
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._records: list[SinkRecord] = []
        self._metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._server: grpc.Server | None = None
        self.port: int | None = None

    @property
    def endpoint(self) -> str:
        """``host:port`` to configure as an output's endpoint once started."""
        host = self._endpoint.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Listen and serve (a small named thread pool)."""
        if self._server is not None:
            return
        pool = futures.ThreadPoolExecutor(2, thread_name_prefix=THREAD_PREFIX)
        server = grpc.server(pool, options=[("grpc.so_reuseport", 0)])
        handlers = [
            _service(
                "opentelemetry.proto.collector.logs.v1.LogsService",
                self._export_logs,
                logs_service_pb2.ExportLogsServiceRequest.FromString,
            ),
            _service(
                "opentelemetry.proto.collector.metrics.v1.MetricsService",
                self._export_metrics,
                metrics_service_pb2.ExportMetricsServiceRequest.FromString,
            ),
        ]
        server.add_generic_rpc_handlers(handlers)
        try:
            self.port = server.add_insecure_port(self._endpoint)
        except RuntimeError as exc:
            msg = f"OTLP sink: cannot listen on {self._endpoint!r}"
            raise StartupError(msg) from exc
        server.start()
        self._server = server

    def _export_logs(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: object
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        del context
        self.add(request)
        return logs_service_pb2.ExportLogsServiceResponse()

    def _export_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: object
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        del context
        with self._lock:
            self._metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def add(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        """Keep every record of ``request``."""
        received = [
            SinkRecord(
                {kv.key: any_value(kv.value) for kv in rl.resource.attributes},
                sl.scope.name,
                record,
            )
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for record in sl.log_records
        ]
        with self._lock:
            self._records.extend(received)

    def records(self) -> list[SinkRecord]:
        """A copy of the log records received so far, in arrival order."""
        with self._lock:
            return list(self._records)

    def metrics(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        """A copy of the metrics requests received so far, in arrival order."""
        with self._lock:
            return list(self._metrics)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=timeout).wait(timeout)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _service(
    name: str, export: Callable[[Any, object], Message], parse: Callable[[bytes], Message]
) -> grpc.GenericRpcHandler[Any, Any]:
    method = grpc.unary_unary_rpc_method_handler(
        export, request_deserializer=parse, response_serializer=_serialize
    )
    return grpc.method_handlers_generic_handler(name, {"Export": method})
