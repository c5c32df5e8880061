"""Self-metrics: what the sidecar received, rejected, dropped, scored, evicted and sent.

Ordinary ``prometheus_client`` metrics with a handful of low-cardinality labels, on the
sidecar's own registry (never the default one), behind a small typed facade.
"""

from __future__ import annotations

import platform
import socket
import threading
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from otel_anomaly.exporter.distribution import version
from otel_anomaly.exporter.receivers.signals import SIGNALS, Signal
from otel_anomaly.processors.engine import EngineStats
from otel_anomaly.processors.types import IngestResult

_PROCESSING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Telemetry:
    """The sidecar's self-metrics, registered on ``registry``.

    Parameters
    ----------
    registry
        The sidecar's own registry; the metrics appear on its ``/metrics`` endpoint.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._received = Counter(
            "otel_anomaly_points_received",
            "Data points, spans or log records in decodable, non-empty requests.",
            ["signal"], registry=registry,
        )
        self._rejected = Counter(
            "otel_anomaly_points_rejected",
            "Items the engine rejected (reported to clients as partial success), by reason.",
            ["signal", "reason"], registry=registry,
        )
        self._skipped = Counter(
            "otel_anomaly_points_skipped",
            "Accepted items that produced no score (first point, counter reset, late...).",
            ["signal", "reason"], registry=registry,
        )
        self._dropped = Counter(
            "otel_anomaly_points_dropped",
            "Items not processed: queue full, shutting down, cancelled or internal error.",
            ["signal", "reason"], registry=registry,
        )
        self._requests = Counter(
            "otel_anomaly_requests",
            "Export requests by transport, signal and outcome.",
            ["transport", "signal", "outcome"], registry=registry,
        )
        self._processing = Histogram(
            "otel_anomaly_request_processing_seconds",
            "Time the pipeline worker spent on one request (ingest, scores, events).",
            ["signal"], buckets=_PROCESSING_BUCKETS, registry=registry,
        )
        self._errors = Counter(
            "otel_anomaly_pipeline_errors",
            "Processing failures by stage (a signal, or evict) and exception type.",
            ["stage", "error"], registry=registry,
        )
        self._init_series(registry)
        self._init_outputs(registry)
        self._init_process(registry)
        for signal in SIGNALS:
            self._received.labels(signal)

    def _init_series(self, registry: CollectorRegistry) -> None:
        self._series_active = Gauge(
            "otel_anomaly_series_active", "Series currently scored.", registry=registry
        )
        self._series_warming = Gauge(
            "otel_anomaly_series_warming", "Series still in warm-up.", registry=registry
        )
        self._evicted = Counter(
            "otel_anomaly_series_evicted", "Series evicted (idle or replaced).", registry=registry
        )
        self._scored = Counter(
            "otel_anomaly_points_scored", "Points that received a score.", registry=registry
        )
        self._deploys = Counter(
            "otel_anomaly_deploys",
            "Deploys seen: a service reported a service.version not seen before.",
            registry=registry,
        )
        self._multivariate_services = Gauge(
            "otel_anomaly_multivariate_services",
            "Services with a multivariate model (at most multivariate.max_services).",
            registry=registry,
        )
        self._multivariate_skipped = Counter(
            "otel_anomaly_multivariate_skipped",
            "Service feature vectors not modelled because of multivariate.max_services.",
            registry=registry,
        )
        self._services_silent = Gauge(
            "otel_anomaly_services_silent",
            "Services that stopped reporting: no data for series.silence_after.",
            registry=registry,
        )
        self._published = {"deploys": 0, "multivariate_skipped": 0}
        self._checkpoints = Counter(
            "otel_anomaly_checkpoints", "State checkpoints written, by outcome (ok, failed).",
            ["outcome"], registry=registry,
        )
        self._checkpoint_seconds = Gauge(
            "otel_anomaly_checkpoint_duration_seconds",
            "Time the last checkpoint took, until it was on disk.", registry=registry,
        )
        self._checkpoint_pause = Gauge(
            "otel_anomaly_checkpoint_pause_seconds",
            "Time scoring paused for the last checkpoint: the state written into the file "
            "(the fsync follows in the background).", registry=registry,
        )
        self._checkpoint_bytes = Gauge(
            "otel_anomaly_checkpoint_size_bytes", "Size of the last checkpoint written.",
            registry=registry,
        )
        self._restored = Gauge(
            "otel_anomaly_series_restored",
            "Series restored from the checkpoint at start-up.", registry=registry,
        )

    def _init_outputs(self, registry: CollectorRegistry) -> None:
        # Events produced, sent and dropped, as plain numbers: what ``settle_events`` reads.
        self._event_lock = threading.Lock()
        self._event_totals = {"produced": 0, "sent": 0, "dropped": 0}
        self._events_settled = False
        self._events = Counter(
            "otel_anomaly_events", "Anomaly events produced, by kind.", ["kind"],
            registry=registry,
        )
        self._events_sent = Counter(
            "otel_anomaly_events_sent", "Anomaly events the OTLP endpoint accepted.",
            registry=registry,
        )
        self._events_dropped = Counter(
            "otel_anomaly_events_dropped", "Anomaly events not delivered, by reason.",
            ["reason"], registry=registry,
        )
        self._output_dropped = Counter(
            "otel_anomaly_output_dropped",
            "Scoring rounds an output never got, by output and reason (queue_full: its "
            "queue was full and the oldest round went; shutting_down; shutdown_timeout).",
            ["output", "reason"], registry=registry,
        )
        self._output_errors = Counter(
            "otel_anomaly_output_errors",
            "Rounds whose publish raised, by output and exception type.",
            ["output", "error"], registry=registry,
        )
        self._collect_seconds = Gauge(
            "otel_anomaly_collect_duration_seconds",
            "Time the last scrape spent copying and formatting scores.", registry=registry,
        )
        self._exported = Gauge(
            "otel_anomaly_exported_series", "Scored series in the last scrape.",
            registry=registry,
        )
        self._unexported = Gauge(
            "otel_anomaly_unexported_series",
            "Scored series left out of the last scrape (max_exported_series, duplicates).",
            registry=registry,
        )
        self._duplicates = Gauge(
            "otel_anomaly_duplicate_series",
            "Scored series whose labels equal another's, left out of scrapes (promote a "
            "distinguishing resource attribute, e.g. set service.instance.id).",
            registry=registry,
        )

    @staticmethod
    def _init_process(registry: CollectorRegistry) -> None:
        """``otel_anomaly_build_info`` and the standard ``process_*`` and ``python_info``."""
        Gauge(
            "otel_anomaly_build_info",
            "Always 1; the labels say which otel-anomaly runs, on which Python.",
            ["version", "python_version", "python_implementation"], registry=registry,
        ).labels(version(), platform.python_version(), platform.python_implementation()).set(1)
        # Which replica this is when several share the series (a StatefulSet pod's hostname
        # is its name, otel-anomaly-2): with otel_anomaly_series_active, its shard.
        Gauge(
            "otel_anomaly_replica_info", "Always 1; hostname names this replica.",
            ["hostname"], registry=registry,
        ).labels(socket.gethostname()).set(1)
        # CPU, memory, open files and start time of this process (read from /proc at
        # scrape time; nothing on platforms without it), and the interpreter's python_info.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    def track_queue(self, depth: Callable[[], int], capacity: int) -> None:
        """Publish the intake queue's depth (read at scrape time) and capacity."""
        Gauge(
            "otel_anomaly_queue_requests", "Requests waiting in the intake queue.",
            registry=self.registry,
        ).set_function(lambda: float(depth()))
        Gauge(
            "otel_anomaly_queue_capacity_requests", "Capacity of the intake queue.",
            registry=self.registry,
        ).set(capacity)

    def request(self, transport: str, signal: Signal, outcome: str) -> None:
        """Count one export request and how it ended."""
        self._requests.labels(transport, signal, outcome).inc()

    def received(self, signal: Signal, count: int) -> None:
        """Count items of a decodable request."""
        self._received.labels(signal).inc(count)

    def dropped(self, signal: Signal, reason: str, count: int) -> None:
        """Count items that were not processed."""
        if count:
            self._dropped.labels(signal, reason).inc(count)

    def processed(self, signal: Signal, seconds: float, result: IngestResult) -> None:
        """Record one request the worker finished: time, rejects, skips, scored points."""
        self._processing.labels(signal).observe(seconds)
        for reason, count in result.rejected.items():
            self._rejected.labels(signal, reason).inc(count)
        for reason, count in result.skipped.items():
            self._skipped.labels(signal, reason).inc(count)
        self._scored.inc(len(result.scores))

    def failed(self, stage: str, error: str) -> None:
        """Count a processing failure: ``stage`` is a signal or ``evict``."""
        self._errors.labels(stage, error).inc()

    def series(self, stats: EngineStats) -> None:
        """Publish the engine's series counts."""
        self._series_active.set(stats.series_active)
        self._series_warming.set(stats.series_warming)
        self._multivariate_services.set(stats.multivariate_services)
        self._services_silent.set(stats.services_silent)
        # The engine keeps running totals; counters advance by what is new since last time.
        for name, counter, total in (
            ("deploys", self._deploys, stats.deploys_total),
            ("multivariate_skipped", self._multivariate_skipped,
             stats.multivariate_skipped_total),
        ):
            if total > self._published[name]:
                counter.inc(total - self._published[name])
                self._published[name] = total

    def checkpoint(self, outcome: str, seconds: float, size: int) -> None:
        """Count a checkpoint and record its duration (and size when written)."""
        self._checkpoints.labels(outcome).inc()
        self._checkpoint_seconds.set(seconds)
        if size:
            self._checkpoint_bytes.set(size)

    def checkpoint_pause(self, seconds: float) -> None:
        """Record how long the last checkpoint held up scoring."""
        self._checkpoint_pause.set(seconds)

    def restored(self, series: int) -> None:
        """Record how many series the start-up restore brought back."""
        self._restored.set(series)

    def evicted(self, count: int) -> None:
        """Count evicted series."""
        if count:
            self._evicted.inc(count)

    def events(self, kind: str, count: int = 1) -> None:
        """Count anomaly events the engine produced."""
        with self._event_lock:
            self._event_totals["produced"] += count
        self._events.labels(kind).inc(count)

    def events_sent(self, count: int) -> None:
        """Count events delivered to the OTLP endpoint (ignored once settled)."""
        with self._event_lock:
            if self._events_settled:
                return
            self._event_totals["sent"] += count
        self._events_sent.inc(count)

    def events_dropped(self, reason: str, count: int) -> None:
        """Count events that will not be delivered (ignored once settled)."""
        if not count:
            return
        with self._event_lock:
            if self._events_settled:
                return
            self._event_totals["dropped"] += count
        self._events_dropped.labels(reason).inc(count)

    def settle_events(self, reason: str) -> int:
        """At shutdown: count events neither sent nor dropped yet as dropped for ``reason``.

        Those are events an output still held (queued, or in an export that outlived the
        shutdown timeout). Returns their number; later reports of sent or dropped events
        are ignored, so every event produced is counted once, as sent or as dropped.
        """
        with self._event_lock:
            totals = self._event_totals
            held = totals["produced"] - totals["sent"] - totals["dropped"]
            self._events_settled = True
        if held > 0:
            self._events_dropped.labels(reason).inc(held)
        return max(0, held)

    def output_dropped(self, output: str, reason: str, count: int = 1) -> None:
        """Count scoring rounds an output will never publish."""
        if count:
            self._output_dropped.labels(output, reason).inc(count)

    def output_failed(self, output: str, error: str) -> None:
        """Count a round whose publish raised ``error`` in ``output``."""
        self._output_errors.labels(output, error).inc()

    def scraped(self, seconds: float, exported: int, total: int, duplicates: int) -> None:
        """Record one ``ScoreCollector.collect``."""
        self._collect_seconds.set(seconds)
        self._exported.set(exported)
        self._unexported.set(total - exported)
        self._duplicates.set(duplicates)
