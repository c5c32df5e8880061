"""The Prometheus output: latest scores in a ``ScoreTable``, exposed by ``ScoreCollector``.

The collector is a custom collector on the sidecar's own registry: no ``Gauge`` child per
series, no ``labels()`` calls. A scrape copies one snapshot of the score table (under its
lock) for all the gauges and formats it; it never scores. ``MetricsServer`` serves it.
Beside the score gauges it exposes ``otel_anomaly_open_info``: one sample per open
anomaly, with its id, explanation and held band (``exporter.outputs.open_anomalies``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from otel_anomaly.exporter.outputs.base import ScoringRound
from otel_anomaly.exporter.outputs.open_anomalies import OpenAnomalies
from otel_anomaly.exporter.outputs.score_table import ScoreTable
from otel_anomaly.exporter.telemetry import Telemetry

SCORE_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("otel_anomaly_score", "score",
     "Band-normalised anomaly score: 0 at the expected value, 1 at the band edge."),
    ("otel_anomaly_value", "value", "Latest value of the scored series, in its own unit."),
    ("otel_anomaly_expected", "expected", "Value the detector expected."),
    ("otel_anomaly_lower", "lower", "Lower edge of the normal band."),
    ("otel_anomaly_upper", "upper", "Upper edge of the normal band."),
    ("otel_anomaly_flag", "flag", "1 while the series is in an open anomaly, else 0."),
    ("otel_anomaly_warming", "warming",
     "1 while the series is still learning its baseline (no band yet, no flag), else 0."),
)
"""``(metric name, snapshot column, help)`` of every exported score gauge."""
OPEN_INFO = "otel_anomaly_open"
"""The info gauge of open anomalies (exposed as ``otel_anomaly_open_info``)."""
_OPEN_INFO_HELP = ("1 for each open anomaly: its series' labels, anomaly_id, and the "
                   "explanation and held band of its latest open or update event.")


class ScoreCollector(Collector):
    """Yields one gauge family per output, one sample per scored series.

    Label sets differ between series (each has its own attributes), so samples are added
    with their precomputed label dicts rather than through a fixed label-name list.

    Parameters
    ----------
    scores
        The table to snapshot.
    max_series
        At most this many series per scrape (open anomalies first).
    telemetry
        Records each collection's duration and how many series were left out.
    anomalies
        Open anomalies, for ``otel_anomaly_open_info`` (only those of series in the
        snapshot, so the info gauge never names a series the scrape left out).
    """

    def __init__(
        self, scores: ScoreTable, max_series: int, telemetry: Telemetry,
        anomalies: OpenAnomalies | None = None,
    ) -> None:
        self._scores = scores
        self._max_series = max_series
        self._telemetry = telemetry
        self._anomalies = anomalies

    def describe(self) -> Iterable[Metric]:
        """Nothing: names are not known ahead, and registering must not collect."""
        return []

    def collect(self) -> Iterable[Metric]:
        """Snapshot the table once and build every gauge family from that one copy."""
        started = time.perf_counter()
        snapshot = self._scores.snapshot(self._max_series)
        families: list[Metric] = []
        for name, column, documentation in SCORE_GAUGES:
            family = GaugeMetricFamily(name, documentation)
            values = getattr(snapshot, column).astype(float).tolist()
            family.samples = [
                Sample(name, labels, value)
                for labels, value in zip(snapshot.labels, values, strict=True)
            ]
            families.append(family)
        if self._anomalies is not None:
            info = InfoMetricFamily(OPEN_INFO, _OPEN_INFO_HELP)
            name = f"{OPEN_INFO}_info"
            info.samples = [Sample(name, labels, 1.0)
                            for labels in self._anomalies.snapshot(set(snapshot.slots.tolist()))]
            families.append(info)
        self._telemetry.scraped(
            time.perf_counter() - started, len(snapshot), snapshot.total, snapshot.duplicates
        )
        return families


class PrometheusOutput:
    """Keeps the latest score of every series for ``/metrics``; registers nothing itself.

    ``inline``: ``publish`` runs on the pipeline thread. Vectorised array writes under a lock
    that a scrape holds only while it copies the table (never while it formats or sends),
    so it costs what the pipeline always paid and cannot block; a queue would only add a
    copy per round and let ``/metrics`` lag behind the requests already answered.

    Parameters
    ----------
    max_series
        At most this many series per scrape (open anomalies first).
    telemetry
        Scrape self-metrics.
    """

    name = "prometheus"
    inline = True

    def __init__(self, max_series: int, telemetry: Telemetry) -> None:
        self.table = ScoreTable()
        self.anomalies = OpenAnomalies()
        self.collector = ScoreCollector(self.table, max_series, telemetry, self.anomalies)

    def start(self) -> None:
        """Nothing to start: the metrics endpoint serves the collector."""

    def publish(self, scoring_round: ScoringRound) -> None:
        """Apply the round's evictions, then its scores, then its events."""
        self.table.remove(scoring_round.evicted)
        self.anomalies.evict(scoring_round.evicted)
        self.table.update(scoring_round.scores, scoring_round.labels)
        if scoring_round.events:
            self.anomalies.apply(scoring_round.events, scoring_round.labels)

    def shutdown(self, timeout: float = 0.0) -> None:
        """Nothing to flush: a scrape reads the table."""
