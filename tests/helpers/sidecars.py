"""Sidecars on loopback port 0, scraping, and OTLP clients (the generated gRPC stubs)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.exporter.app import Sidecar, SidecarSettings
from otel_anomaly.exporter.config import Config, load_config

LOOPBACK: dict[str, object] = {
    "receivers.grpc.endpoint": "127.0.0.1:0",
    "receivers.http.endpoint": "127.0.0.1:0",
    "exposition.endpoint": "127.0.0.1:0",
}

FAST_DETECTOR = {
    "name": "fast", "type": "ewma_zscore",
    "match": ["*"],
    "params": {"warmup": 5, "alpha": 0.2},
    "alert": {"min_duration": 1, "close_after": 1, "band": 4.0},
}
"""A rule that scores from the 6th point and opens/closes on one point (for event tests)."""


def loopback_config(overrides: Mapping[str, object] | None = None) -> Config:
    """Defaults with every endpoint on 127.0.0.1:0, plus dotted-key ``overrides``."""
    return load_config(None, {**LOOPBACK, **(overrides or {})}, environ={})


@contextmanager
def running(config: Config, settings: SidecarSettings | None = None) -> Iterator[Sidecar]:
    """A started sidecar, shut down on exit."""
    sidecar = Sidecar(config, settings)
    sidecar.start()
    try:
        yield sidecar
    finally:
        sidecar.shutdown(5.0)


@dataclass
class GrpcClients:
    """Stubs of the three OTLP services on one channel, plus a raw-bytes caller."""

    channel: grpc.Channel

    @property
    def metrics(self) -> metrics_service_pb2_grpc.MetricsServiceStub:
        return metrics_service_pb2_grpc.MetricsServiceStub(self.channel)

    @property
    def traces(self) -> trace_service_pb2_grpc.TraceServiceStub:
        return trace_service_pb2_grpc.TraceServiceStub(self.channel)

    @property
    def logs(self) -> logs_service_pb2_grpc.LogsServiceStub:
        return logs_service_pb2_grpc.LogsServiceStub(self.channel)

    def raw_metrics(self, data: bytes, timeout: float = 5.0) -> bytes:
        call = self.channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            request_serializer=None, response_deserializer=None,
        )
        return call(data, timeout=timeout)


@contextmanager
def grpc_clients(port: int | None) -> Iterator[GrpcClients]:
    """Clients for ``127.0.0.1:port``."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield GrpcClients(channel)
    finally:
        channel.close()


def http_get(port: int | None, path: str, headers: Mapping[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    """GET ``http://127.0.0.1:port/path``; returns status, headers, body (errors too)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers or {}))
    return _send(request)


def answers(port: int | None, path: str = "/readyz") -> bool:
    """Whether ``GET path`` answers 200 (False while nothing listens yet)."""
    try:
        return http_get(port, path)[0] == 200
    except OSError:
        return False


def http_post(port: int | None, path: str, body: bytes, headers: Mapping[str, str]
              ) -> tuple[int, dict[str, str], bytes]:
    """POST ``body``; returns status, headers, body (errors too)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=dict(headers), method="POST"
    )
    return _send(request)


def _send(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def scrape(port: int | None) -> dict[str, Metric]:
    """Scrape ``/metrics`` and parse it with prometheus_client's parser, by family name."""
    status, _, body = http_get(port, "/metrics")
    assert status == 200, f"scrape answered {status}: {body[:200]!r}"
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def sample_value(families: Mapping[str, Metric], name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0 if none)."""
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
