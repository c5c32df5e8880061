"""Fixtures for the exporter tests: an OTLP logs sink and a thread-leak check."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from helpers import wait_for
from helpers.sidecars import loopback_config

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink

_OUR_THREADS = (
    "otel-anomaly-pipeline", "otel-anomaly-io", "otel-anomaly-scrape", "otel-anomaly-decode",
    "otel-anomaly-output-", "otel-anomaly-forward", "otel-anomaly-watch",
    "otel-anomaly-scores-push",
)


def _ours() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(_OUR_THREADS)]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must stop what it started: no sidecar thread may outlive it."""
    yield
    wait_for(lambda: not _ours(), 5, lambda: f"threads still alive after the test: {_ours()}")


@pytest.fixture(params=[False, True], ids=["http_in_process", "http_separate_process"])
def http_receiver_modes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's ``loopback_config`` with the HTTP receiver in the sidecar or its own process.

    A module that says ``pytestmark = pytest.mark.usefixtures("http_receiver_modes")`` runs
    every test both ways: in its own process (``exporter/receivers/receiver_process.py``)
    the receiver forwards each request to the same intake, so the answers must be the same.
    """
    mode = {"receivers.http.separate_process": request.param}
    monkeypatch.setattr(request.module, "loopback_config",
                        lambda extra=None: loopback_config({**mode, **(extra or {})}))


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    """An OTLP/gRPC logs sink on a free loopback port."""
    logs_sink = OtlpSink("127.0.0.1:0")
    logs_sink.start()
    yield logs_sink
    logs_sink.shutdown()
