"""OTLP/HTTP receiver semantics: encodings, compression, limits, errors, never crashing."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import random
import socket
import zlib
from collections.abc import Callable

import hypothesis
import pytest
from google.rpc import code_pb2, status_pb2
from helpers import wait_for
from helpers.engines import EngineHolder, FailingEngine, GatedEngine, RecordingEngine
from helpers.sidecars import http_get, http_post, loopback_config, running, sample_value, scrape
from hypothesis import strategies as st

from otel_anomaly.exporter.app import Sidecar, SidecarSettings
from otel_anomaly.exporter.receivers.http_codec import HttpError, decompress
from otel_anomaly.exporter.receivers.signals import TracesRequest
from otel_anomaly.processors.testing import SECOND, gauge, logs_request, metrics_request

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
CPU = metrics_request([gauge("cpu", [(SECOND, 0.5), (2 * SECOND, 0.6)], unit="1")],
                      {"service.name": "checkout"})
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
JSON_SPANS = json.dumps({"resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
    "scopeSpans": [{"spans": [{
        "traceId": TRACE_ID, "spanId": SPAN_ID, "name": "GET /cart", "kind": 2,
        "startTimeUnixNano": str(SECOND), "endTimeUnixNano": str(SECOND + 5_000_000),
    }]}],
}]}).encode()


pytestmark = pytest.mark.usefixtures("http_receiver_modes")  # each test both ways


Recorded = tuple[EngineHolder, SidecarSettings]


@pytest.fixture
def recorded() -> Recorded:
    holder = EngineHolder(RecordingEngine)
    return holder, SidecarSettings(engine_factory=holder)


def post_metrics(sidecar: Sidecar, body: bytes, headers: dict[str, str]
                 ) -> tuple[int, dict[str, str], bytes]:
    return http_post(sidecar.http_port, "/v1/metrics", body, headers)


def status_of(body: bytes) -> status_pb2.Status:
    return status_pb2.Status.FromString(body)


def test_protobuf_request_gets_a_protobuf_reply(recorded: Recorded) -> None:
    holder, settings = recorded
    with running(loopback_config(), settings) as sidecar:
        status, headers, body = post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)
        assert status == 200
        assert headers["Content-Type"] == "application/x-protobuf"
        assert holder.engine is not None and holder.engine.requests == [("metrics", CPU)]
        logs = logs_request([(SECOND, 9)]).SerializeToString()
        assert http_post(sidecar.http_port, "/v1/logs", logs, PROTOBUF)[0] == 200
        assert http_post(sidecar.http_port, "/v1/traces", b"", PROTOBUF)[0] == 200  # empty


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate, seen in the wild
    # Two gzip members one after the other (`cat a.gz b.gz`): the second was dropped.
    ("gzip", lambda data: gzip.compress(data[:len(data) // 2]) + gzip.compress(
        data[len(data) // 2:])),
])
def test_compressed_bodies_are_accepted(
    recorded: Recorded, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    holder, settings = recorded
    with running(loopback_config(), settings) as sidecar:
        body = compress(CPU.SerializeToString())
        status, _, _ = post_metrics(sidecar, body, {**PROTOBUF, "Content-Encoding": encoding})
        assert status == 200
        assert holder.engine is not None and holder.engine.requests == [("metrics", CPU)]
        # The engine scans the decompressed bytes (``processors.signals.wire_path``).
        assert holder.engine.data == [CPU.SerializeToString()]


def test_gzip_members_longer_than_a_slice_inflate_whole_and_cut_ones_are_truncated() -> None:
    raw = random.Random(5).randbytes(3 << 20)  # incompressible
    body = gzip.compress(raw[: 1 << 20], mtime=0) + gzip.compress(raw[1 << 20 :], mtime=0)
    assert decompress(body, "gzip", 64 << 20) == raw  # the second member spans 3 slices
    for cut in (10, len(body) // 2, len(body) - 3):
        with pytest.raises(HttpError, match="truncated gzip body"):
            decompress(body[:cut], "gzip", 64 << 20)
    with pytest.raises(HttpError, match="decompressed body exceeds 2097152 bytes"):
        decompress(body, "gzip", 2 << 20)


def test_json_hex_ids_reach_the_engine_as_the_right_bytes(recorded: Recorded) -> None:
    holder, settings = recorded
    with running(loopback_config(), settings) as sidecar:
        status, headers, body = http_post(sidecar.http_port, "/v1/traces", JSON_SPANS, JSON)
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {}
        assert holder.engine is not None
        (signal, request), = holder.engine.requests
        assert isinstance(request, TracesRequest)
        seen = request.resource_spans[0].scope_spans[0].spans[0]
        assert (signal, seen.trace_id.hex(), seen.span_id.hex()) == ("traces", TRACE_ID, SPAN_ID)
        assert holder.engine.data == [None]  # JSON is walked: no protobuf bytes to scan


def test_json_partial_success_from_the_real_engine() -> None:
    body = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "cpu", "gauge": {"dataPoints": [
            {"timeUnixNano": str(SECOND), "asDouble": 0.5},
            {"timeUnixNano": "0", "asDouble": 0.5},
        ]},
    }]}]}]}).encode()
    with running(loopback_config()) as sidecar:
        status, _, reply = http_post(sidecar.http_port, "/v1/metrics", body, JSON)
        assert status == 200
        assert json.loads(reply) == {"partialSuccess": {
            "rejectedDataPoints": "1", "errorMessage": "rejected: 1 missing_timestamp"}}


@pytest.mark.parametrize(("body", "headers", "message"), [
    (b"\xff\xff\xff\xff", PROTOBUF, "cannot decode ExportMetricsServiceRequest (protobuf)"),
    (b"{oops", JSON, "cannot decode ExportMetricsServiceRequest (json): invalid JSON"),
    (gzip.compress(b"x")[:-4], {**PROTOBUF, "Content-Encoding": "gzip"}, "truncated gzip body"),
    (b"not gzip at all", {**PROTOBUF, "Content-Encoding": "gzip"}, "cannot decompress gzip"),
    (gzip.compress(b"x", mtime=0) + b"not gzip at all", {**PROTOBUF, "Content-Encoding": "gzip"},
     "cannot decompress gzip"),  # was accepted: what followed the first member was ignored
    # Each member cost a copy of the rest of the body: 50,000 empty ones in 1 MB, 0.67 s.
    (gzip.compress(b"", mtime=0) * 65, {**PROTOBUF, "Content-Encoding": "gzip"},
     "gzip body of more than 64 members"),
])
def test_undecodable_body_is_400_with_a_status_and_the_server_survives(
    body: bytes, headers: dict[str, str], message: str
) -> None:
    with running(loopback_config()) as sidecar:
        assert post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)[0] == 200
        series_before = scrape(sidecar.metrics_port)["otel_anomaly_value"].samples
        status, reply_headers, reply = post_metrics(sidecar, body, headers)
        assert status == 400
        if reply_headers["Content-Type"] == "application/json":
            error = json.loads(reply)
            assert error["code"] == code_pb2.INVALID_ARGUMENT and message in error["message"]
        else:
            error_pb = status_of(reply)
            assert error_pb.code == code_pb2.INVALID_ARGUMENT and message in error_pb.message
        assert scrape(sidecar.metrics_port)["otel_anomaly_value"].samples == series_before


def test_bad_hex_id_in_json_names_the_field() -> None:
    body = JSON_SPANS.replace(TRACE_ID.encode(), b"zz")
    with running(loopback_config()) as sidecar:
        status, _, reply = http_post(sidecar.http_port, "/v1/traces", body, JSON)
        assert status == 400
        assert "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hex digits; " \
            "got 'zz'" in json.loads(reply)["message"]


@pytest.mark.parametrize(("headers", "message"), [
    ({"Content-Type": "text/plain"}, "unsupported Content-Type 'text/plain'"),
    ({**PROTOBUF, "Content-Encoding": "br"}, "unsupported Content-Encoding 'br'"),
])
def test_unsupported_media_is_415(headers: dict[str, str], message: str) -> None:
    with running(loopback_config()) as sidecar:
        status, _, reply = post_metrics(sidecar, CPU.SerializeToString(), headers)
        assert status == 415
        assert message.encode() in reply


def test_too_large_bodies_are_413_before_and_after_decompression() -> None:
    config = loopback_config({"receivers.http.max_request_body_size_mib": 1})
    with running(config) as sidecar:
        bomb = gzip.compress(b"\x00" * (3 << 20))  # 3 MiB of zeros in a few KiB
        status, _, reply = post_metrics(sidecar, bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 413
        assert status_of(reply).message == \
            "decompressed body exceeds 1048576 bytes (max_request_body_size_mib)"
        status, _, _ = post_metrics(sidecar, b"\x00" * (2 << 20), PROTOBUF)
        assert status == 413
        assert post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)[0] == 200
        assert sample_value(scrape(sidecar.metrics_port), "otel_anomaly_requests_total",
                            transport="http", signal="metrics", outcome="too_large") == 2


def test_a_client_gone_mid_body_is_counted_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each such client logged a 28-line ERROR traceback from aiohttp and went uncounted.
    with running(loopback_config()) as sidecar:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", sidecar.http_port)) as client:
                client.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"application/x-protobuf\r\nContent-Length: 1000\r\n\r\n"
                               + b"\x0a" * 10)
        wait_for(lambda: sample_value(
            scrape(sidecar.metrics_port), "otel_anomaly_requests_total", transport="http",
            signal="metrics", outcome="disconnected") == 3, 10, "the lost clients were not counted")
        assert post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)[0] == 200
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [], errors


def test_a_malformed_request_head_is_400_and_one_warning_line_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # aiohttp logged each one as an ERROR with a traceback, though only the client was wrong.
    heads = [b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
             b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n"]
    config = loopback_config()
    with running(config) as sidecar:
        for head in heads:
            with socket.create_connection(("127.0.0.1", sidecar.http_port)) as client:
                client.sendall(head)
                assert client.recv(64).split(b" ")[1] == b"400", head[:60]
        assert post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)[0] == 200
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [], errors
    if config.receivers.http.separate_process:
        return  # the receiver's own process logs to its stderr, which caplog does not see
    warned = [r for r in caplog.records
              if r.name == "aiohttp.server" and "answered 400" in r.getMessage()]
    assert len(warned) == 2, [r.getMessage() for r in caplog.records]
    assert all(r.exc_info is None for r in warned)


def test_full_queue_is_503_with_retry_after() -> None:
    holder = EngineHolder(GatedEngine)
    config = loopback_config({"pipeline.queue_size": 1, "pipeline.retry_after": "1.5s"})
    with running(config, SidecarSettings(engine_factory=holder)) as sidecar:
        engine = holder.engine
        assert isinstance(engine, GatedEngine)
        body = CPU.SerializeToString()
        pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="test-client")
        try:
            first = pool.submit(post_metrics, sidecar, body, PROTOBUF)
            wait_for(engine.entered.is_set, 5, "the worker never took the first request")
            queued = pool.submit(post_metrics, sidecar, body, PROTOBUF)
            wait_for(lambda: sidecar.pipeline.queued == 1, 5, "second request not queued")
            status, headers, reply = post_metrics(sidecar, body, PROTOBUF)
            assert status == 503
            assert headers["Retry-After"] == "2"
            assert status_of(reply).code == code_pb2.UNAVAILABLE
            engine.gate.set()
            assert first.result(10)[0] == 200 and queued.result(10)[0] == 200
        finally:
            engine.gate.set()
            pool.shutdown()


def test_engine_failure_is_500_with_the_message() -> None:
    holder = EngineHolder(FailingEngine)
    with running(loopback_config(), SidecarSettings(engine_factory=holder)) as sidecar:
        status, _, reply = post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)
        assert status == 500
        assert status_of(reply).message == \
            "processing the metrics request failed: ValueError: boom: detector state is " \
            "inconsistent"


def test_unknown_path_is_404_and_wrong_method_is_405() -> None:
    with running(loopback_config()) as sidecar:
        assert http_post(sidecar.http_port, "/v1/profiles", b"", PROTOBUF)[0] == 404
        assert http_get(sidecar.http_port, "/v1/metrics")[0] == 405
        assert post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)[0] == 200


def test_random_bodies_never_crash_the_receiver() -> None:
    with running(loopback_config()) as sidecar:

        @hypothesis.settings(max_examples=60, deadline=None,
                             suppress_health_check=[hypothesis.HealthCheck.too_slow])
        @hypothesis.given(st.binary(max_size=512), st.sampled_from([PROTOBUF, JSON]))
        def send(data: bytes, headers: dict[str, str]) -> None:
            status, _, _ = post_metrics(sidecar, data, headers)
            assert status in (200, 400)

        send()
        assert sidecar.ready
        assert post_metrics(sidecar, CPU.SerializeToString(), PROTOBUF)[0] == 200
