"""The OTLP scores output: every score as OTLP gauges (observable), pushed periodically."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel_anomaly.exporter.config_outputs import OtlpScoresConfig
from otel_anomaly.exporter.outputs.base import ScoringRound
from otel_anomaly.exporter.outputs.otlp_events import SERVICE_NAME
from otel_anomaly.exporter.outputs.prometheus import SCORE_GAUGES
from otel_anomaly.exporter.outputs.score_table import ScoreSnapshot, ScoreTable

SCOPE_NAME = "otel_anomaly.exporter.scores"


class SharedSnapshot:
    """One table snapshot per collection, shared by the callbacks of all the gauges.

    The SDK calls each observable gauge's callback in turn, and a round can land in the
    table between two of them: with a snapshot each, a series' value, band and flag could
    come from different rounds. The first callback of a collection takes the snapshot and
    the others reuse it; a callback whose column was already served starts a new one.

    Parameters
    ----------
    take
        Copies the table (``ScoreTable.snapshot`` with the series limit).
    columns
        The snapshot columns the gauges report, one callback each.
    """

    def __init__(self, take: Callable[[], ScoreSnapshot], columns: Iterable[str]) -> None:
        self._take = take
        self._columns = frozenset(columns)
        self._lock = threading.Lock()
        self._snapshot: ScoreSnapshot | None = None
        self._served: set[str] = set()

    def for_column(self, column: str) -> ScoreSnapshot:
        """The current collection's snapshot, for the gauge of ``column``."""
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or column in self._served:
                snapshot = self._snapshot = self._take()
                self._served = set()
            self._served.add(column)
            if self._served >= self._columns:
                self._snapshot = None  # every gauge has it: free the copy until next time
            return snapshot


class OtlpScoresOutput:
    """Pushes the latest scores as gauges ``otel_anomaly.score``, ``.value``, ... over OTLP.

    Keeps its own ``ScoreTable``, fed by rounds on the output's thread; the SDK's periodic
    reader observes it every ``interval``.

    Parameters
    ----------
    config
        ``outputs.otlp_scores`` (endpoint, insecure, headers, timeout, interval).
    max_series
        At most this many series per collection (as for Prometheus).
    reader
        Reads the gauges instead of the periodic OTLP exporter (tests); the output then
        runs whatever the endpoint.
    """

    name = "otlp_scores"
    inline = False

    def __init__(
        self, config: OtlpScoresConfig, max_series: int, reader: MetricReader | None = None
    ) -> None:
        self._config = config
        self._reader = reader
        self.table = ScoreTable()
        columns = [column for _, column, _ in SCORE_GAUGES]
        self._snapshots = SharedSnapshot(lambda: self.table.snapshot(max_series), columns)
        self._provider: MeterProvider | None = None
        self._closed = False

    def start(self) -> None:
        """Create the meter provider (its reader thread starts here)."""
        config = self._config
        if self._provider is not None or self._closed:
            return
        reader = self._reader
        if reader is None:
            if not config.endpoint:
                return
            exporter = OTLPMetricExporter(
                endpoint=config.endpoint,
                insecure=config.insecure,
                headers=dict(config.headers),
                timeout=config.timeout,
            )
            reader = PeriodicExportingMetricReader(
                exporter, export_interval_millis=config.interval * 1000
            )
        provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": SERVICE_NAME}),
            shutdown_on_exit=False,
        )
        meter = provider.get_meter(SCOPE_NAME)
        for name, column, documentation in SCORE_GAUGES:
            meter.create_observable_gauge(
                name.replace("otel_anomaly_", "otel_anomaly."),
                callbacks=[self._observe(column)],
                description=documentation,
            )
        self._provider = provider

    def publish(self, scoring_round: ScoringRound) -> None:
        """Apply the round's evictions, then its scores, to the table the gauges read."""
        self.table.remove(scoring_round.evicted)
        self.table.update(scoring_round.scores, scoring_round.labels)

    def _observe(self, column: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_: CallbackOptions) -> Iterable[Observation]:
            snapshot = self._snapshots.for_column(column)
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
