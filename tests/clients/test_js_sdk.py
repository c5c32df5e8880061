"""A second real client in another language: the OpenTelemetry JavaScript SDK, on Node.js.

``tests/clients/js/send.js`` (packages pinned in its ``package-lock.json``, installed by
``.ci/run`` with ``npm ci``) records a gauge, a counter, a histogram and spans as a service
``js-shop`` and exports them with the SDK's own OTLP exporters, over gRPC, HTTP/protobuf
and HTTP/JSON, to a sidecar on loopback ports chosen at run time. The test checks that the
sidecar took every point and span the SDK says were acknowledged, rejected and dropped none,
and that the client's series, its RED features from spans included, are scored on
``/metrics``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from helpers.sidecars import loopback_config, running, scrape
from prometheus_client.metrics_core import Metric

JS = Path(__file__).parent / "js"
SERVICE = "js-shop"
# Short event-time windows, so RED windows close while the 3 s client runs: spans every
# 25 ms cover each 500 ms window from start to end, and 200 ms of lateness absorbs the
# batch processor's export order.
OVERRIDES = {"traces.window": "500ms", "traces.lateness": "200ms"}
SCORED = (
    "shop_queue_depth",                          # observable gauge
    "shop_orders_total:rate",                    # counter
    "shop_checkout_duration_milliseconds:p95",   # explicit-bucket histogram
    "shop_checkout_duration_milliseconds:rate",
    "traces_span_metrics_calls_total:rate",      # RED, per span name
    "traces_span_metrics_error:ratio",
    "traces_span_metrics_duration_milliseconds:p95",
    "traces_span_duration_milliseconds",         # every span against its operation
)


def node() -> str:
    """Path of node once ``npm ci`` has run in tests/clients/js; fails in CI, else skips."""
    tool = shutil.which("node")
    if tool is None or not (JS / "node_modules").is_dir():
        missing = ("node is not installed (Debian packages nodejs and npm)" if tool is None
                   else "tests/clients/js/node_modules is missing (npm ci --prefix tests/clients/js)")
        if os.environ.get("CI"):
            pytest.fail(f"{missing} in CI: .ci/run must install it")
        pytest.skip(f"{missing}; CI installs it")
    return tool


def run_client(protocol: str, endpoint: str) -> dict[str, Any]:
    """Run send.js to completion; its summary of what the sidecar acknowledged."""
    done = subprocess.run(
        [node(), str(JS / "send.js"), "--protocol", protocol, "--endpoint", endpoint,
         "--service", SERVICE, "--duration-ms", "3000", "--export-interval-ms", "400"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, f"send.js exited {done.returncode}: {done.stderr}"
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def totals(families: Mapping[str, Metric], family: str, **labels: str) -> float:
    """Sum of the ``_total`` samples of a counter family whose labels include ``labels``."""
    found = families.get(family)
    return sum(s.value for s in (found.samples if found else [])
               if s.name.endswith("_total") and all(s.labels.get(k) == v
                                                     for k, v in labels.items()))


def scored(families: Mapping[str, Metric]) -> dict[tuple[str, str], float]:
    """``(metric, span_name)`` to value for the client's series in ``otel_anomaly_value``."""
    found = families.get("otel_anomaly_value")
    return {(s.labels["metric"], s.labels.get("span_name", "")): s.value
            for s in (found.samples if found else []) if s.labels.get("job") == SERVICE}


@pytest.mark.parametrize(("protocol", "transport"), [
    ("grpc", "grpc"), ("http/protobuf", "http"), ("http/json", "http"),
])
def test_js_sdk_points_and_spans_are_all_received_and_scored(
    protocol: str, transport: str,
) -> None:
    node()
    with running(loopback_config(OVERRIDES)) as sidecar:
        port = sidecar.grpc_port if transport == "grpc" else sidecar.http_port
        sent = run_client(protocol, f"http://127.0.0.1:{port}")
        assert sent["failed_exports"] == 0, sent
        assert sent["spans"] == sent["spans_started"] > 50, sent
        assert sent["metric_exports"] >= 5, sent  # several collection intervals

        def received() -> dict[str, float]:
            families = scrape(sidecar.metrics_port)
            return {signal: totals(families, "otel_anomaly_points_received", signal=signal)
                    for signal in ("metrics", "traces")}

        want = {"metrics": sent["metric_points"], "traces": sent["spans"]}
        wait_for(lambda: received() == want, 10, lambda: f"received {received()}, sent {want}")

        def missing() -> list[str]:
            metrics = {metric for metric, _ in scored(scrape(sidecar.metrics_port))}
            return [m for m in SCORED if m not in metrics]

        wait_for(lambda: not missing(), 10, lambda: f"{missing()} not scored")
        families = scrape(sidecar.metrics_port)
        for signal, exports in (("metrics", sent["metric_exports"]),
                                ("traces", sent["span_exports"])):
            requests = {outcome: totals(families, "otel_anomaly_requests", transport=transport,
                                        signal=signal, outcome=outcome)
                        for outcome in ("ok", "partial")}
            assert requests == {"ok": exports, "partial": 0}, (signal, requests, sent)
            assert totals(families, "otel_anomaly_points_rejected", signal=signal) == 0
            assert totals(families, "otel_anomaly_points_dropped", signal=signal) == 0
        values = scored(families)
        assert 40 <= values["shop_queue_depth", ""] <= 46, values
        # 2 orders per tick, a tick every 25 ms or more: about 80 a second at most (a
        # collection interval's timestamps may be a little shorter than its ticks).
        assert 0 < values["shop_orders_total:rate", ""] <= 100, values
        # Durations of 20 to 30 ms, in the SDK's default buckets (..., 10, 25, 50, ...).
        assert 25 < values["shop_checkout_duration_milliseconds:p95", ""] <= 50, values
        calls = [values["traces_span_metrics_calls_total:rate", name]
                 for name in ("GET /cart", "POST /checkout")]
        assert all(math.isfinite(rate) and rate > 0 for rate in calls), values
        assert sum(calls) <= 1000 / 25 * 1.1, values  # one span per tick
        # Only every 20th tick fails, and it is always a POST /checkout.
        assert values["traces_span_metrics_error:ratio", "GET /cart"] == 0, values
        assert 0 <= values["traces_span_metrics_error:ratio", "POST /checkout"] <= 1, values
