"""A receiver process: the usual ``GrpcReceiver`` or ``HttpReceiver``, its requests sent on.

``serve`` is the process' main (``receiver_process.ReceiverProcess`` spawns it). It runs the
same server as the sidecar would (TLS, bearer tokens, size limits, decoding and its errors),
but its intake forwards each decoded request's bytes over the socket pair
(``frames``) and answers the call with the outcome the sidecar sends back. So the server's
own Python work (callbacks, decompression, decoding, counting) runs on a core of its own
instead of taking turns with the scoring under one GIL.

The process ignores SIGINT and SIGTERM: the sidecar stops it (``stop``, with a grace for
calls in flight). If the sidecar goes away, the closed socket stops it too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import socket
import threading
from typing import Any, cast

from google.protobuf.message import Message

from otel_anomaly.exporter.config import BearerAuthConfig, GrpcReceiverConfig, HttpReceiverConfig
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.receivers.frames import read_frame, write_frame
from otel_anomaly.exporter.receivers.grpc import GrpcReceiver
from otel_anomaly.exporter.receivers.http import HttpReceiver
from otel_anomaly.exporter.receivers.intake import IntakeSpec, Outcome, Status
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.processors.signals.adapter import Signal

logger = logging.getLogger(__name__)
_GONE = "otel-anomaly is shutting down; retry later"


class _Link:
    """The child's end of the socket pair, on its event loop: calls out, outcomes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._pending: dict[int, asyncio.Future[tuple[str, str, bytes | None]]] = {}
        self._ids = itertools.count()
        self.stop = threading.Event()
        self.grace_s = 0.0
        # The sidecar reads "started" (or "failed") as the first frame; the receiver listens
        # before it can say so, and a client's call in between came first: the sidecar
        # took it for a failed start and killed a healthy process. Calls and posts wait.
        self._announced = asyncio.Event()
        self._held: list[tuple[Any, ...]] = []
        self._task = asyncio.get_running_loop().create_task(self._read())

    def post(self, frame: tuple[Any, ...]) -> None:
        """Send a frame that needs no answer (held until the process has announced itself)."""
        if not self._announced.is_set():
            self._held.append(frame)
        elif not self._writer.is_closing():
            write_frame(self._writer, frame)

    async def announce(self, frame: tuple[Any, ...]) -> None:
        """Send the first frame ("started" or "failed"), then what waited for it."""
        if not self._writer.is_closing():
            for each in (frame, *self._held):
                write_frame(self._writer, each)
        self._held.clear()
        self._announced.set()
        await self._writer.drain()

    async def call(self, transport: str, signal_name: Signal, data: bytes, count: int,
                   scan: bool) -> tuple[str, str, bytes | None]:
        """Forward one request; the sidecar's status, message and serialized reply."""
        if self.stop.is_set() and self.grace_s <= 0:
            return "unavailable", _GONE, None
        await self._announced.wait()
        call_id = next(self._ids)
        future: asyncio.Future[tuple[str, str, bytes | None]] = (
            asyncio.get_running_loop().create_future())
        self._pending[call_id] = future
        try:
            write_frame(self._writer,
                        ("export", call_id, transport, signal_name, data, count, scan))
            await self._writer.drain()  # a sidecar that reads slowly slows the calls down
            return await future
        except ConnectionError:
            return "unavailable", _GONE, None
        finally:
            self._pending.pop(call_id, None)

    async def _read(self) -> None:
        try:
            while True:
                frame = await read_frame(self._reader)
                if frame[0] == "outcome":
                    future = self._pending.get(frame[1])
                    if future is not None and not future.done():
                        future.set_result((frame[2], frame[3], frame[4]))
                elif frame[0] == "ping":  # the sidecar checks that this loop still runs
                    self.post(("pong", frame[1]))
                elif frame[0] == "stop":
                    self.grace_s = float(frame[1])
                    self.stop.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sidecar closed its end: stop at once
        for future in self._pending.values():
            if not future.done():
                future.set_result(("unavailable", _GONE, None))
        self.stop.set()


class _ForwardedTelemetry:
    """What ``GrpcReceiver`` counts itself (refused and undecodable calls), sent on."""

    def __init__(self, link: _Link) -> None:
        self._link = link

    def request(self, transport: str, signal_name: Signal, outcome: str) -> None:
        self._link.post(("request", transport, signal_name, outcome))


class ForwardingIntake:
    """``Intake``'s place in the receiver process: the pipeline is in the sidecar."""

    def __init__(self, link: _Link, retry_after_s: float) -> None:
        self._link = link
        self.telemetry = _ForwardedTelemetry(link)
        self.retry_after_s = retry_after_s

    async def export(
        self, transport: str, spec: IntakeSpec, request: Message, data: bytes | None = None,
        count: int | None = None,
    ) -> Outcome:
        """Forward a decoded request (an empty one is answered here, as ``Intake`` does)."""
        if count is None:
            count = spec.count(request)  # counted here, on this process' core
        if count == 0:
            self.telemetry.request(transport, spec.signal, "empty")
            return Outcome("ok", response=spec.response())
        # Bytes the client sent are scanned by the engine; a request decoded from JSON (or
        # a remote-write body) is serialized for the trip only, and walked, as in-process.
        scan = data is not None
        body = data if data is not None else request.SerializeToString()
        status, message, reply = await self._link.call(transport, spec.signal, body, count,
                                                       scan)
        response = None if reply is None else spec.response()
        if response is not None and reply is not None:
            response.ParseFromString(reply)
        return Outcome(cast(Status, status), message, response)


def serve(config: GrpcReceiverConfig | HttpReceiverConfig, auth: BearerAuthConfig,
          retry_after_s: float, sock: socket.socket, log_level: int) -> None:
    """The receiver process' main: serve until the sidecar says stop (or goes away).

    ``config`` says which receiver: ``receivers.grpc`` or ``receivers.http``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kind = "grpc" if isinstance(config, GrpcReceiverConfig) else "http"
    threading.current_thread().name = f"otel-anomaly-{kind}-receiver"
    name_this_thread()  # the main thread's name is the process' in ps and top
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    io = IoLoop()
    io.start()
    link: _Link = io.run(_open(sock))
    intake = ForwardingIntake(link, retry_after_s)
    receiver: GrpcReceiver | HttpReceiver = (
        GrpcReceiver(config, intake, io, auth) if isinstance(config, GrpcReceiverConfig)
        else HttpReceiver(config, intake, io, auth))
    try:
        receiver.start()
    except Exception as exc:  # noqa: BLE001 -- any reason goes to the sidecar, which says it
        reason = str(exc) if isinstance(exc, StartupError) else (
            f"{type(receiver).__name__} failed to start: {type(exc).__name__}: {exc}")
        io.run(link.announce(("failed", reason)))
        io.shutdown()
        return
    io.run(link.announce(("started", receiver.port)))
    link.stop.wait()
    receiver.shutdown(link.grace_s)
    io.shutdown()


async def _open(sock: socket.socket) -> _Link:
    reader, writer = await asyncio.open_connection(sock=sock)
    return _Link(reader, writer)
