"""Engine doubles for receiver and pipeline tests (injected via ``SidecarSettings``).

They subclass the real ``Engine`` and override its public API, so the exporter sees the
declared interface; receiver semantics can then be tested without depending on scoring.
"""

from __future__ import annotations

import threading

import numpy as np
from google.protobuf.message import Message
from numpy.typing import NDArray

from otel_anomaly.exporter.receivers.signals import (
    SPECS,
    Signal,
)
from otel_anomaly.processors.engine import Engine, EngineStats
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import IngestResult, Labels, SeriesKey


class RecordingEngine(Engine):
    """Accepts every item, scores nothing, and keeps every request it was given."""

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.requests: list[tuple[Signal, Message]] = []
        self.data: list[bytes | None] = []  # the bytes each request came with
        self.threads: set[str] = set()
        self.evict_calls = 0

    def ingest(self, signal: Signal, request: Message, data: bytes | None = None
               ) -> IngestResult:
        self.threads.add(threading.current_thread().name)
        self.requests.append((signal, request))
        self.data.append(data)
        return IngestResult(accepted=SPECS[signal].count(request))

    def evict_expired(self) -> NDArray[np.intp]:
        self.evict_calls += 1
        return np.empty(0, np.intp)

    def series_key(self, slot: int) -> SeriesKey:
        return SeriesKey(f"m{slot}", (), ())

    def series_labels(self, slot: int) -> Labels:
        return (("metric", f"m{slot}"),)

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0, 0)


class GatedEngine(RecordingEngine):
    """Blocks in every ingest until ``gate`` is set; ``entered`` is set on the first call."""

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def ingest(self, signal: Signal, request: Message, data: bytes | None = None
               ) -> IngestResult:
        self.entered.set()
        self.gate.wait(30)
        return super().ingest(signal, request, data)


class FailingEngine(RecordingEngine):
    """Raises ``failure`` from ingest while it is set (then behaves like RecordingEngine)."""

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.failure: Exception | None = ValueError("boom: detector state is inconsistent")

    def ingest(self, signal: Signal, request: Message, data: bytes | None = None
               ) -> IngestResult:
        if self.failure is not None:
            raise self.failure
        return super().ingest(signal, request, data)


class EngineHolder:
    """A factory for ``SidecarSettings.engine_factory`` that remembers what it built."""

    def __init__(self, cls: type[RecordingEngine]) -> None:
        self.cls = cls
        self.engine: RecordingEngine | None = None

    def __call__(self, settings: EngineSettings) -> Engine:
        self.engine = self.cls(settings)
        return self.engine
