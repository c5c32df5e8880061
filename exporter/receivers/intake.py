"""The receive policy both OTLP receivers share: count, queue, await, classify the outcome.

gRPC and HTTP only translate an ``Outcome`` into their status codes, so the semantics
(empty request answered at once, full queue is retryable, engine failure is internal)
are written once.
"""

from __future__ import annotations

import asyncio
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
        try:
            result = await asyncio.wrap_future(future)
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
