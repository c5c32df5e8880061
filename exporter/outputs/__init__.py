"""Outputs: where scoring rounds go (Prometheus exposition, OTLP events, OTLP scores).

Each output implements ``Output`` (``name``, ``inline``, ``start``, ``publish``,
``shutdown``); ``OutputFanout`` hands every ``ScoringRound`` to all of them, each slow or
failing one behind its own bounded queue and thread.
"""

from __future__ import annotations

from otel_anomaly.exporter.outputs.base import Output, ScoringRound
from otel_anomaly.exporter.outputs.fanout import OutputFanout
from otel_anomaly.exporter.outputs.open_anomalies import OpenAnomalies
from otel_anomaly.exporter.outputs.otlp_events import OtlpEventsOutput
from otel_anomaly.exporter.outputs.otlp_scores import OtlpScoresOutput
from otel_anomaly.exporter.outputs.prometheus import SCORE_GAUGES, PrometheusOutput, ScoreCollector
from otel_anomaly.exporter.outputs.score_table import ScoreSnapshot, ScoreTable

__all__ = [
    "SCORE_GAUGES",
    "OpenAnomalies",
    "OtlpEventsOutput",
    "OtlpScoresOutput",
    "Output",
    "OutputFanout",
    "PrometheusOutput",
    "ScoreCollector",
    "ScoreSnapshot",
    "ScoreTable",
    "ScoringRound",
]
