"""The engine: OTLP requests in, scores and anomaly events out. One owner, one thread.

Not thread-safe by design: the exporter's pipeline worker is its only caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import IngestResult, Labels, SeriesKey


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Gauges and counters the exporter publishes as self-metrics."""

    series_active: int
    series_warming: int
    series_evicted_total: int
    points_scored_total: int


class Engine:
    """Turns OTLP requests into scored series (stub: API only, implementation follows)."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings

    def ingest_metrics(self, request: ExportMetricsServiceRequest) -> IngestResult:
        """Extract, score and learn every data point of a metrics request."""
        raise NotImplementedError

    def ingest_traces(self, request: ExportTraceServiceRequest) -> IngestResult:
        """Aggregate spans into RED windows (scored when they close) and score span outliers."""
        raise NotImplementedError

    def ingest_logs(self, request: ExportLogsServiceRequest) -> IngestResult:
        """Aggregate log records into per-service rate and error-ratio windows."""
        raise NotImplementedError

    def ingest_series(
        self,
        keys: Sequence[SeriesKey],
        ts_unix_nano: NDArray[np.int64],
        values: NDArray[np.float64],
    ) -> IngestResult:
        """Score already-extracted points (the path backtests and every signal share)."""
        raise NotImplementedError

    def evict_expired(self) -> NDArray[np.intp]:
        """Free series idle for longer than ``series_ttl_s``; return their slots."""
        raise NotImplementedError

    def series_key(self, slot: int) -> SeriesKey:
        """Identity of the series in ``slot``."""
        raise NotImplementedError

    def series_labels(self, slot: int) -> Labels:
        """Prometheus labels of the series in ``slot`` (``metric``, ``detector``, ``job``...)."""
        raise NotImplementedError

    def stats(self) -> EngineStats:
        """Current counts for self-metrics."""
        raise NotImplementedError
