"""OTLP/HTTP receiver: ``POST /v1/metrics``, ``/v1/traces``, ``/v1/logs`` on aiohttp.

Bodies are ``application/x-protobuf`` or ``application/json`` (ids as hex), optionally
gzip- or deflate-encoded; the size limit applies after decompression. Replies use the
request's encoding: 200 with ``partial_success``; 400 undecodable; 413 too large; 415
unsupported type or encoding; 503 + ``Retry-After`` when the queue is full; 500 when
processing failed. Error bodies are a ``google.rpc.Status``.

The same server takes Prometheus remote-write at ``POST /api/v1/write``
(``exporter.receivers.remote_write``): same intake, same size limit, plain-text errors.

With ``tls`` it serves HTTPS (mTLS with ``client_ca_file``); with ``receivers.auth`` a
request without the right bearer token gets 401 before its body is read.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from otel_anomaly.exporter.config import BearerAuthConfig, HttpReceiverConfig
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.net import listen_sockets
from otel_anomaly.exporter.receivers.http_codec import (
    MEDIA_TYPES,
    Encoding,
    HttpError,
    decode,
    message_response,
    status_response,
)
from otel_anomaly.exporter.receivers.intake import Exports
from otel_anomaly.exporter.receivers.remote_write import (
    REMOTE_WRITE_PATH,
    RemoteWriteSpec,
    decode_write_request,
)
from otel_anomaly.exporter.receivers.signals import SPECS, Received, SignalSpec
from otel_anomaly.exporter.security import (
    CHALLENGE,
    REFUSED_MESSAGE,
    BearerTokens,
    http_middleware,
    listening_context,
    load_server_tls,
)
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.exporter.web import start_app, stop_app

DECODE_THREAD_PREFIX = "otel-anomaly-decode"
_MIB = 1024 * 1024
_INLINE_BYTES = 256 * 1024  # small uncompressed protobuf bodies decode on the loop
_SHUTDOWN_GRACE_S = 5.0  # in-flight requests may finish within this
_WHAT = "OTLP/HTTP receiver"
_CLIENT_GONE = 499  # nginx's "client closed request": never sent, only counted
_OUTCOMES = {400: "malformed", 413: "too_large", _CLIENT_GONE: "disconnected"}


class HttpReceiver:
    """The OTLP/HTTP server component, running on the shared ``IoLoop``.

    Parameters
    ----------
    config
        ``receivers.http``.
    intake
        Where decoded requests go.
    io
        The event loop the server runs on.
    auth
        ``receivers.auth``: the bearer token requests must carry, if set.
    """

    def __init__(
        self, config: HttpReceiverConfig, intake: Exports, io: IoLoop,
        auth: BearerAuthConfig | None = None,
    ) -> None:
        self._config = config
        self._intake = intake
        self._io = io
        self._auth = auth or BearerAuthConfig()
        self._signals = {spec.http_path: spec.signal for spec in SPECS.values()}
        self._signals[REMOTE_WRITE_PATH] = RemoteWriteSpec().signal
        self._limit = config.max_request_body_size_mib * _MIB
        self._runner: web.AppRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._port: int | None = None
        self._stopped = False

    @property
    def port(self) -> int | None:
        """The bound port once started (useful with port 0)."""
        return self._port

    @property
    def listening(self) -> bool:
        """True while the server accepts requests."""
        return self._runner is not None and not self._stopped

    def start(self) -> None:
        """Bind and start serving; raises ``StartupError`` naming the endpoint."""
        if self._runner is not None or self._stopped:
            return
        # Secrets load before the port is bound: a bad file leaves nothing to close.
        tls = self._config.tls
        ssl_context = listening_context(
            load_server_tls(tls, f"{_WHAT} (receivers.http.tls)")) if tls.enabled else None
        middlewares = []
        if self._auth.enabled:
            tokens = BearerTokens(self._auth, f"{_WHAT} (receivers.auth.bearer_token_file)")
            middlewares.append(http_middleware(tokens, self._refuse))
        sockets = listen_sockets(self._config.endpoint, f"{_WHAT} (receivers.http.endpoint)")
        self._port = sockets[0].getsockname()[1]
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=DECODE_THREAD_PREFIX,
                                            initializer=name_this_thread)
        app = web.Application(client_max_size=self._limit, middlewares=middlewares)
        for spec in SPECS.values():
            app.router.add_post(spec.http_path, self._route(spec))
        app.router.add_post(REMOTE_WRITE_PATH, self._remote_write)
        # auto_decompress off: we decompress ourselves to bound the decompressed size.
        self._runner = start_app(self._io, app, sockets, self._executor, ssl_context,
                                 shutdown_timeout=_SHUTDOWN_GRACE_S, auto_decompress=False)

    def _refuse(self, request: web.Request) -> web.Response:
        signal = self._signals.get(request.path)
        if signal is not None:  # unknown paths are refused too, but are no export request
            self._intake.telemetry.request("http", signal, "unauthenticated")
        encoding = MEDIA_TYPES.get(request.content_type) if signal != "prometheus" else None
        return status_response(401, REFUSED_MESSAGE, encoding, dict(CHALLENGE))

    def _route(
        self, spec: SignalSpec
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(spec, request)

        return handle

    async def _handle(self, spec: SignalSpec, request: web.Request) -> web.Response:
        telemetry = self._intake.telemetry
        encoding = MEDIA_TYPES.get(request.content_type)
        try:
            if encoding is None:
                msg = (
                    f"unsupported Content-Type {request.content_type!r}: expected "
                    "application/x-protobuf or application/json"
                )
                raise HttpError(415, msg)
            received = await self._decode(spec, encoding, request)
        except HttpError as exc:
            telemetry.request("http", spec.signal, _OUTCOMES.get(exc.status, "unsupported"))
            return status_response(exc.status, exc.message, encoding)
        outcome = await self._intake.export("http", spec, received.message, received.data,
                                            received.count)
        if outcome.status == "unavailable":
            retry_after = str(max(1, math.ceil(self._intake.retry_after_s)))
            return status_response(503, outcome.message, encoding, {"Retry-After": retry_after})
        if outcome.status == "internal" or outcome.response is None:
            return status_response(500, outcome.message, encoding)
        return message_response(outcome.response, encoding)

    async def _remote_write(self, request: web.Request) -> web.Response:
        spec = RemoteWriteSpec()
        try:
            if MEDIA_TYPES.get(request.content_type) != "protobuf":
                msg = (f"unsupported Content-Type {request.content_type!r}: remote-write "
                       "bodies are application/x-protobuf")
                raise HttpError(415, msg)
            body = await self._read(request)
            message = await asyncio.get_running_loop().run_in_executor(
                self._executor, decode_write_request, body,
                request.headers.get("Content-Encoding", ""), self._limit)
        except HttpError as exc:
            self._intake.telemetry.request("http", spec.signal,
                                           _OUTCOMES.get(exc.status, "unsupported"))
            return status_response(exc.status, exc.message, None)
        outcome = await self._intake.export("http", spec, message)
        if outcome.status == "unavailable":
            retry_after = str(max(1, math.ceil(self._intake.retry_after_s)))
            return status_response(503, outcome.message, None, {"Retry-After": retry_after})
        if outcome.status == "internal":
            return status_response(500, outcome.message, None)
        return web.Response(status=204)

    async def _decode(
        self, spec: SignalSpec, encoding: Encoding, request: web.Request
    ) -> Received:
        body = await self._read(request)
        content_encoding = request.headers.get("Content-Encoding", "")
        if encoding == "protobuf" and not content_encoding and len(body) <= _INLINE_BYTES:
            return decode(spec, encoding, body, content_encoding, self._limit)
        # JSON is hundreds of times slower to decode than protobuf, and decompression of
        # a large body takes a while too: off the event loop, so gRPC intake keeps flowing.
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, decode, spec, encoding, body, content_encoding, self._limit
        )

    async def _read(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self._limit:
            msg = f"body of {length} bytes exceeds {self._limit} (max_request_body_size_mib)"
            raise HttpError(413, msg)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            msg = f"body exceeds {self._limit} bytes (max_request_body_size_mib)"
            raise HttpError(413, msg) from exc
        except ConnectionResetError as exc:
            # The client went away mid-body: counted, not an ERROR traceback per client
            # (anyone could fill the log with them). Nobody reads the answer.
            msg = "the client closed the connection before its body was complete"
            raise HttpError(_CLIENT_GONE, msg) from exc

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting requests and close connections."""
        runner, self._runner = self._runner, None
        executor, self._executor = self._executor, None
        self._stopped = True
        stop_app(self._io, runner, executor, timeout)
