"""Anomaly events as OTLP log records, received by an in-process OTLP sink."""

from __future__ import annotations

import json
import socket
import time

from helpers import wait_for
from helpers.sidecars import (
    FAST_DETECTOR,
    grpc_clients,
    http_post,
    loopback_config,
    running,
    sample_value,
    scrape,
)
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord
from otel_anomaly.exporter.config import OtlpEventsConfig
from otel_anomaly.exporter.outputs import OtlpEventsOutput, ScoringRound
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request, span, traces_request
from otel_anomaly.processors.types import AnomalyEvent, SeriesKey

WARN, INFO = 13, 9
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def named(sink: OtlpSink, event_name: str) -> list[SinkRecord]:
    return [r for r in sink.records() if r.event_name == event_name]


def wait_for_events(sink: OtlpSink, event_name: str, count: int, timeout: float = 10) -> None:
    wait_for(lambda: len(named(sink, event_name)) >= count, timeout,
             lambda: f"got {len(named(sink, event_name))}/{count} {event_name} events "
                     f"(all: {[r.event_name for r in sink.records()]})")


def spike_request() -> object:
    normal = [(i * SECOND, 10.0 + 0.1 * (i % 3)) for i in range(1, 21)]
    points = [*normal, (21 * SECOND, 100.0), (22 * SECOND, 10.1), (23 * SECOND, 10.0)]
    return metrics_request([gauge("queue.depth", points, {"queue": "jobs"})],
                           {"service.name": "worker"})


def test_a_spike_opens_and_closes_an_anomaly(sink: OtlpSink) -> None:
    config = loopback_config({"outputs.otlp_events.endpoint": sink.endpoint, "detectors": [FAST_DETECTOR]})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(spike_request(), timeout=5)
        wait_for_events(sink, "anomaly.open", 1)
        wait_for_events(sink, "anomaly.close", 1)
        opened, = named(sink, "anomaly.open")
        record = opened.record
        assert (record.severity_number, record.severity_text) == (WARN, "WARN")
        assert record.time_unix_nano == 21 * SECOND
        assert record.observed_time_unix_nano > 1_600_000_000 * SECOND
        assert "queue_depth" in record.body.string_value
        attrs = opened.attributes
        assert attrs["anomaly.metric"] == "queue_depth"
        assert attrs["anomaly.direction"] == "up"
        assert attrs["anomaly.value"] == 100.0
        assert attrs["anomaly.score"] > 1.0
        assert attrs["anomaly.lower"] < attrs["anomaly.expected"] < attrs["anomaly.upper"] < 100
        assert attrs["anomaly.detector"] == "ewma_zscore"
        assert attrs["queue"] == "jobs"
        # The event belongs to the monitored service; the sidecar is its scope.
        assert opened.resource == {"service.name": "worker"}
        assert "service.name" not in attrs
        assert opened.scope == "otel-anomaly"
        assert not record.trace_id
        closed, = named(sink, "anomaly.close")
        assert (closed.record.severity_number, closed.record.severity_text) == (INFO, "INFO")
        assert len(str(attrs["anomaly.id"])) == 16
        assert closed.attributes["anomaly.id"] == attrs["anomaly.id"]
        assert closed.record.time_unix_nano >= record.time_unix_nano
        families = scrape(sidecar.metrics_port)
        assert sample_value(families, "otel_anomaly_events_total", kind="open") == 1
        wait_for(lambda: sample_value(scrape(sidecar.metrics_port),
                                      "otel_anomaly_events_sent_total") >= 2,
                 5, "events not counted as sent")


def test_span_outlier_event_carries_the_trace_id_sent_as_hex_json(sink: OtlpSink) -> None:
    spans_rule = {
        "name": "spans", "type": "ewma_zscore", "match": ["traces_span_duration_milliseconds"],
        "params": {"warmup": 5, "log_transform": True},
        "alert": {"direction": "up", "min_duration": 1, "close_after": 1},
    }
    config = loopback_config({"outputs.otlp_events.endpoint": sink.endpoint,
                              "detectors": [spans_rule, {"name": "default"}]})
    baseline = [span("GET /cart", i * SECOND, 10.0 + i % 3, span_id=i.to_bytes(8, "big"))
                for i in range(1, 30)]
    slow = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": "checkout"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": TRACE_ID, "spanId": SPAN_ID, "name": "GET /cart", "kind": 2,
            "startTimeUnixNano": str(40 * SECOND),
            "endTimeUnixNano": str(40 * SECOND + 2_000_000_000),
        }]}],
    }]}
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.traces.Export(traces_request(baseline, {"service.name": "checkout"}), timeout=5)
        status, _, _ = http_post(sidecar.http_port, "/v1/traces", json.dumps(slow).encode(),
                                 {"Content-Type": "application/json"})
        assert status == 200
        wait_for_events(sink, "anomaly.open", 1)
        opened, = named(sink, "anomaly.open")
        assert opened.record.trace_id.hex() == TRACE_ID
        assert opened.record.span_id.hex() == SPAN_ID
        assert opened.attributes["span.name"] == "GET /cart"
        assert opened.attributes["anomaly.metric"] == "traces_span_duration_milliseconds"


