"""OTLP/JSON: hex trace and span ids become the right bytes; errors name the field."""

from __future__ import annotations

import json

import pytest
from google.protobuf.message import Message

from otel_anomaly.exporter.receivers import otlp_json
from otel_anomaly.exporter.receivers.signals import LogsRequest, MetricsRequest, TracesRequest

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "0102030405060708"


def encode(data: object) -> bytes:
    return json.dumps(data).encode()


def test_span_link_and_parent_ids_are_hex() -> None:
    body = encode({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE_ID, "spanId": SPAN_ID, "parentSpanId": PARENT_ID, "name": "GET /",
        "kind": 2, "startTimeUnixNano": "1000", "endTimeUnixNano": 2000,
        "links": [{"traceId": TRACE_ID[::-1], "spanId": SPAN_ID[::-1]}],
    }]}]}]})
    span = otlp_json.parse(body, TracesRequest).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_ID)
    assert span.span_id == bytes.fromhex(SPAN_ID)
    assert span.parent_span_id == bytes.fromhex(PARENT_ID)
    assert span.links[0].trace_id == bytes.fromhex(TRACE_ID[::-1])
    assert span.links[0].span_id == bytes.fromhex(SPAN_ID[::-1])
    assert (span.kind, span.start_time_unix_nano, span.end_time_unix_nano) == (2, 1000, 2000)


def test_log_record_ids_and_snake_case_names() -> None:
    body = encode({"resource_logs": [{"scope_logs": [{"log_records": [
        {"trace_id": TRACE_ID, "span_id": SPAN_ID, "severityNumber": 17, "unknownField": 1},
    ]}]}]})
    record = otlp_json.parse(body, LogsRequest).resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id == bytes.fromhex(TRACE_ID)
    assert record.span_id == bytes.fromhex(SPAN_ID)
    assert record.severity_number == 17


def test_exemplar_ids() -> None:
    body = encode({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "latency", "histogram": {"dataPoints": [{
            "count": "1", "exemplars": [{"traceId": TRACE_ID, "spanId": SPAN_ID, "asDouble": 3}],
        }]},
    }]}]}]})
    request = otlp_json.parse(body, MetricsRequest)
    exemplar = request.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0] \
        .exemplars[0]
    assert exemplar.trace_id == bytes.fromhex(TRACE_ID)
    assert exemplar.span_id == bytes.fromhex(SPAN_ID)


def test_attribute_named_like_an_id_is_left_alone() -> None:
    body = encode({"resourceSpans": [{"resource": {"attributes": [
        {"key": "traceId", "value": {"stringValue": "not-hex"}},
    ]}}]})
    request = otlp_json.parse(body, TracesRequest)
    assert request.resource_spans[0].resource.attributes[0].value.string_value == "not-hex"


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON"),
    (b"[]", "expected a JSON object; got list"),
    (encode({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}),
     "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hex digits; got 'xyz'"),
    (encode({"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": TRACE_ID}]}]}]}),
     "resourceSpans[0].scopeSpans[0].spans[0].spanId: expected 16 hex digits"),
    (encode({"resourceSpans": 3}), "invalid OTLP/JSON"),
    # json_format with ignore_unknown_fields read these as 0 or as an empty message: a
    # failed span would have counted as a success.
    (encode({"resourceSpans": [{"scopeSpans": [{"spans": [{"status": {"code": "ERROR"}}]}]}]}),
     "resourceSpans[0].scopeSpans[0].spans[0].status.code: unknown StatusCode 'ERROR'; "
     "expected one of STATUS_CODE_UNSET, STATUS_CODE_OK, STATUS_CODE_ERROR"),
    (encode({"resourceSpans": [{"scopeSpans": [{"spans": [{"status": "STATUS_CODE_ERROR"}]}]}]}),
     "resourceSpans[0].scopeSpans[0].spans[0].status: expected an object (Status); got str"),
    (encode({"resourceSpans": [{"resource": "service.name=checkout"}]}),
     "resourceSpans[0].resource: expected an object (Resource); got str"),
    (encode({"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SERVER"}]}]}]}),
     "spans[0].kind: unknown SpanKind 'SERVER'"),
    (encode({"resourceSpans": [{"scopeSpans": [{"spans": [[]]}]}]}),
     "resourceSpans[0].scopeSpans[0].spans[0]: expected an object (Span); got list"),
])
def test_invalid_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(otlp_json.OtlpJsonError) as caught:
        otlp_json.parse(body, TracesRequest)
    assert message in str(caught.value)


@pytest.mark.parametrize("severity", ["SEVERITY_NUMBER_ERROR", 17, "17"])
def test_an_enum_is_read_by_its_name_or_number(severity: object) -> None:
    body = encode({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"severityNumber": severity}]}]}]})
    record = otlp_json.parse(body, LogsRequest).resource_logs[0].scope_logs[0].log_records[0]
    assert record.severity_number == 17


def test_a_misspelt_severity_is_refused_not_read_as_unspecified() -> None:
    body = encode({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"severityNumber": "SEVERITY_NUMBER_EROR"}]}]}]})
    with pytest.raises(otlp_json.OtlpJsonError, match=r"logRecords\[0\]\.severityNumber: "
                       r"unknown SeverityNumber 'SEVERITY_NUMBER_EROR'"):
        otlp_json.parse(body, LogsRequest)


def test_unknown_fields_are_ignored_whatever_they_hold() -> None:
    body = encode({"resourceSpans": [{"extension": {"traceId": "zz", "resource": "x"},
                                      "scopeSpans": [{"spans": [{"traceId": TRACE_ID}]}]}]})
    span = otlp_json.parse(body, TracesRequest).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == bytes.fromhex(TRACE_ID)


def test_dumps_writes_hex_ids_and_round_trips() -> None:
    request = TracesRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex(TRACE_ID)
    span.span_id = bytes.fromhex(SPAN_ID)
    text = otlp_json.dumps(request)
    assert TRACE_ID.encode() in text and SPAN_ID.encode() in text
    again: Message = otlp_json.parse(text, TracesRequest)
    assert again == request
