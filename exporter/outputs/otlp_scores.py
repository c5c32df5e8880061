"""The OTLP scores output: each score as an OTLP gauge of its series' resource, pushed on a timer.

An SDK ``MeterProvider`` binds one resource, so scores pushed through observable gauges
all came from the sidecar (``service.name=otel-anomaly``), and a backend filed every
score under it instead of under the service it scores. As for events, the gauges are
built here, one ``ResourceMetrics`` per monitored resource, and handed to the SDK's
``OTLPMetricExporter`` (its retries, compression and headers) on a push thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_anomaly.exporter.config_outputs import OtlpScoresConfig
from otel_anomaly.exporter.outputs.base import ScoringRound
from otel_anomaly.exporter.outputs.otlp_events import SERVICE_NAME, event_resource
from otel_anomaly.exporter.outputs.prometheus import SCORE_GAUGES
from otel_anomaly.exporter.outputs.score_table import ScoreSnapshot, ScoreTable
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.processors.types import Labels

logger = logging.getLogger(__name__)

SCOPE = InstrumentationScope("otel_anomaly.exporter.scores")
SIDECAR_RESOURCE = Resource({"service.name": SERVICE_NAME})
"""The resource of series that have none of their own."""
_RESOURCES = 1024  # distinct resources kept built (a push repeats the same services)
POINTS_PER_REQUEST = 8192
"""Gauge points per export request: a push of 10k series (70k points) in one request
would pass the Collector's default 4 MiB gRPC limit; 8,192 points stay near 1 MiB."""


def scores_data(snapshot: ScoreSnapshot, time_unix_nano: int,
                resource_of: Callable[[Labels], Resource] = event_resource) -> MetricsData:
    """The snapshot's gauges (``otel_anomaly.score``, ...), grouped by their series' resource.

    A row's attributes are its Prometheus labels; a column's non-finite values (no band
    while warming up) are left out. Rows without a resource (``snapshot.resources`` empty,
    or an empty one) go under the sidecar's resource.
    """
    rows_by_resource: dict[Labels, list[int]] = defaultdict(list)
    resources = snapshot.resources or [()] * len(snapshot)
    for row, resource in enumerate(resources):
        rows_by_resource[resource].append(row)
    columns = {column: getattr(snapshot, column).astype(float) for _, column, _ in SCORE_GAUGES}
    out = []
    for resource, rows in rows_by_resource.items():
        metrics = []
        for name, column, documentation in SCORE_GAUGES:
            values = columns[column][rows]
            points = [
                NumberDataPoint(snapshot.labels[rows[i]], 0, time_unix_nano, value)
                for i, value in zip(np.flatnonzero(np.isfinite(values)).tolist(),
                                    values[np.isfinite(values)].tolist(), strict=True)
            ]
            if points:
                metrics.append(Metric(name.replace("otel_anomaly_", "otel_anomaly."),
                                      documentation, "", Gauge(points)))
        if metrics:
            out.append(ResourceMetrics(resource_of(resource) if resource else SIDECAR_RESOURCE,
                                       [ScopeMetrics(SCOPE, metrics, "")], ""))
    return MetricsData(out)


class OtlpScoresOutput:
    """Pushes the latest scores as gauges ``otel_anomaly.score``, ``.value``, ... over OTLP.

    Keeps its own ``ScoreTable`` (with each series' resource), fed by rounds on the
    output's thread; every ``interval`` a push thread takes one snapshot and exports all
    its gauges from it, so a series' value, band and flag always come from the same round.

    Parameters
    ----------
    config
        ``outputs.otlp_scores`` (endpoint, insecure, headers, timeout, interval).
    max_series
        At most this many series per push (as for Prometheus).
    exporter
        Receives the pushes instead of an ``OTLPMetricExporter`` to ``config.endpoint``
        (tests); the output then runs whatever the endpoint.
    points_per_request
        Most gauge points in one export request; a push larger than that is split.
    telemetry
        Counts pushes the endpoint did not take (``otel_anomaly_output_errors_total``,
        ``error="export_failed"``).
    """

    name = "otlp_scores"
    inline = False
    needs_resources = True

    def __init__(
        self, config: OtlpScoresConfig, max_series: int, exporter: MetricExporter | None = None,
        points_per_request: int = POINTS_PER_REQUEST, telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._config = config
        self._points_per_request = points_per_request
        self._max_series = max_series
        self._exporter = exporter
        self.table = ScoreTable(keep_resources=True)
        self._resource_of = functools.lru_cache(maxsize=_RESOURCES)(event_resource)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._push_lock = threading.Lock()
        self._failing = False
        self._closed = False

    def start(self) -> None:
        """Create the exporter and start the push thread."""
        config = self._config
        if self._thread is not None or self._closed:
            return
        if self._exporter is None:
            if not config.endpoint:
                return
            self._exporter = OTLPMetricExporter(
                endpoint=config.endpoint,
                insecure=config.insecure,
                headers=dict(config.headers),
                timeout=config.timeout,
                max_export_batch_size=self._points_per_request,
            )
        self._thread = threading.Thread(target=self._run, name="otel-anomaly-scores-push",
                                        daemon=True)
        self._thread.start()

    def publish(self, scoring_round: ScoringRound) -> None:
        """Apply the round's evictions, then its scores, to the table the pushes read."""
        self.table.remove(scoring_round.evicted)
        self.table.update(scoring_round.scores, scoring_round.labels, scoring_round.resources)

    def push(self, timeout: float | None = None) -> MetricExportResult | None:
        """Export the current scores now (``None``: nothing to export, or no exporter).

        ``timeout`` (s) bounds the export, retries included (default ``config.timeout``).
        """
        exporter = self._exporter
        if exporter is None:
            return None
        with self._push_lock:  # the timer's push and the final one never overlap
            data = scores_data(self.table.snapshot(self._max_series), time.time_ns(),
                               self._resource_of)
            if not data.resource_metrics:
                return None
            seconds = self._config.timeout if timeout is None else timeout
            result = exporter.export(data, timeout_millis=seconds * 1000)
        failing = result is not MetricExportResult.SUCCESS
        if failing and self._telemetry is not None:
            self._telemetry.output_failed(self.name, "export_failed")
        if failing and not self._failing:
            logger.warning("otlp_scores: export to %s failed; retrying every %ss",
                           self._config.endpoint, self._config.interval)
        self._failing = failing
        return result

    def _run(self) -> None:
        name_this_thread()
        while not self._stop.wait(self._config.interval):
            try:
                self.push()
            except Exception:  # noqa: BLE001 - the next interval tries again
                logger.exception("otlp_scores: push failed")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Export once more and stop."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        started = time.monotonic()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            try:
                self.push(min(self._config.timeout, _left(started, timeout)))
            except Exception:  # noqa: BLE001 - shutting down: log and let go
                logger.exception("otlp_scores: final push failed")
        exporter = self._exporter
        if exporter is not None:
            exporter.shutdown(timeout_millis=_left(started, timeout) * 1000)


def _left(started: float, timeout: float) -> float:
    """Seconds left of ``timeout`` since ``started`` (monotonic), at least 0."""
    return max(0.0, timeout - (time.monotonic() - started))
