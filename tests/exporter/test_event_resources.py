"""Anomaly events belong to the monitored service: its resource, the sidecar's scope."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from prometheus_client import CollectorRegistry

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink
from otel_anomaly.exporter.config import OtlpEventsConfig
from otel_anomaly.exporter.distribution import version
from otel_anomaly.exporter.outputs import OtlpEventsOutput, ScoringRound
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.testing import SECOND
from otel_anomaly.processors.types import AnomalyEvent, EventKind, SeriesKey, anomaly_id

CHECKOUT = (("host.name", "node-7"), ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "checkout-5d9f"), ("service.instance.id", "pod-1"),
            ("service.name", "checkout"), ("service.namespace", "shop"))
PAYMENTS = (("service.name", "payments"),)


class RequestSink(OtlpSink):
    """An OTLP sink that also keeps the requests as they came (resource and scope intact)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:0")
        self.requests: list[logs_service_pb2.ExportLogsServiceRequest] = []

    def add(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        self.requests.append(request)
        super().add(request)


def _event(kind: EventKind, resource: tuple[tuple[str, str], ...], ts: int) -> AnomalyEvent:
    key = SeriesKey("http_server_duration_milliseconds:p99", resource, (("http.route", "/pay"),))
    return AnomalyEvent(kind, 0, key, ts, "up", 4.2, 450.0, 100.0, 80.0, 120.0,
                        "ewma_zscore", "p99 up", anomaly_id=anomaly_id(key, 10 * SECOND))


def test_events_of_two_services_go_out_as_their_own_resource_logs() -> None:
    sink = RequestSink()
    sink.start()
    output = OtlpEventsOutput(OtlpEventsConfig(endpoint=sink.endpoint), Telemetry(CollectorRegistry()))
    try:
        output.start()
        output.publish(ScoringRound(events=(
            _event("open", CHECKOUT, 10 * SECOND), _event("open", PAYMENTS, 10 * SECOND),
            _event("update", CHECKOUT, 70 * SECOND))))
        output.shutdown(5)
    finally:
        sink.shutdown()
    resource_logs = [rl for request in sink.requests for rl in request.resource_logs]
    by_service = {
        next(kv.value.string_value for kv in rl.resource.attributes if kv.key == "service.name"): rl
        for rl in resource_logs}
    assert len(resource_logs) == 2, [MessageToDict(rl) for rl in resource_logs]
    checkout, payments = by_service["checkout"], by_service["payments"]
    assert {kv.key: kv.value.string_value for kv in checkout.resource.attributes} == dict(CHECKOUT)
    assert {kv.key: kv.value.string_value for kv in payments.resource.attributes} == dict(PAYMENTS)
    for rl in resource_logs:
        (scope_logs,) = rl.scope_logs
        assert (scope_logs.scope.name, scope_logs.scope.version) == ("otel-anomaly", version())
    records = checkout.scope_logs[0].log_records
    assert [r.event_name for r in records] == ["anomaly.open", "anomaly.update"]
    ids = [{kv.key: kv.value.string_value for kv in r.attributes}["anomaly.id"] for r in records]
    assert ids[0] == ids[1] and len(ids[0]) == 16
    # Record attributes: the point's own attributes and anomaly.*; the resource is not repeated.
    keys = {kv.key for kv in records[0].attributes}
    assert "http.route" in keys and not keys & dict(CHECKOUT).keys()
