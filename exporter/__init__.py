"""otel-anomaly's exporter: OTLP receivers, the pipeline, Prometheus and event outputs.

The names below load on first use (PEP 562), so a command that needs none of the servers
(``backtest``, ``--version``) does not import gRPC, aiohttp and the OTLP exporters.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_anomaly.exporter.app import Sidecar, SidecarSettings
    from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord
    from otel_anomaly.exporter.config import Config, load_config
    from otel_anomaly.exporter.errors import ConfigError, ExporterError, StartupError
    from otel_anomaly.exporter.outputs import Output, ScoringRound

_HOMES = {
    "Config": "config",
    "ConfigError": "errors",
    "ExporterError": "errors",
    "OtlpSink": "commands.otlp_sink",
    "Output": "outputs",
    "ScoringRound": "outputs",
    "Sidecar": "app",
    "SidecarSettings": "app",
    "SinkRecord": "commands.otlp_sink",
    "StartupError": "errors",
    "load_config": "config",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(import_module(f"{__name__}.{home}"), name)
