"""Optional: every score as OTLP metrics (observable gauges), pushed periodically."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel_anomaly.exporter.config import EventsConfig
from otel_anomaly.exporter.events import SERVICE_NAME
from otel_anomaly.exporter.prometheus import OUTPUTS
from otel_anomaly.exporter.scores import ScoreTable

SCOPE_NAME = "otel_anomaly.exporter.scores"


class ScoreMetricsExporter:
    """Pushes the score table as gauges ``otel_anomaly.score``, ``.value``, ... over OTLP.

    Parameters
    ----------
    config
        ``events`` (endpoint, insecure, headers, timeout, metrics_interval).
    scores
        The table read at each collection.
    max_series
        At most this many series per collection (as for Prometheus).
    """

    def __init__(self, config: EventsConfig, scores: ScoreTable, max_series: int) -> None:
        self._config = config
        self._scores = scores
        self._max_series = max_series
        self._provider: MeterProvider | None = None
        self._closed = False

    def start(self) -> None:
        """Create the meter provider (its reader thread starts here)."""
        config = self._config
        if self._provider is not None or self._closed or not config.endpoint:
            return
        exporter = OTLPMetricExporter(
            endpoint=config.endpoint,
            insecure=config.insecure,
            headers=dict(config.headers),
            timeout=config.timeout,
        )
        reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=config.metrics_interval * 1000
        )
        provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": SERVICE_NAME}),
            shutdown_on_exit=False,
        )
        meter = provider.get_meter(SCOPE_NAME)
        for name, column, documentation in OUTPUTS:
            meter.create_observable_gauge(
                name.replace("otel_anomaly_", "otel_anomaly."),
                callbacks=[self._observe(column)],
                description=documentation,
            )
        self._provider = provider

    def _observe(self, column: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            snapshot = self._scores.snapshot(self._max_series)
            values = getattr(snapshot, column).astype(float)
            finite = np.isfinite(values)  # e.g. no band while warming up: nothing to report
            labels = snapshot.labels
            return [
                Observation(value, labels[row])
                for row, value in zip(np.flatnonzero(finite).tolist(), values[finite].tolist(),
                                      strict=True)
            ]

        return callback

    def shutdown(self, timeout: float = 10.0) -> None:
        """Export once more and stop."""
        self._closed = True
        provider, self._provider = self._provider, None
        if provider is not None:
            provider.shutdown(timeout_millis=timeout * 1000)
