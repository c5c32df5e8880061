"""otel-anomaly's exporter: OTLP receivers, the pipeline, Prometheus and event outputs."""

from __future__ import annotations

from otel_anomaly.exporter.app import Sidecar, SidecarSettings
from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord
from otel_anomaly.exporter.config import Config, load_config
from otel_anomaly.exporter.errors import ConfigError, ExporterError, StartupError
from otel_anomaly.exporter.outputs import Output, ScoringRound

__all__ = [
    "Config",
    "ConfigError",
    "ExporterError",
    "OtlpSink",
    "Output",
    "ScoringRound",
    "Sidecar",
    "SidecarSettings",
    "SinkRecord",
    "StartupError",
    "load_config",
]
