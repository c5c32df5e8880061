"""Prometheus remote-write in: the real Prometheus scrapes a target and writes to the sidecar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cramjam
import pytest
from helpers.processes import free_port
from helpers.promtool import prometheus_running
from helpers.sidecars import (
    FAST_DETECTOR,
    http_post,
    loopback_config,
    running,
    sample_value,
    scrape,
)
from helpers.wait import wait_for
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from otel_anomaly.processors.signals.remote_write_proto import WriteRequest

PROTOBUF = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"}


pytestmark = pytest.mark.usefixtures("http_receiver_modes")  # each test both ways


@contextmanager
def prometheus_writing(tmp_path: Path, target_port: int, sidecar_http_port: int) -> Iterator[int]:
    """Prometheus scraping ``target_port`` every second and remote-writing to the sidecar."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "shop/cart", "scrape_interval": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        "remote_write": [{"url": f"http://127.0.0.1:{sidecar_http_port}/api/v1/write",
                          "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms"},
                          "metadata_config": {"send_interval": "1s"}}],
    }
    with prometheus_running(tmp_path, config) as port:
        yield port


def test_series_remote_written_by_prometheus_are_scored_with_their_labels(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    depth = Gauge("queue_depth", "Jobs waiting.", ["queue"], registry=registry)
    depth.labels("mail").set(7.0)
    requests = Counter("http_requests", "Requests served.", registry=registry)
    target_port = free_port()
    server, thread = start_http_server(target_port, addr="127.0.0.1", registry=registry)
    try:
        config = loopback_config({"detectors": [FAST_DETECTOR]})
        with running(config) as sidecar, \
                prometheus_writing(tmp_path, target_port, sidecar.http_port or 0):
            def scored() -> dict[str, float]:
                requests.inc(5)
                families = scrape(sidecar.metrics_port)
                return {metric: sample_value(families, "otel_anomaly_value", metric=metric,
                                             job="shop/cart", instance=f"127.0.0.1:{target_port}")
                        for metric in ("queue_depth", "http_requests_total:rate")}
            wait_for(lambda: all(scored().values()), 60,
                     lambda: f"remote-written series on /metrics: {scored()}")
            values = scored()
            assert values["queue_depth"] == 7.0
            assert values["http_requests_total:rate"] > 0  # a counter is scored as its rate
            families = scrape(sidecar.metrics_port)
            assert sample_value(families, "otel_anomaly_value", metric="queue_depth",
                                queue="mail") == 7.0
            assert sample_value(families, "otel_anomaly_points_received_total",
                                signal="prometheus") > 0
    finally:
        server.shutdown()
        thread.join(5)


@pytest.mark.parametrize(("body", "headers", "status", "reason"), [
    (b"not snappy at all", PROTOBUF, 400, "cannot decompress snappy body"),
    (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), PROTOBUF, 400,
     "cannot decode prometheus.WriteRequest"),
    (bytes(cramjam.snappy.compress_raw(b"\x00" * (3 * 1024 * 1024))), PROTOBUF, 413,
     "exceeds"),
    (b"{}", {**PROTOBUF, "Content-Type": "application/json"}, 415, "application/x-protobuf"),
])
def test_bad_remote_write_bodies_are_refused_with_a_reason_and_the_next_one_works(
    body: bytes, headers: dict[str, str], status: int, reason: str,
) -> None:
    config = loopback_config({"receivers.http.max_request_body_size_mib": 2,
                              "detectors": [FAST_DETECTOR]})
    good = WriteRequest()
    series = good.timeseries.add()
    for name, value in (("__name__", "up"), ("job", "api"), ("instance", "a:1")):
        series.labels.add(name=name, value=value)
    for i in range(1, 4):
        series.samples.add(value=1.0, timestamp=1_700_000_000_000 + i * 1000)
    with running(config) as sidecar:
        answer, _, text = http_post(sidecar.http_port, "/api/v1/write", body, headers)
        assert (answer, reason in text.decode()) == (status, True), text
        answer, _, text = http_post(sidecar.http_port, "/api/v1/write",
                                    bytes(cramjam.snappy.compress_raw(good.SerializeToString())),
                                    PROTOBUF)
        assert answer == 204, text
        families = scrape(sidecar.metrics_port)
        assert sample_value(families, "otel_anomaly_value", metric="up", job="api") == 1.0
