"""A receiver in a process of its own (``receivers.grpc.separate_process``, ``.http.``).

One Python process scores on about one core whatever the machine has: its threads take
turns under the GIL. Receiving over gRPC is a third of that turn on a busy sidecar (the
aio server's callbacks, decoding, counting: ``benchmarks/ingest.py``'s ``io`` thread). So
a spawned process (``receiver_child.serve``) runs the same ``GrpcReceiver`` (or
``HttpReceiver``) and forwards each request's bytes over a socket pair (``frames``). In the
sidecar a thread of its own (``otel-anomaly-forward``, no event loop: blocking reads release
the GIL) decodes them again (upb, a small share of what receiving cost) and queues them
through the usual ``Intake`` (``submit``), so queue limits, partial success, telemetry and
errors are the same; the outcome goes back from the pipeline's completion (``finish``).

The component has the receiver's lifecycle: ``start`` returns once the process listens
(or raises its ``StartupError``); ``shutdown`` tells it to stop with a grace for calls in
flight, whose outcomes this end still sends. If the process dies, the error is logged,
``listening`` turns false (``/readyz`` fails) and the process is started again on the same
port after a second (then 2, 4, ... up to 30 s while that fails); calls it had in flight
fail on the client's side, which retries them. A process alive but hung (its event loop
answers no ping for ``HUNG_AFTER_S``) is killed, and so restarted.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
import time
from concurrent.futures import Future
from multiprocessing.process import BaseProcess

from google.protobuf.message import Message

from otel_anomaly.exporter.config import BearerAuthConfig, GrpcReceiverConfig, HttpReceiverConfig
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.receivers.frames import Frame, recv_frame, send_frame
from otel_anomaly.exporter.receivers.intake import Intake, IntakeSpec, Outcome
from otel_anomaly.exporter.receivers.receiver_child import serve
from otel_anomaly.exporter.receivers.remote_write import RemoteWriteSpec
from otel_anomaly.exporter.receivers.signals import SPECS, Signal
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.processors.signals.remote_write_proto import WriteRequest
from otel_anomaly.processors.types import IngestResult

logger = logging.getLogger(__name__)
_START_TIMEOUT_S = 60.0  # a spawned interpreter imports grpc and the package first
_RESTART_FIRST_S = 1.0  # a process that died is restarted after this, then twice as long
_RESTART_LAST_S = 30.0  # ... up to this, while restarts fail
PING_EVERY_S = 2.0
"""How often the sidecar pings a receiver process' event loop."""
HUNG_AFTER_S = 20.0
"""A receiver process whose loop has not answered a ping for this long is killed (and so
restarted): alive but hung, it would serve nothing while ``/readyz`` said ready."""
_REMOTE_WRITE = RemoteWriteSpec()


