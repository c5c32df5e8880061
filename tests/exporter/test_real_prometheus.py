"""The real Prometheus server (Debian's package) scrapes the sidecar with the shipped config."""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import helpers.promtool
import pytest
import yaml
from helpers.processes import free_port
from helpers.promtool import prometheus_running
from helpers.sidecars import grpc_clients, http_get, loopback_config, running
from helpers.wait import wait_for

from otel_anomaly.processors.testing import SECOND, gauge, metrics_request

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEADY = [(i * SECOND, 10.0 + (i % 3) * 0.1) for i in range(1, 41)]


@contextmanager
def prometheus_scraping(tmp_path: Path, sidecar_port: int) -> Iterator[int]:
    """Prometheus on a free port with examples/prometheus.yml aimed at the sidecar."""
    config = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(EXAMPLES / "alert-rules.yml")]
    job = config["scrape_configs"][0]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{sidecar_port}"]}]
    with prometheus_running(tmp_path, config) as port:
        yield port


def api(port: int, path: str, **params: str) -> Any:
    status, _, body = http_get(port, f"{path}?{urllib.parse.urlencode(params)}")
    assert status == 200, body
    return json.loads(body)["data"]


def query(port: int, promql: str) -> list[dict[str, Any]]:
    return api(port, "/api/v1/query", query=promql)["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_scores_with_the_series_own_labels_and_evaluates_the_rules(
    tmp_path: Path,
) -> None:
    config = loopback_config({"detectors": [{
        "name": "quick", "type": "ewma_zscore", "params": {"warmup": 5},
        "alert": {"min_duration": 1, "close_after": 5}}]})
    spiky = [*STEADY, (41 * SECOND, 50.0)]
    request = metrics_request(
        [gauge("queue.depth", spiky, {"queue": "jobs", "__name__": "hostile"}),
         gauge("queue.depth", STEADY, {"queue": "mail"})],
        {"service.name": "worker", "service.namespace": "batch", "service.instance.id": "w-1"})
    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(request, timeout=5)
        with prometheus_scraping(tmp_path, sidecar.metrics_port) as port:
            wait_for(lambda: len(query(port, "otel_anomaly_flag")) == 2, 30,
                     lambda: f"flags scraped: {query(port, 'otel_anomaly_flag')}")
            targets = api(port, "/api/v1/targets")["activeTargets"]
            assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
            flags = {r["metric"]["queue"]: (r["metric"], r["value"][1])
                     for r in query(port, "otel_anomaly_flag")}
            labels, flagged = flags["jobs"]
            # honor_labels keeps the scored series' own job and instance.
            assert (labels["job"], labels["instance"]) == ("batch/worker", "w-1")
            assert labels["metric"] == "queue_depth" and labels["attr___name__"] == "hostile"
            assert flagged == "1" and flags["mail"][1] == "0"
            # The self-metrics carry the scrape job of the sidecar, as the rules expect.
            assert query(port, 'up{job="otel-anomaly"}')[0]["value"][1] == "1"
            wait_for(lambda: bool(query(port, 'ALERTS{alertname="OtelAnomalyDetected"}')), 30,
                     "the example alert rule picks up the open anomaly")
            rules = [rule for group in api(port, "/api/v1/rules")["groups"]
                     for rule in group["rules"]]
            assert rules and all(rule["health"] in ("ok", "unknown") for rule in rules), [
                (rule["name"], rule["health"], rule.get("lastError")) for rule in rules]
            # The open anomaly's info gauge: its id labels the alert, its text describes it.
            (info,) = [r["metric"] for r in query(port, "otel_anomaly_open_info")]
            assert (info["job"], info["queue"]) == ("batch/worker", "jobs")
            (alert,) = [a for a in api(port, "/api/v1/alerts")["alerts"]
                        if a["labels"]["alertname"] == "OtelAnomalyDetected"]
            assert alert["labels"]["anomaly_id"] == info["anomaly_id"]
            assert info["anomaly_explanation"] in alert["annotations"]["description"]
            assert "held band [" in alert["annotations"]["description"]
            # Closed: the info gauge goes stale, and so does the alert.
            calm = [(t * SECOND, 10.0) for t in range(42, 50)]
            clients.metrics.Export(metrics_request(
                [gauge("queue.depth", calm, {"queue": "jobs", "__name__": "hostile"})],
                {"service.name": "worker", "service.namespace": "batch",
                 "service.instance.id": "w-1"}), timeout=5)
            wait_for(lambda: not query(port, "otel_anomaly_open_info"), 30,
                     lambda: f"info still scraped: {query(port, 'otel_anomaly_open_info')}")
            wait_for(lambda: not query(port, 'ALERTS{alertname="OtelAnomalyDetected"}'), 30,
                     "the alert ends with the anomaly")


def test_prometheus_starts_again_on_a_new_port_when_its_picked_one_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A port picked free may be taken before Prometheus binds it (see helpers.processes).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])
        monkeypatch.setattr(helpers.promtool, "free_port", lambda: next(picks, None) or free_port())
        with prometheus_running(tmp_path, {"global": {"scrape_interval": "15s"}}) as ready:
            assert ready != port
            assert http_get(ready, "/-/ready")[0] == 200
