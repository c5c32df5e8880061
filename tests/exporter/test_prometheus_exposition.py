"""Scores on /metrics: families and labels, limits, eviction, formats, health endpoints."""

from __future__ import annotations

import gzip
import subprocess

import prometheus_client
from helpers import wait_for
from helpers.engines import EngineHolder, RecordingEngine
from helpers.promtool import promtool
from helpers.sidecars import grpc_clients, http_get, loopback_config, running, sample_value, scrape
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from otel_anomaly.exporter.app import SidecarSettings
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.metrics_server import MetricsServer
from otel_anomaly.exporter.outputs import SCORE_GAUGES, ScoreCollector, ScoreTable
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.testing import SECOND, FakeClock, gauge, metrics_request

OUTPUT_NAMES = [name for name, _, _ in SCORE_GAUGES]


def two_services() -> list:
    return [
        metrics_request(
            [gauge("system.cpu.utilization", [(SECOND, 0.5), (2 * SECOND, 0.55)],
                   {"cpu": "0"}, unit="1")],
            {"service.name": "checkout", "service.instance.id": "pod-1"},
        ),
        metrics_request(
            [gauge("queue.depth", [(SECOND, 10.0), (2 * SECOND, 12.0)], {"queue": "jobs"})],
            {"service.name": "worker", "service.namespace": "batch"},
        ),
    ]


def test_every_output_is_a_gauge_family_with_each_series_labels() -> None:
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        for request in two_services():
            clients.metrics.Export(request, timeout=5)
        families = scrape(sidecar.metrics_port)
        for name in OUTPUT_NAMES:
            assert families[name].type == "gauge", name
            labels = sorted((dict(s.labels) for s in families[name].samples),
                            key=lambda labels: labels["metric"])
            assert labels == [
                {"metric": "queue_depth", "detector": "ensemble", "job": "batch/worker",
                 "queue": "jobs"},
                {"metric": "system_cpu_utilization_ratio", "detector": "ensemble",
                 "job": "checkout", "instance": "pod-1", "cpu": "0"},
            ], name
        values = {s.labels["metric"]: s.value for s in families["otel_anomaly_value"].samples}
        assert values == {"queue_depth": 12.0, "system_cpu_utilization_ratio": 0.55}
        assert {s.value for s in families["otel_anomaly_flag"].samples} == {0.0}
        # Two points are too few for any band: both series say they are warming up.
        assert {s.value for s in families["otel_anomaly_warming"].samples} == {1.0}


def test_a_series_stops_warming_once_its_detector_has_a_band() -> None:
    config = loopback_config({"detectors": [
        {"name": "quick", "type": "ewma_zscore", "params": {"warmup": 5}}]})
    steady = [(i * SECOND, 10.0 + i % 2) for i in range(1, 9)]
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(metrics_request([gauge("seasoned", steady),
                                                gauge("young", steady[:2])]), timeout=5)
        families = scrape(sidecar.metrics_port)
        warming = {s.labels["metric"]: s.value for s in families["otel_anomaly_warming"].samples}
        assert warming == {"seasoned": 0.0, "young": 1.0}
        lower = {s.labels["metric"]: s.value for s in families["otel_anomaly_lower"].samples}
        assert lower["seasoned"] < 10.0, lower


def test_hostile_attribute_names_keep_the_scrape_parseable_by_prometheus() -> None:
    hostile = {"__name__": "x", "__meta_x": "y", "job": "z", "0day": "1", "é": "2", "": "3"}
    request = metrics_request([gauge("g", [(SECOND, 1.0)], attributes=hostile)])
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(request, timeout=5)
        _, _, body = http_get(sidecar.metrics_port, "/metrics")
    checked = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True,
                             timeout=60, check=False)
    assert b"parsing error" not in checked.stderr + checked.stdout, checked
    assert b'attr___name__="x"' in body and b'attr_job="z"' in body


def test_openmetrics_and_gzip_are_negotiated() -> None:
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(two_services()[0], timeout=5)
        status, headers, body = http_get(sidecar.metrics_port, "/metrics", {
            "Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8",
            "Accept-Encoding": "gzip",
        })
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(body).decode()
        assert text.endswith("# EOF\n")
        names = {family.name for family in openmetrics_families(text)}
        assert set(OUTPUT_NAMES) <= names
        status, headers, _ = http_get(sidecar.metrics_port, "/metrics")
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")


def test_max_exported_series_is_honoured_and_the_rest_counted() -> None:
    config = loopback_config({"exposition.max_exported_series": 2})
    five = metrics_request([gauge(f"g{i}", [(SECOND, float(i))]) for i in range(5)])
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(five, timeout=5)
        scrape(sidecar.metrics_port)
        families = scrape(sidecar.metrics_port)  # self-metrics describe the previous scrape
        for name in OUTPUT_NAMES:
            assert len(families[name].samples) == 2, name
        assert sample_value(families, "otel_anomaly_exported_series") == 2
        assert sample_value(families, "otel_anomaly_unexported_series") == 3


