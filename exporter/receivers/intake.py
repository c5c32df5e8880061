"""The receive policy both OTLP receivers share: count, queue, await, classify the outcome.

gRPC and HTTP only translate an ``Outcome`` into their status codes, so the semantics
(empty request answered at once, full queue is retryable, engine failure is internal)
are written once.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from google.protobuf.message import Message

from otel_anomaly.exporter.pipeline import Pipeline
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.signals.adapter import Signal
from otel_anomaly.processors.types import IngestResult

Status = Literal["ok", "unavailable", "internal"]


class IntakeSpec(Protocol):
    """What the intake needs of a kind of request (``signals.SignalSpec`` and the like)."""

    @property
    def signal(self) -> Signal:
        """The adapter the engine runs on it."""
        ...

    def count(self, request: Any) -> int:
        """Items in ``request`` (the adapter's count)."""
        ...

    def response(self, result: IngestResult | None = None) -> Message | None:
        """The protocol's reply to a request taken with ``result`` (None: no body)."""
        ...


class RequestCounter(Protocol):
    """Where a receiver counts the calls it answers itself (``Telemetry.request``)."""

    def request(self, transport: str, signal: Signal, outcome: str) -> None:
        """Count one export request and how it ended."""
        ...


class Exports(Protocol):
    """What a receiver hands requests to: ``Intake``, or a receiver process' forwarder."""

    @property
    def telemetry(self) -> RequestCounter:
        """Where refused and undecodable calls are counted."""
        ...

    @property
    def retry_after_s(self) -> float:
        """Back-off suggested to clients when the queue is full."""
        ...

    async def export(
        self, transport: str, spec: IntakeSpec, request: Message, data: bytes | None = None,
        count: int | None = None,
    ) -> Outcome:
        """Process one decoded request (``Intake.export``)."""
        ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an export ended: ``ok`` with a response, or an error status with a message."""

    status: Status
    message: str = ""
    response: Message | None = None


class Intake:
    """Hands decoded requests to the pipeline and waits for the result without blocking.

    Parameters
    ----------
    pipeline
        Where requests go.
    telemetry
        Self-metrics: requests, received and dropped items.
    retry_after_s
        Back-off suggested to clients when the queue is full.
    """

    def __init__(self, pipeline: Pipeline, telemetry: Telemetry, retry_after_s: float) -> None:
        self.pipeline = pipeline
        self.telemetry = telemetry
        self.retry_after_s = retry_after_s

    async def export(
        self, transport: str, spec: IntakeSpec, request: Message, data: bytes | None = None,
        count: int | None = None,
    ) -> Outcome:
        """Process one decoded request; never raises except on cancellation.

        ``data``: the bytes ``request`` was decoded from, if the engine may scan them;
        ``count``: its items, if already known (else ``spec.count`` counts them).
        """
        submitted = self.submit(transport, spec, request, data, count)
        if isinstance(submitted, Outcome):
            return submitted
        with contextlib.suppress(Exception):  # ``finish`` reads and reports the failure
            await asyncio.wrap_future(submitted)
        return self.finish(transport, spec, submitted)

    def submit(
        self, transport: str, spec: IntakeSpec, request: Message, data: bytes | None = None,
        count: int | None = None,
    ) -> Outcome | Future[IngestResult]:
        """``export``'s first half, without an event loop: queue the request.

        The outcome at once (an empty request, a full queue), else the pipeline's future,
        to be passed to ``finish`` once done.
        """
        signal = spec.signal
        if count is None:
            count = spec.count(request)
        if count == 0:
            self.telemetry.request(transport, signal, "empty")
            return Outcome("ok", response=spec.response())
        self.telemetry.received(signal, count)
        future = self.pipeline.submit(signal, request, count, data)
        if future is None:
            reason = "queue_full" if self.pipeline.accepting else "shutting_down"
            self.telemetry.dropped(signal, reason, count)
            self.telemetry.request(transport, signal, reason)
            return Outcome("unavailable", self._unavailable_message(reason))
        return future

    def finish(self, transport: str, spec: IntakeSpec, done: Future[IngestResult]) -> Outcome:
        """``export``'s second half: the outcome of a request the pipeline is done with."""
        signal = spec.signal
        try:
            result = done.result()
        except Exception as exc:  # noqa: BLE001 - reported to the client, counted by the worker
            self.telemetry.request(transport, signal, "internal_error")
            message = f"processing the {signal} request failed: {type(exc).__name__}: {exc}"
            return Outcome("internal", message)
        self.telemetry.request(transport, signal, "partial" if result.rejected_total else "ok")
        return Outcome("ok", response=spec.response(result))

    def _unavailable_message(self, reason: str) -> str:
        if reason == "shutting_down":
            return "otel-anomaly is shutting down; retry later"
        return (
            "otel-anomaly is overloaded: the intake queue is full "
            f"(pipeline.queue_size); retry after {self.retry_after_s:g}s"
        )
