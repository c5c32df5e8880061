"""The OTLP/gRPC receiver in a process of its own (``receivers.grpc.separate_process``).

One Python process scores on about one core whatever the machine has: its threads take
turns under the GIL. Receiving over gRPC is a third of that turn on a busy sidecar (the
aio server's callbacks, decoding, counting: ``benchmarks/ingest.py``'s ``io`` thread). Here
a spawned process (``grpc_child.serve``) runs the same ``GrpcReceiver`` and forwards each
request's bytes over a socket pair (``frames``). Here a thread of its own
(``otel-anomaly-forward``, no event loop: blocking reads release the GIL) decodes them again
(upb, a small share of what receiving cost) and queues them through the usual ``Intake``
(``submit``), so queue limits, partial success, telemetry and errors are the same; the
outcome goes back from the pipeline's completion (``finish``).

The component has ``GrpcReceiver``'s lifecycle: ``start`` returns once the process listens
(or raises its ``StartupError``); ``shutdown`` tells it to stop with a grace for calls in
flight, whose outcomes this end still sends. If the process dies, ``listening`` turns
false (``/readyz`` fails) and the error is logged.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import threading
from concurrent.futures import Future
from multiprocessing.process import BaseProcess

from otel_anomaly.exporter.config import BearerAuthConfig, GrpcReceiverConfig
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.receivers.frames import Frame, recv_frame, send_frame
from otel_anomaly.exporter.receivers.grpc_child import serve
from otel_anomaly.exporter.receivers.intake import Intake, Outcome
from otel_anomaly.exporter.receivers.signals import SPECS, SignalSpec
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.processors.types import IngestResult

logger = logging.getLogger(__name__)
_START_TIMEOUT_S = 60.0  # a spawned interpreter imports grpc and the package first
_WHAT = "OTLP/gRPC receiver"


class GrpcProcessReceiver:
    """``GrpcReceiver`` in a spawned process; requests come back here for the pipeline.

    Parameters
    ----------
    config
        ``receivers.grpc``.
    intake
        Where decoded requests go.
    io
        Unused: the process has its own loop (the parameter keeps ``GrpcReceiver``'s shape).
    auth
        ``receivers.auth``: the bearer token calls must carry, if set.
    """

    def __init__(
        self, config: GrpcReceiverConfig, intake: Intake, io: IoLoop | None = None,
        auth: BearerAuthConfig | None = None,
    ) -> None:
        del io
        self._config = config
        self._intake = intake
        self._auth = auth or BearerAuthConfig()
        self._process: BaseProcess | None = None
        self._sock: socket.socket | None = None
        self._sending = threading.Lock()
        self._reader: threading.Thread | None = None
        self._port: int | None = None
        self._stopping = False

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
        """True while the receiver process serves calls."""
        return (self._process is not None and self._process.is_alive()
                and self._reader is not None and self._reader.is_alive()
                and not self._stopping)

    def start(self) -> None:
        """Spawn the process; return once it listens (raises ``StartupError`` if it cannot)."""
        if self._process is not None or self._stopping:
            return
        ours, theirs = socket.socketpair()
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        process = context.Process(
            target=serve, name="otel-anomaly-grpc", daemon=True,
            args=(self._config, self._auth, self._intake.retry_after_s, theirs,
                  logging.getLogger().getEffectiveLevel()),
        )
        process.start()
        theirs.close()
        self._process, self._sock = process, ours
        try:
            self._port = self._listened(ours)
        except BaseException:
            self._stop_process(0.0)
            ours.close()
            raise
        self._reader = threading.Thread(target=self._read, args=(ours,),
                                        name="otel-anomaly-forward", daemon=True)
        self._reader.start()

    @staticmethod
    def _listened(sock: socket.socket) -> int:
        """The port the process reports, once it listens."""
        sock.settimeout(_START_TIMEOUT_S)
        try:
            first = recv_frame(sock)
        except TimeoutError as exc:
            msg = f"{_WHAT}: its process did not listen within {_START_TIMEOUT_S:g}s"
            raise StartupError(msg) from exc
        except (EOFError, OSError) as exc:
            msg = f"{_WHAT}: its process exited before it listened"
            raise StartupError(msg) from exc
        finally:
            sock.settimeout(None)
        if first[0] != "started":
            raise StartupError(str(first[1]))
        return int(first[1])

    def _read(self, sock: socket.socket) -> None:
        name_this_thread()
        try:
            while True:
                frame = recv_frame(sock)
                if frame[0] == "export":
                    self._export(frame)
                elif frame[0] == "request":
                    self._intake.telemetry.request(*frame[1:])
        except (EOFError, OSError):
            pass
        if not self._stopping:
            process = self._process
            logger.error("the %s process exited (exit code %s): OTLP/gRPC is not served",
                         _WHAT, None if process is None else process.exitcode)

    def _export(self, frame: Frame) -> None:
        _, call_id, transport, signal, data, count = frame
        spec = SPECS[signal]
        try:
            message = spec.parse(data)  # the process decoded these bytes already
        except Exception as exc:  # noqa: BLE001 -- answered, never raised on the thread
            self._reply(call_id, Outcome("internal", f"cannot decode the forwarded request: {exc}"))
            return
        scanned = data if signal != "logs" else None  # as ``SignalSpec.receive`` keeps
        submitted = self._intake.submit(transport, spec, message, scanned, count)
        if isinstance(submitted, Outcome):
            self._reply(call_id, submitted)
        else:  # answered from the pipeline's thread once it is done
            submitted.add_done_callback(
                lambda done: self._finished(call_id, transport, spec, done))

    def _finished(self, call_id: int, transport: str, spec: SignalSpec,
                  done: Future[IngestResult]) -> None:
        self._reply(call_id, self._intake.finish(transport, spec, done))

    def _reply(self, call_id: int, outcome: Outcome) -> None:
        reply = None if outcome.response is None else outcome.response.SerializeToString()
        sock = self._sock
        if sock is None:
            return
        with self._sending, contextlib.suppress(OSError):  # a process gone needs no answer
            send_frame(sock, ("outcome", call_id, outcome.status, outcome.message, reply))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting calls; in-flight calls get up to ``timeout`` to finish."""
        if self._stopping:
            return
        self._stopping = True
        sock = self._sock
        if sock is not None:
            with self._sending, contextlib.suppress(OSError):
                send_frame(sock, ("stop", timeout))
        self._stop_process(timeout + 1.0)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # ends the reading thread's recv
            if self._reader is not None:
                self._reader.join(1.0)
            with self._sending:
                self._sock = None
            sock.close()

    def _stop_process(self, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        process.join(timeout)
        if process.is_alive():
            logger.warning("the %s process did not stop within %.1fs: killed", _WHAT, timeout)
            process.kill()
            process.join(1.0)