def event(i: int) -> AnomalyEvent:
    key = SeriesKey("m", (("service.name", "s"),), ())
    return AnomalyEvent("open", 0, key, i, "up", 2.0, 3.0, 1.0, 0.0, 2.0, "ewma_zscore", "m up")


def events_round(count: int) -> ScoringRound:
    return ScoringRound(events=tuple(event(i) for i in range(count)))


def counts(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.startswith("otel_anomaly_events_") and sample.name.endswith("_total"):
                key = sample.name + "".join(f":{v}" for v in sample.labels.values())
                out[key] = sample.value
    return out


def test_publish_never_blocks_and_every_event_is_sent_or_counted_dropped(sink: OtlpSink) -> None:
    registry = CollectorRegistry()
    exporter = OtlpEventsOutput(OtlpEventsConfig(endpoint=sink.endpoint, queue_size=4),
                                Telemetry(registry))
    exporter.start()
    started = time.monotonic()
    exporter.publish(events_round(200))
    assert time.monotonic() - started < 1.0
    exporter.shutdown(5)
    seen = counts(registry)
    sent = seen.get("otel_anomaly_events_sent_total", 0)
    dropped = seen.get("otel_anomaly_events_dropped_total:queue_full", 0)
    assert sent + dropped == 200, seen
    assert dropped > 0
    assert len(sink.records()) == sent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint_counts_failed_exports_and_shutdown_is_bounded() -> None:
    registry = CollectorRegistry()
    config = OtlpEventsConfig(endpoint=f"127.0.0.1:{free_port()}", timeout=1.0)
    exporter = OtlpEventsOutput(config, Telemetry(registry))
    exporter.start()
    exporter.publish(events_round(3))
    started = time.monotonic()
    exporter.shutdown(2)
    assert time.monotonic() - started < 5
    seen = counts(registry)
    assert seen.get("otel_anomaly_events_dropped_total:export_failed", 0) + \
        seen.get("otel_anomaly_events_dropped_total:shutdown_timeout", 0) == 3, seen


def test_disabled_events_publish_nothing() -> None:
    exporter = OtlpEventsOutput(OtlpEventsConfig(endpoint=None), Telemetry(CollectorRegistry()))
    exporter.start()
    exporter.publish(events_round(1))
    exporter.shutdown(1)


def test_scores_can_also_be_pushed_as_otlp_metrics(sink: OtlpSink) -> None:
    config = loopback_config({
        "outputs.otlp_scores.endpoint": sink.endpoint, "outputs.otlp_scores.interval": "200ms",
        "detectors": [FAST_DETECTOR],
    })
    points = [(i * SECOND, 3.0 + i % 2) for i in range(1, 10)]  # past warm-up: a band exists
    request = metrics_request([gauge("queue.depth", points)], {"service.name": "w"})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(request, timeout=5)

        def pushed() -> dict[str, list[dict[str, str]]]:
            out: dict[str, list[dict[str, str]]] = {}
            for req in sink.metrics():
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            out[metric.name] = [
                                {kv.key: kv.value.string_value for kv in p.attributes}
                                for p in metric.gauge.data_points
                            ]
            return out

        wait_for(lambda: "otel_anomaly.upper" in pushed(), 10,
                 lambda: f"pushed metrics so far: {sorted(pushed())}")
        assert set(pushed()) == {"otel_anomaly.score", "otel_anomaly.value",
                                 "otel_anomaly.expected", "otel_anomaly.lower",
                                 "otel_anomaly.upper", "otel_anomaly.flag",
                                 "otel_anomaly.warming"}
        assert pushed()["otel_anomaly.value"][0]["metric"] == "queue_depth"
        # Under the scored series' own resource, not the sidecar's.
        services = {kv.value.string_value for req in sink.metrics()
                    for rm in req.resource_metrics for kv in rm.resource.attributes
                    if kv.key == "service.name"}
        assert services == {"w"}, services
