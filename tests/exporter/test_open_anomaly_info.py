"""``otel_anomaly_open_info``: one sample per open anomaly, with its id and explanation."""

from __future__ import annotations

import numpy as np
from helpers.sidecars import FAST_DETECTOR, grpc_clients, loopback_config, running, scrape
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink
from otel_anomaly.exporter.outputs import PrometheusOutput, ScoringRound
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.alerting.silence import SILENCE_DETECTOR, SILENCE_METRIC
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request
from otel_anomaly.processors.types import AnomalyEvent, EventKind, Labels, ScoreBatch, SeriesKey

KEY = SeriesKey("queue_depth", (("service.name", "worker"),), (("queue", "jobs"),))
LABELS: Labels = (("detector", "ewma_zscore"), ("job", "worker"), ("metric", "queue_depth"),
                  ("queue", "jobs"))
INFO = "otel_anomaly_open_info"


def _scores(slot: int, flag: bool) -> ScoreBatch:
    f = np.array([1.0])
    return ScoreBatch(np.array([slot]), np.array([1]), f, f, f, f, f, np.array([flag]))


def _event(kind: EventKind, anomaly: str, slot: int = 0, text: str = "queue_depth up",
           key: SeriesKey = KEY, lower: float = 4.0) -> AnomalyEvent:
    return AnomalyEvent(kind, slot, key, 1, "up", 5.0, 90.0, 10.0, lower, 16.0,
                        key and "ewma_zscore", text, anomaly_id=anomaly)


def _round(*events: AnomalyEvent, flag: bool = True,
           evicted: tuple[int, ...] = ()) -> ScoringRound:
    return ScoringRound(scores=_scores(0, flag), labels={0: LABELS}, events=events,
                        evicted=np.asarray(evicted, np.intp))


def _info(output: PrometheusOutput) -> list[dict[str, str]]:
    registry = CollectorRegistry()
    registry.register(output.collector)
    text = generate_latest(registry).decode()
    return [s.labels for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == INFO]


def _output() -> PrometheusOutput:
    return PrometheusOutput(10, Telemetry(CollectorRegistry()))


def test_open_sets_update_replaces_and_close_removes_the_one_info_sample() -> None:
    output = _output()
    assert _info(output) == []
    output.publish(_round(_event("open", "a1", lower=4.25)))
    (info,) = _info(output)
    assert info == {**dict(LABELS), "anomaly_id": "a1", "anomaly_direction": "up",
                    "anomaly_expected": "10", "anomaly_lower": "4.25", "anomaly_upper": "16",
                    "anomaly_explanation": "queue_depth up"}
    output.publish(_round(_event("update", "a1", text="queue_depth still up")))
    (info,) = _info(output)
    assert (info["anomaly_id"], info["anomaly_explanation"]) == ("a1", "queue_depth still up")
    output.publish(_round(_event("close", "a1"), flag=False))
    assert _info(output) == []


def test_an_evicted_series_takes_its_open_anomaly_with_it() -> None:
    output = _output()
    output.publish(_round(_event("open", "a1")))
    output.publish(ScoringRound(evicted=np.array([0], np.intp)))
    assert _info(output) == []
    # A new series in the reused slot opens its own anomaly; the old id never comes back.
    output.publish(_round(_event("open", "b2")))
    assert [i["anomaly_id"] for i in _info(output)] == ["b2"]


def test_a_silent_service_has_an_info_sample_of_its_own() -> None:
    output = _output()
    key = SeriesKey(SILENCE_METRIC, (("service.name", "checkout"),
                                     ("service.namespace", "shop")), ())
    silent = AnomalyEvent("open", -1, key, 1, "down", 2.0, 120.0, 10.0, 0.0, 60.0,
                          SILENCE_DETECTOR, "shop/checkout stopped reporting", anomaly_id="s1")
    output.publish(ScoringRound(events=(silent,)))
    (info,) = _info(output)
    assert (info["metric"], info["job"], info["detector"]) == (
        SILENCE_METRIC, "shop/checkout", "silence")
    output.publish(ScoringRound(events=(
        AnomalyEvent("close", -1, key, 2, "down", 0.0, 0.0, 10.0, 0.0, 60.0, SILENCE_DETECTOR,
                     "shop/checkout reports again", anomaly_id="s1"),)))
    assert _info(output) == []


def test_the_info_gauge_names_only_series_the_scrape_exports() -> None:
    output = PrometheusOutput(1, Telemetry(CollectorRegistry()))  # max_exported_series: 1
    other: Labels = (("metric", "other"),)
    output.publish(ScoringRound(
        scores=ScoreBatch(np.array([0, 1]), np.array([1, 1]), *([np.ones(2)] * 5),
                          np.array([True, True])),
        labels={0: LABELS, 1: other},
        events=(_event("open", "a1"), _event("open", "b2", slot=1)),
    ))
    assert [i["anomaly_id"] for i in _info(output)] == ["a1"]  # slot 1 left out


def test_the_sidecar_exposes_the_info_gauge_while_the_anomaly_is_open(sink: OtlpSink) -> None:
    config = loopback_config({"outputs.otlp_events.endpoint": sink.endpoint,
                              "detectors": [FAST_DETECTOR]})
    normal = [(i * SECOND, 10.0 + 0.1 * (i % 3)) for i in range(1, 21)]

    def request(points: list[tuple[int, float]]) -> object:
        return metrics_request([gauge("queue.depth", points, {"queue": "jobs"})],
                               {"service.name": "worker"})

    def info(port: int | None) -> list[dict[str, str]]:
        family = scrape(port).get(INFO)
        return [s.labels for s in family.samples] if family else []

    with running(config) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        clients.metrics.Export(request([*normal, (21 * SECOND, 100.0)]), timeout=5)
        (opened,) = info(sidecar.metrics_port)
        assert (opened["job"], opened["queue"], opened["metric"]) == (
            "worker", "jobs", "queue_depth")
        assert "queue_depth" in opened["anomaly_explanation"]
        assert float(opened["anomaly_lower"]) < 10.1 < float(opened["anomaly_upper"]) < 100
        clients.metrics.Export(request([(22 * SECOND, 10.1), (23 * SECOND, 10.0)]), timeout=5)
        assert info(sidecar.metrics_port) == []
    # The shutdown flushed the events: they carry the id the info gauge showed.
    events = {r.event_name: r.attributes["anomaly.id"] for r in sink.records()}
    assert events == {"anomaly.open": opened["anomaly_id"], "anomaly.close": opened["anomaly_id"]}
