"""Every signal adapter the engine runs, by signal name (see ``signals.adapter``)."""

from __future__ import annotations

from otel_anomaly.processors.signals.adapter import Signal, SignalAdapter
from otel_anomaly.processors.signals.logs import LogsExtractor
from otel_anomaly.processors.signals.metrics import MetricsExtractor
from otel_anomaly.processors.signals.remote_write import RemoteWriteAdapter
from otel_anomaly.processors.signals.traces import TracesExtractor

_ADAPTERS: tuple[type[SignalAdapter], ...] = (
    MetricsExtractor, TracesExtractor, LogsExtractor, RemoteWriteAdapter)

ADAPTERS: dict[Signal, type[SignalAdapter]] = {adapter.signal: adapter for adapter in _ADAPTERS}
"""Adapter classes by signal, in the order receivers list them."""