def test_evicted_series_vanish() -> None:
    clock = FakeClock(1000.0)
    config = loopback_config({"series.ttl": "10s"})
    old = metrics_request([gauge("old", [(SECOND, 1.0)])])
    new = metrics_request([gauge("new", [(2 * SECOND, 1.0)])])
    with running(config, SidecarSettings(clock=clock)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(old, timeout=5)

        def metrics() -> set[str]:
            return {s.labels["metric"] for s in scrape(sidecar.metrics_port)["otel_anomaly_score"]
                    .samples}

        assert metrics() == {"old"}
        clock.advance(30.0)
        clients.metrics.Export(new, timeout=5)
        wait_for(lambda: metrics() == {"new"}, 5, lambda: f"exported series are {metrics()}")
        families = scrape(sidecar.metrics_port)
        assert sample_value(families, "otel_anomaly_series_evicted_total") == 1
        assert sample_value(families, "otel_anomaly_series_active") == 1


def test_a_scrape_never_scores() -> None:
    holder = EngineHolder(RecordingEngine)
    with running(loopback_config(), SidecarSettings(engine_factory=holder)) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(two_services()[0], timeout=5)
        assert holder.engine is not None
        calls = len(holder.engine.requests)
        for _ in range(3):
            scrape(sidecar.metrics_port)
        assert len(holder.engine.requests) == calls


def test_collector_describes_nothing_and_registers_on_its_own_registry() -> None:
    registry = CollectorRegistry()
    collector = ScoreCollector(ScoreTable(), 10, Telemetry(registry))
    assert list(collector.describe()) == []
    assert [family.name for family in collector.collect()] == OUTPUT_NAMES
    with running(loopback_config()) as sidecar:
        assert sidecar.registry is not prometheus_client.REGISTRY
        default_names = {f.name for f in prometheus_client.REGISTRY.collect()}
        assert not any(name.startswith("otel_anomaly") for name in default_names)


def test_health_and_readiness_follow_the_sidecar() -> None:
    with running(loopback_config()) as sidecar:
        assert http_get(sidecar.metrics_port, "/healthz")[:1] == (200,)
        assert http_get(sidecar.metrics_port, "/readyz")[0] == 200
        assert sidecar.ready
    assert not sidecar.ready


def test_readyz_answers_503_when_not_ready() -> None:
    ready = [False]
    io = IoLoop()
    io.start()
    server = MetricsServer("127.0.0.1:0", CollectorRegistry(), io, lambda: ready[0])
    server.start()
    try:
        assert http_get(server.port, "/readyz")[:1] == (503,)
        assert http_get(server.port, "/healthz")[0] == 200
        ready[0] = True
        assert http_get(server.port, "/readyz")[0] == 200
    finally:
        server.shutdown(5)
        io.shutdown(5)


def test_replicas_told_apart_by_host_name_are_all_exported() -> None:
    # Two hosts of one service, neither with service.instance.id: both appear, each with
    # its own value, without any configuration.
    replicas = [
        metrics_request([gauge("cpu", [(SECOND, value)])],
                        {"service.name": "checkout", "host.name": host})
        for host, value in (("a", 0.1), ("b", 0.2))
    ]
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        for request in replicas:
            clients.metrics.Export(request, timeout=5)
        families = scrape(sidecar.metrics_port)
        values = {s.labels.get("host_name"): s.value
                  for s in families["otel_anomaly_value"].samples}
        assert values == {"a": 0.1, "b": 0.2}
        assert sample_value(families, "otel_anomaly_duplicate_series") == 0


def test_replicas_told_apart_only_by_a_pid_are_both_exported_the_later_one_with_it() -> None:
    # Replicas told apart only by an attribute that is not a label (a process id).
    replicas = [
        metrics_request([gauge("cpu", [(SECOND, value)])],
                        {"service.name": "checkout", "process.pid": pid})
        for pid, value in ((11, 0.1), (12, 0.2))
    ]
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        for request in replicas:
            clients.metrics.Export(request, timeout=5)
        scrape(sidecar.metrics_port)  # the duplicate count is of the scrape before
        families = scrape(sidecar.metrics_port)
        values = {s.labels.get("process_pid"): s.value
                  for s in families["otel_anomaly_value"].samples}
        assert values == {None: 0.1, "12": 0.2}  # the first keeps its labels as they were
        assert sample_value(families, "otel_anomaly_duplicate_series") == 0


def test_series_no_resource_attribute_tells_apart_are_exported_once_and_counted() -> None:
    # Two point attributes that become the same label name (http.route, http_route).
    twins = metrics_request([gauge("cpu", [(SECOND, 0.1)], {"http.route": "/"}),
                             gauge("cpu", [(SECOND, 0.2)], {"http_route": "/"})],
                            {"service.name": "checkout"})
    with running(loopback_config()) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(twins, timeout=5)
        scrape(sidecar.metrics_port)  # the count is of the scrape before
        families = scrape(sidecar.metrics_port)
        for name in OUTPUT_NAMES:
            label_sets = [tuple(sorted(s.labels.items())) for s in families[name].samples]
            assert len(label_sets) == len(set(label_sets)) == 1, name
        assert sample_value(families, "otel_anomaly_duplicate_series") == 1
