"""Lifecycle of every component: shutdown before start, restart on the same port, idempotence."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from helpers.engines import RecordingEngine
from helpers.sidecars import http_get, loopback_config, running
from prometheus_client import CollectorRegistry

from otel_anomaly.exporter.app import Sidecar
from otel_anomaly.exporter.commands.otlp_sink import OtlpSink
from otel_anomaly.exporter.config import (
    GrpcReceiverConfig,
    HttpReceiverConfig,
    OtlpEventsConfig,
    OtlpScoresConfig,
)
from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.metrics_server import MetricsServer
from otel_anomaly.exporter.outputs import (
    OtlpEventsOutput,
    OtlpScoresOutput,
    OutputFanout,
    PrometheusOutput,
)
from otel_anomaly.exporter.pipeline import Pipeline
from otel_anomaly.exporter.receivers.grpc import GrpcReceiver
from otel_anomaly.exporter.receivers.http import HttpReceiver
from otel_anomaly.exporter.receivers.intake import Intake
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.settings import EngineSettings

Factory = Callable[[str], Any]  # endpoint -> component


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_port_free(port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # raises if the port is still held


@contextmanager
def io_loop() -> Iterator[IoLoop]:
    io = IoLoop()
    io.start()
    try:
        yield io
    finally:
        io.shutdown(5)


def pipeline_parts() -> tuple[Pipeline, Telemetry]:
    telemetry = Telemetry(CollectorRegistry())
    engine = RecordingEngine(EngineSettings(clock=lambda: 0.0))
    pipeline = Pipeline(engine, telemetry, lambda scoring_round: None, queue_size=2, clock=lambda: 0.0, evict_interval_s=60.0)
    return pipeline, telemetry


@contextmanager
def grpc_receivers() -> Iterator[Factory]:
    with io_loop() as io:
        pipeline, telemetry = pipeline_parts()
        intake = Intake(pipeline, telemetry, 1.0)
        yield lambda endpoint: GrpcReceiver(GrpcReceiverConfig(endpoint=endpoint), intake, io)


@contextmanager
def http_receivers() -> Iterator[Factory]:
    with io_loop() as io:
        pipeline, telemetry = pipeline_parts()
        intake = Intake(pipeline, telemetry, 1.0)
        yield lambda endpoint: HttpReceiver(HttpReceiverConfig(endpoint=endpoint), intake, io)


@contextmanager
def metrics_servers() -> Iterator[Factory]:
    with io_loop() as io:
        yield lambda endpoint: MetricsServer(endpoint, CollectorRegistry(), io, lambda: True)


@contextmanager
def sinks() -> Iterator[Factory]:
    yield OtlpSink


WITH_PORTS: dict[str, Callable[[], Any]] = {
    "grpc_receiver": grpc_receivers,
    "http_receiver": http_receivers,
    "metrics_server": metrics_servers,
    "otlp_sink": sinks,
}


@contextmanager
def no_port(make: Callable[[], Any]) -> Iterator[Factory]:
    yield lambda endpoint: make()


def _events(endpoint: str | None) -> OtlpEventsOutput:
    return OtlpEventsOutput(OtlpEventsConfig(endpoint=endpoint), Telemetry(CollectorRegistry()))


def _score_metrics() -> OtlpScoresOutput:
    return OtlpScoresOutput(OtlpScoresConfig(endpoint=f"127.0.0.1:{free_port()}"), 10)


def _outputs() -> OutputFanout:
    telemetry = Telemetry(CollectorRegistry())
    outputs = [PrometheusOutput(10, telemetry), _events(f"127.0.0.1:{free_port()}"),
               _score_metrics()]
    return OutputFanout(outputs, telemetry, queue_size=2)


WITHOUT_PORTS: dict[str, Callable[[], Any]] = {
    "io_loop": IoLoop,
    "pipeline": lambda: pipeline_parts()[0],
    "events_exporter": lambda: _events(f"127.0.0.1:{free_port()}"),
    "events_disabled": lambda: _events(None),
    "score_metrics_exporter": _score_metrics,
    "output_fanout": _outputs,
}

ALL = {**{k: v for k, v in WITH_PORTS.items()},
       **{k: (lambda make=make: no_port(make)) for k, make in WITHOUT_PORTS.items()}}


@pytest.mark.parametrize("kind", sorted(ALL))
def test_shutdown_before_start_and_twice_is_harmless(kind: str) -> None:
    with ALL[kind]() as make:
        component = make("127.0.0.1:0")
        component.shutdown(1)
        component.shutdown(1)
        component.start()  # a stopped component stays stopped
        component.shutdown(1)


@pytest.mark.parametrize("kind", sorted(ALL))
def test_start_shutdown_then_a_new_instance_starts(kind: str) -> None:
    with ALL[kind]() as make:
        first = make("127.0.0.1:0")
        first.start()
        port = getattr(first, "port", None)
        first.shutdown(5)
        first.shutdown(5)
        endpoint = f"127.0.0.1:{port}" if port else "127.0.0.1:0"
        second = make(endpoint)
        second.start()
        if port:
            assert second.port == port
        second.shutdown(5)
        if port:
            assert_port_free(port)


def test_sidecar_restarts_on_the_same_ports() -> None:
    first = Sidecar(loopback_config())
    first.shutdown(1)  # before start: nothing to do
    sidecar = Sidecar(loopback_config())
    sidecar.start()
    ports = (sidecar.grpc_port, sidecar.http_port, sidecar.metrics_port)
    assert all(ports)
    sidecar.shutdown(5)
    sidecar.shutdown(5)
    grpc_port, http_port, metrics_port = ports
    again = Sidecar(loopback_config({
        "receivers.grpc.endpoint": f"127.0.0.1:{grpc_port}",
        "receivers.http.endpoint": f"127.0.0.1:{http_port}",
        "exposition.endpoint": f"127.0.0.1:{metrics_port}",
    }))
    again.start()
    try:
        assert (again.grpc_port, again.http_port, again.metrics_port) == ports
        assert http_get(metrics_port, "/readyz")[0] == 200
        with pytest.raises(StartupError, match="create a new Sidecar"):
            again.start()
    finally:
        again.shutdown(5)
    for port in ports:
        assert port is not None
        assert_port_free(port)


@pytest.mark.parametrize(("taken", "component"), [
    ("receivers.grpc.endpoint", "OTLP/gRPC receiver (receivers.grpc.endpoint)"),
    ("receivers.http.endpoint", "OTLP/HTTP receiver (receivers.http.endpoint)"),
    ("exposition.endpoint", "metrics endpoint (exposition.endpoint)"),
])
def test_taken_port_fails_start_naming_the_endpoint_and_rolls_back(
    taken: str, component: str
) -> None:
    with ExitStack() as stack:
        blocker = stack.enter_context(socket.socket())
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        blocked = f"127.0.0.1:{blocker.getsockname()[1]}"
        endpoints = {key: f"127.0.0.1:{free_port()}" for key in
                     ("receivers.grpc.endpoint", "receivers.http.endpoint", "exposition.endpoint")}
        endpoints[taken] = blocked
        sidecar = Sidecar(loopback_config(endpoints))
        with pytest.raises(StartupError) as caught:
            sidecar.start()
        assert str(caught.value) == \
            f"{component}: cannot listen on {blocked!r}: Address already in use"
        assert not sidecar.ready
        sidecar.shutdown(1)
        for key, endpoint in endpoints.items():
            if key != taken:
                assert_port_free(int(endpoint.rpartition(":")[2]))


def test_a_failed_kernel_warm_up_is_logged_and_the_sidecar_still_scores(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(settings: object) -> float:
        msg = "synthetic warm-up broke"
        raise RuntimeError(msg)

    monkeypatch.setattr("otel_anomaly.exporter.app.warm_up", broken)
    with running(loopback_config()) as sidecar:
        assert "synthetic warm-up broke" in caplog.text
        assert http_get(sidecar.metrics_port, "/readyz")[0] == 200
