"""``POST /api/v1/feedback``: a marked false positive stops the same excursion from paging."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from helpers.outputs import RecordingOutput
from helpers.sidecars import FAST_DETECTOR, grpc_clients, http_post, loopback_config, running
from helpers.wait import wait_for

from otel_anomaly.exporter.app import SidecarSettings
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request
from otel_anomaly.processors.types import AnomalyEvent

JSON = {"Content-Type": "application/json"}
RESOURCE = {"service.name": "worker"}


def opens(output: RecordingOutput) -> list[AnomalyEvent]:
    return [e for r in output.rounds for e in r.events if e.kind == "open"]


def send(clients: object, points: list[tuple[int, float]]) -> None:
    request = metrics_request([gauge("queue.depth", points)], RESOURCE)
    clients.metrics.Export(request, timeout=5)  # type: ignore[attr-defined]


def post(port: int | None, body: object, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, object]]:
    status, reply, text = http_post(port, "/api/v1/feedback", json.dumps(body).encode(),
                                    headers or JSON)
    if "json" not in reply.get("Content-Type", ""):
        return status, {"text": text.decode()}
    return status, json.loads(text)


def test_a_false_positive_marked_over_http_does_not_reopen_but_a_larger_excursion_does() -> None:
    output = RecordingOutput()
    config = loopback_config({"detectors": [FAST_DETECTOR]})
    steady = [10.0 + (i % 3) * 0.1 for i in range(40)]
    with running(config, SidecarSettings(extra_outputs=(output,))) as sidecar, \
            grpc_clients(sidecar.grpc_port) as clients:
        t = 1
        for v in [*steady, 16.0, *steady]:
            send(clients, [(t * SECOND, v)])
            t += 1
        wait_for(lambda: len(opens(output)) == 1, 10, lambda: f"opens: {opens(output)}")
        first = opens(output)[0]
        status, answer = post(sidecar.metrics_port, {
            "anomaly_id": first.anomaly_id, "verdict": "false_positive", "author": "ana"})
        assert status == 200, answer
        assert answer["series"]["metric"] == "queue_depth"  # type: ignore[index]
        assert float(answer["bar"]) > float(answer["peak_score"]) > 1.0  # type: ignore[arg-type]
        for v in [16.0, *steady, 60.0]:  # the same excursion, then a much larger one
            send(clients, [(t * SECOND, v)])
            t += 1
        wait_for(lambda: len(opens(output)) >= 2, 10, lambda: f"opens: {opens(output)}")
        later = opens(output)[1:]
        assert [e.value for e in later] == [60.0], [(e.value, e.explanation) for e in later]
        assert "false-positive verdict" in later[0].explanation


def test_bad_feedback_is_refused_with_a_reason(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = loopback_config({"receivers.auth.bearer_token_file": str(token)})
    with running(config) as sidecar:
        port = sidecar.metrics_port
        assert post(port, {"anomaly_id": "abc"})[0] == 401  # the receivers' token is required
        auth = {**JSON, "Authorization": "Bearer s3cret"}
        status, answer = post(port, {"anomaly_id": "abc"}, auth)
        assert status == 400 and "anomaly_id and verdict go together" in str(answer), answer
        status, answer = post(port, {"anomaly_id": "abc", "verdict": "false_positive"}, auth)
        assert status == 404 and "no anomaly 'abc' is remembered" in str(answer), answer
        status, answer = post(port, {"silence": {"matchers": {"job": "worker"},
                                                 "start": "2026-12-03T10:00:00Z",
                                                 "end": 1764760000}}, auth)
        assert status == 400 and "silence.end must be after silence.start" in str(answer)
        # A chunked body carries no Content-Length: its size is counted as it is read.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/api/v1/feedback", iter([b" " * 50_000] * 2),
                           {**auth, "Transfer-Encoding": "chunked"}, encode_chunked=True)
        reply = connection.getresponse()
        assert reply.status == 413 and b"body over 65536 bytes" in reply.read()
        connection.close()
        for end in (1e300, 10**400, "9999-12-31T00:00:00Z"):  # used to be a 500 for the first two
            status, answer = post(port, {"silence": {"matchers": {"job": "worker"}, "start": 0,
                                                     "end": end}}, auth)
            assert status == 400 and "silence.end" in str(answer), (end, status, answer)
        status, answer = post(port, {"silence": {"matchers": {"job": "worker"}, "start": 0,
                                                 "end": "2030-01-01T00:00:00Z"}}, auth)
        assert status == 200 and answer["silence"]["matchers"] == {"job": "worker"}  # type: ignore[index]
