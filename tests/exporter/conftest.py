"""Fixtures for the exporter tests: an OTLP logs sink and a thread-leak check."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from helpers import wait_for

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink

_OUR_THREADS = (
    "otel-anomaly-pipeline", "otel-anomaly-io", "otel-anomaly-scrape", "otel-anomaly-decode",
    "otel-anomaly-output-",
)


def _ours() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(_OUR_THREADS)]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must stop what it started: no sidecar thread may outlive it."""
    yield
    wait_for(lambda: not _ours(), 5, lambda: f"threads still alive after the test: {_ours()}")


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    """An OTLP/gRPC logs sink on a free loopback port."""
    logs_sink = OtlpSink("127.0.0.1:0")
    logs_sink.start()
    yield logs_sink
    logs_sink.shutdown()
