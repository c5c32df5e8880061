"""OTLP/gRPC receiver: MetricsService, TraceService and LogsService on ``grpc.aio``.

Semantics follow the Collector's otlpreceiver: an empty request is answered at once;
rejected items come back as ``partial_success``; a full queue is ``UNAVAILABLE`` with
RetryInfo (retryable); a request that does not decode is ``INVALID_ARGUMENT`` (decoding
is ours, not grpcio's, which would answer ``INTERNAL``); an engine failure is ``INTERNAL``.
With ``tls`` the port speaks TLS (mTLS with ``client_ca_file``); with ``receivers.auth``
a call without the right bearer token is ``UNAUTHENTICATED``, before it is decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import (  # type: ignore[import-untyped]  # no stubs published
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otel_anomaly.exporter.config import BearerAuthConfig, GrpcReceiverConfig
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.net import probe_bind_error
from otel_anomaly.exporter.receivers.intake import Exports
from otel_anomaly.exporter.receivers.signals import SPECS, Received, SignalSpec
from otel_anomaly.exporter.security import (
    BearerTokens,
    GrpcBearerInterceptor,
    grpc_credentials,
    load_server_tls,
)

_MIB = 1024 * 1024
_START_TIMEOUT_S = 10.0
_WHAT = "OTLP/gRPC receiver"


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Stands in for a request whose bytes did not decode (so the servicer can say so)."""

    error: str


def retry_trailers(message: str, delay_s: float) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata for a throttled call: RetryInfo in both places clients look.

    The Collector reads ``grpc-status-details-bin`` (a ``google.rpc.Status`` with a
    ``RetryInfo`` detail); the Python SDK reads only ``google.rpc.retryinfo-bin``.
    """
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(delay_s * 1e9))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class _OtlpServicer:
    """The ``Export`` method shared by the three services."""

    spec: SignalSpec

    def __init__(self, intake: Exports) -> None:
        self._intake = intake

    async def Export(  # noqa: N802 - the generated servicer's method name
        self, request: Received | DecodeFailure,
        context: grpc.aio.ServicerContext[Message, Message],
    ) -> Message:
        """Handle one export call."""
        telemetry = self._intake.telemetry
        signal = self.spec.signal
        if isinstance(request, DecodeFailure):
            telemetry.request("grpc", signal, "malformed")
            name = self.spec.request_type.DESCRIPTOR.name
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode {name}: {request.error}"
            )
        outcome = await self._intake.export("grpc", self.spec, request.message, request.data,
                                            request.count)
        if outcome.status == "unavailable":
            trailers = retry_trailers(outcome.message, self._intake.retry_after_s)
            await context.abort(grpc.StatusCode.UNAVAILABLE, outcome.message, trailers)
        if outcome.status == "internal" or outcome.response is None:
            await context.abort(grpc.StatusCode.INTERNAL, outcome.message)
        return outcome.response


class MetricsServicer(_OtlpServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """OTLP ``MetricsService``."""

    spec = SPECS["metrics"]


class TraceServicer(_OtlpServicer, trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP ``TraceService``."""

    spec = SPECS["traces"]


class LogsServicer(_OtlpServicer, logs_service_pb2_grpc.LogsServiceServicer):
    """OTLP ``LogsService``."""

    spec = SPECS["logs"]


def _lenient_parser(spec: SignalSpec) -> Callable[[bytes], Received | DecodeFailure]:
    def parse(data: bytes) -> Received | DecodeFailure:
        try:
            return spec.receive(data)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the client's error
            return DecodeFailure(str(exc) or type(exc).__name__)

    return parse


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _handler(servicer: _OtlpServicer) -> grpc.GenericRpcHandler[Any, Any]:
    method = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=_lenient_parser(servicer.spec),
        response_serializer=_serialize,
    )
    return grpc.method_handlers_generic_handler(servicer.spec.grpc_service, {"Export": method})


class GrpcReceiver:
    """The OTLP/gRPC server component, running on the shared ``IoLoop``.

    Parameters
    ----------
    config
        ``receivers.grpc``.
    intake
        Where decoded requests go.
    io
        The event loop the server runs on.
    auth
        ``receivers.auth``: the bearer token calls must carry, if set.
    """

    def __init__(
        self, config: GrpcReceiverConfig, intake: Exports, io: IoLoop,
        auth: BearerAuthConfig | None = None,
    ) -> None:
        self._config = config
        self._intake = intake
        self._io = io
        self._auth = auth or BearerAuthConfig()
        self._signals = {spec.grpc_service: spec.signal for spec in SPECS.values()}
        self._server: grpc.aio.Server | None = None
        self._port: int | None = None
        self._stopped = False

    @property
    def port(self) -> int | None:
        """The bound port once started (useful with port 0)."""
        return self._port

    @property
    def listening(self) -> bool:
        """True while the server accepts calls."""
        return self._server is not None and not self._stopped

    def start(self) -> None:
        """Bind and start serving; raises ``StartupError`` naming the endpoint."""
        if self._server is not None or self._stopped:
            return
        tls = self._config.tls
        credentials = grpc_credentials(
            load_server_tls(tls, f"{_WHAT} (receivers.grpc.tls)")) if tls.enabled else None
        interceptors = []
        if self._auth.enabled:
            tokens = BearerTokens(self._auth, f"{_WHAT} (receivers.auth.bearer_token_file)")
            interceptors.append(GrpcBearerInterceptor(tokens, self._refused))
        self._port = self._io.run(self._start(credentials, interceptors), _START_TIMEOUT_S)

    def _refused(self, method: str) -> None:
        signal = self._signals.get(method.rpartition("/")[0].lstrip("/"))
        if signal is not None:  # an unknown method is refused too, but is no export call
            self._intake.telemetry.request("grpc", signal, "unauthenticated")

    async def _start(
        self, credentials: grpc.ServerCredentials | None,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]],
    ) -> int:
        endpoint = self._config.endpoint
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", self._config.max_recv_msg_size_mib * _MIB),
                # Without this, a second server could bind the same port and share traffic.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            [_handler(cls(self._intake)) for cls in (MetricsServicer, TraceServicer, LogsServicer)]
        )
        try:
            if credentials is None:
                port = server.add_insecure_port(endpoint)
            else:
                port = server.add_secure_port(endpoint, credentials)
        except RuntimeError as exc:
            await server.stop(None)
            reason = probe_bind_error(endpoint)
            msg = f"{_WHAT} (receivers.grpc.endpoint): {reason}"
            raise StartupError(msg) from exc
        await server.start()
        self._server = server
        return port

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting calls; in-flight calls get up to ``timeout`` to finish."""
        server, self._server = self._server, None
        self._stopped = True
        if server is not None:
            with contextlib.suppress(TimeoutError):  # the loop's shutdown cancels the rest
                self._io.run(server.stop(grace=timeout), timeout + 1.0)