class ReceiverProcess:
    """``GrpcReceiver`` or ``HttpReceiver`` in a spawned process; requests come back here.

    Parameters
    ----------
    config
        ``receivers.grpc`` or ``receivers.http``: which receiver, and its settings.
    intake
        Where decoded requests go.
    io
        Unused: the process has its own loop (the parameter keeps ``GrpcReceiver``'s shape).
    auth
        ``receivers.auth``: the bearer token calls must carry, if set.
    """

    def __init__(
        self, config: GrpcReceiverConfig | HttpReceiverConfig, intake: Intake,
        io: IoLoop | None = None, auth: BearerAuthConfig | None = None,
    ) -> None:
        del io
        self._config = config
        grpc = isinstance(config, GrpcReceiverConfig)
        self._what = "OTLP/gRPC receiver" if grpc else "OTLP/HTTP receiver"
        self._serves = "OTLP/gRPC" if grpc else "OTLP/HTTP and remote-write"
        self._intake = intake
        self._auth = auth or BearerAuthConfig()
        self._process: BaseProcess | None = None
        self._sock: socket.socket | None = None
        self._sending = threading.Lock()
        self._reader: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._port: int | None = None
        self._stopping = False
        self._stopped = threading.Event()  # wakes a restart's back-off at shutdown
        self._answered = 0.0  # when the process last answered a ping (monotonic)

    @property
    def port(self) -> int | None:
        """The bound port once started (useful with port 0)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The receiver process' id once started."""
        return None if self._process is None else self._process.pid

    @property
    def listening(self) -> bool:
        """True while a receiver process serves calls (not while one is being restarted)."""
        return (self._process is not None and self._process.is_alive()
                and self._reader is not None and self._reader.is_alive()
                and not self._stopping)

    def start(self) -> None:
        """Spawn the process; return once it listens (raises ``StartupError`` if it cannot)."""
        if self._process is not None or self._stopping:
            return
        self._spawn(self._config)
        self._reader = threading.Thread(target=self._forward, name="otel-anomaly-forward",
                                        daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, name="otel-anomaly-watch",
                                         daemon=True)
        self._watcher.start()

    def _spawn(self, config: GrpcReceiverConfig | HttpReceiverConfig) -> None:
        """Start a receiver process on ``config``; once it listens, it is the one in use."""
        ours, theirs = socket.socketpair()
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        process = context.Process(
            target=serve, name="otel-anomaly-receiver", daemon=True,
            args=(config, self._auth, self._intake.retry_after_s, theirs,
                  logging.getLogger().getEffectiveLevel()),
        )
        process.start()
        theirs.close()
        try:
            port = self._listened(ours)
        except BaseException:
            _stop(process, 0.0)
            ours.close()
            raise
        with self._sending:
            self._process, self._sock, self._port = process, ours, port
            self._answered = time.monotonic()  # as if it had just answered a ping

    def _listened(self, sock: socket.socket) -> int:
        """The port the process reports, once it listens."""
        sock.settimeout(_START_TIMEOUT_S)
        try:
            first = recv_frame(sock)
        except TimeoutError as exc:
            msg = f"{self._what}: its process did not listen within {_START_TIMEOUT_S:g}s"
            raise StartupError(msg) from exc
        except (EOFError, OSError) as exc:
            msg = f"{self._what}: its process exited before it listened"
            raise StartupError(msg) from exc
        finally:
            sock.settimeout(None)
        if first[0] != "started":
            raise StartupError(str(first[1]))
        return int(first[1])

    def _forward(self) -> None:
        """The forward thread: each receiver process' requests in turn, restarting it if it dies."""
        name_this_thread()
        delay = _RESTART_FIRST_S
        while True:
            sock = self._sock
            if sock is not None:
                self._read(sock)
            if self._stopping:
                return
            if sock is not None:
                sock.close()  # calls still answering on it find it closed: the client retries
            process = self._process
            logger.error("the %s process exited (exit code %s): %s is not served; "
                         "restarting it in %gs", self._what,
                         None if process is None else process.exitcode, self._serves, delay)
            if self._stopped.wait(delay):
                return
            try:  # on the port it had, even where the config says 0
                self._spawn(self._config.model_copy(update={"endpoint": self._endpoint()}))
            except StartupError as exc:
                logger.error("%s: restart failed: %s", self._what, exc)
                delay = min(2 * delay, _RESTART_LAST_S)
                continue
            if self._stopping:  # shut down while it started: ``shutdown`` missed this one
                self._halt(1.0)
                return
            logger.info("%s restarted (pid %s)", self._what, self.pid)
            delay = _RESTART_FIRST_S

    def _watch(self) -> None:
        """Ping the receiver process; kill it if its loop stopped answering (it restarts)."""
        name_this_thread()
        pings = 0
        while not self._stopped.wait(PING_EVERY_S):
            with self._sending:
                sock, process = self._sock, self._process
                answered = self._answered
            if sock is None or process is None or not process.is_alive():
                continue  # not started yet, or dead: the forward thread restarts it
            if time.monotonic() - answered > HUNG_AFTER_S:
                logger.error("the %s process (pid %s) answered no ping for %gs: killed, to "
                             "be restarted", self._what, process.pid, HUNG_AFTER_S)
                process.kill()
                continue
            pings += 1
            with self._sending, contextlib.suppress(OSError):
                send_frame(sock, ("ping", pings))

    def _endpoint(self) -> str:
        host = self._config.endpoint.rpartition(":")[0]
        return f"{host}:{self._port}" if self._port is not None else self._config.endpoint

    def _read(self, sock: socket.socket) -> None:
        try:
            while True:
                frame = recv_frame(sock)
                if frame[0] == "export":
                    self._export(sock, frame)
                elif frame[0] == "request":
                    self._intake.telemetry.request(*frame[1:])
                elif frame[0] == "pong":
                    self._answered = time.monotonic()
        except (EOFError, OSError):
            pass

    def _export(self, sock: socket.socket, frame: Frame) -> None:
        _, call_id, transport, signal, data, count, scan = frame
        spec: IntakeSpec = _REMOTE_WRITE if signal == _REMOTE_WRITE.signal else SPECS[signal]
        try:
            message = _parse(signal, data)  # the process decoded these bytes already
        except Exception as exc:  # noqa: BLE001 -- answered, never raised on the thread
            self._reply(sock, call_id,
                        Outcome("internal", f"cannot decode the forwarded request: {exc}"))
            return
        scanned = data if scan else None  # the client's own bytes, as ``receive`` keeps
        submitted = self._intake.submit(transport, spec, message, scanned, count)
        if isinstance(submitted, Outcome):
            self._reply(sock, call_id, submitted)
        else:  # answered from the pipeline's thread once it is done
            submitted.add_done_callback(
                lambda done: self._finished(sock, call_id, transport, spec, done))

    def _finished(self, sock: socket.socket, call_id: int, transport: str, spec: IntakeSpec,
                  done: Future[IngestResult]) -> None:
        self._reply(sock, call_id, self._intake.finish(transport, spec, done))

    def _reply(self, sock: socket.socket, call_id: int, outcome: Outcome) -> None:
        """Answer on the socket the call came from (a process gone, or replaced, needs none)."""
        reply = None if outcome.response is None else outcome.response.SerializeToString()
        with self._sending, contextlib.suppress(OSError):
            send_frame(sock, ("outcome", call_id, outcome.status, outcome.message, reply))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting calls; in-flight calls get up to ``timeout`` to finish."""
        if self._stopping:
            return
        self._stopping = True
        self._stopped.set()
        self._halt(timeout)
        if self._reader is not None:
            self._reader.join(timeout + 1.0)
        if self._watcher is not None:
            self._watcher.join(1.0)

    def _halt(self, grace_s: float) -> None:
        """Stop the current process (``grace_s`` for its calls) and end its socket."""
        with self._sending:
            sock, process = self._sock, self._process
            if sock is not None:
                with contextlib.suppress(OSError):
                    send_frame(sock, ("stop", grace_s))
        if process is not None:
            _stop(process, grace_s + 1.0)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # ends the forward thread's recv
            sock.close()


def _stop(process: BaseProcess, timeout: float) -> None:
    """Wait up to ``timeout`` for ``process`` to exit, then kill it."""
    process.join(timeout)
    if process.is_alive():
        logger.warning("a receiver process (pid %s) did not stop within %.1fs: killed",
                       process.pid, timeout)
        process.kill()
        process.join(1.0)


def _parse(signal: Signal, data: bytes) -> Message:
    """The request a receiver process forwarded, decoded again."""
    if signal == _REMOTE_WRITE.signal:
        request: Message = WriteRequest()
        request.ParseFromString(data)
        return request
    return SPECS[signal].parse(data)
