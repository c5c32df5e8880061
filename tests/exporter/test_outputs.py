"""Outputs: the fan-out isolates slow and failing outputs; rounds are self-contained."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pytest
from helpers import wait_for
from helpers.outputs import BlockingOutput, FailingOutput, RecordingOutput
from helpers.processes import free_port
from helpers.sidecars import (
    FAST_DETECTOR,
    grpc_clients,
    loopback_config,
    running,
    sample_value,
    scrape,
)
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.exporter.app import SidecarSettings
from otel_anomaly.exporter.commands.otlp_sink import OtlpSink, SinkRecord
from otel_anomaly.exporter.config import OtlpScoresConfig
from otel_anomaly.exporter.outputs import (
    OtlpScoresOutput,
    OutputFanout,
    PrometheusOutput,
    ScoreTable,
    ScoringRound,
)
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request
from otel_anomaly.processors.types import AnomalyEvent, Labels, ScoreBatch, SeriesKey


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return sample_value(families, name, **labels)


def scored(slots: list[int], value: float, labels: dict[int, Labels] | None = None,
           evicted: list[int] | None = None) -> ScoringRound:
    """A round scoring ``slots`` with every column at ``value`` (labels ``m<slot>``)."""
    v = np.full(len(slots), value)
    batch = ScoreBatch(np.asarray(slots, np.intp), np.arange(len(slots), dtype=np.int64),
                       v, v, v, v, v, np.zeros(len(slots), np.bool_))
    return ScoringRound(
        scores=batch,
        labels=labels if labels is not None else {s: (("metric", f"m{s}"),) for s in slots},
        evicted=np.asarray(evicted or [], np.intp),
    )


def spike_request() -> object:
    normal = [(i * SECOND, 10.0 + 0.1 * (i % 3)) for i in range(1, 21)]
    points = [*normal, (21 * SECOND, 100.0), (22 * SECOND, 10.1), (23 * SECOND, 10.0)]
    return metrics_request([gauge("queue.depth", points)], {"service.name": "worker"})


def events_named(sink: OtlpSink, event_name: str) -> list[SinkRecord]:
    return [r for r in sink.records() if r.event_name == event_name]


def test_a_blocked_and_a_failing_output_hold_up_neither_ingestion_nor_the_other_outputs(
    sink: OtlpSink,
) -> None:
    stuck, broken = BlockingOutput("stuck"), FailingOutput("broken")
    config = loopback_config({
        "outputs.otlp_events.endpoint": sink.endpoint, "outputs.queue_size": 2,
        "detectors": [FAST_DETECTOR],
    })
    settings = SidecarSettings(extra_outputs=(stuck, broken))
    with running(config, settings) as sidecar, grpc_clients(sidecar.grpc_port) as clients:
        try:
            response = clients.metrics.Export(spike_request(), timeout=5)
            assert response.partial_success.rejected_data_points == 0
            assert stuck.entered.wait(5), "the stuck output never got the first round"
            for i in range(8):  # each a round the stuck output cannot take
                request = metrics_request([gauge(f"load.{i}", [(SECOND, 1.0), (2 * SECOND, 2.0)])],
                                          {"service.name": "worker"})
                response = clients.metrics.Export(request, timeout=5)
                assert response.partial_success.rejected_data_points == 0, i
            for name in ("anomaly.open", "anomaly.close"):
                wait_for(lambda name=name: len(events_named(sink, name)) == 1, 10,
                         lambda name=name: f"got {len(events_named(sink, name))}/1 {name} events")
            families = scrape(sidecar.metrics_port)
            values = {s.labels["metric"] for s in families["otel_anomaly_value"].samples}
            assert {"queue_depth", "load_0", "load_7"} <= values
            # One round in the stuck publish, two queued: the six after them pushed out the oldest.
            assert sample_value(families, "otel_anomaly_output_dropped_total", output="stuck",
                                reason="queue_full") == 6
            # Each round reaches the failing output or, when its thread falls behind on a busy
            # machine (its queue holds 2), is counted as dropped; the newest always arrives.
            def broken_dropped() -> float:
                return sample_value(scrape(sidecar.metrics_port),
                                    "otel_anomaly_output_dropped_total", output="broken",
                                    reason="queue_full")
            wait_for(lambda: len(broken.rounds) + broken_dropped() == 9, 5,
                     lambda: f"the failing output got {len(broken.rounds)}/9 rounds and "
                             f"dropped {broken_dropped():g}")
            assert {dict(labels)["metric"] for labels in broken.rounds[-1].labels.values()} == {
                "load_7"}
            wait_for(lambda: sample_value(scrape(sidecar.metrics_port),
                                          "otel_anomaly_output_errors_total", output="broken",
                                          error="RuntimeError") == len(broken.rounds),
                     5, "failed publishes of the broken output not counted")
            for scoring_round in broken.rounds:  # self-contained: every scored slot labelled
                assert set(scoring_round.scores.slots.tolist()) == set(scoring_round.labels)
        finally:
            stuck.gate.set()
        wait_for(lambda: len(stuck.rounds) == 3, 5,
                 lambda: f"the stuck output got {len(stuck.rounds)}/3 rounds once released")
        kept = [{dict(labels)["metric"] for labels in r.labels.values()} for r in stuck.rounds]
        assert kept == [{"queue_depth"}, {"load_6"}, {"load_7"}]


def test_a_full_queue_drops_the_oldest_round_but_not_its_evictions() -> None:
    registry = CollectorRegistry()
    stuck = BlockingOutput()
    fanout = OutputFanout([stuck], Telemetry(registry), queue_size=2)
    fanout.start()
    try:
        fanout.publish(scored([0], 1.0))
        assert stuck.entered.wait(5), "the output never got the first round"
        fanout.publish(scored([], 2.0, evicted=[5]))
        fanout.publish(scored([], 3.0, evicted=[6]))
        fanout.publish(scored([5], 4.0))  # the queue is full: the round evicting 5 goes
        assert fanout.queued("blocking") == 2
        assert metric(registry, "otel_anomaly_output_dropped_total", output="blocking",
                      reason="queue_full") == 1
    finally:
        stuck.gate.set()
    wait_for(lambda: len(stuck.rounds) == 3, 5, lambda: f"got {len(stuck.rounds)}/3 rounds")
    fanout.shutdown(5)
    first, second, third = stuck.rounds
    assert second.evicted.tolist() == [5, 6]
    assert third.scores.slots.tolist() == [5]
    assert stuck.stopped


class CountingOutput(BlockingOutput):
    """A blocked output that counts, as the events output does, the events of dropped rounds."""

    def __init__(self) -> None:
        super().__init__("counting")
        self.dropped_events: dict[str, int] = {}

    def dropped(self, scoring_round: ScoringRound, reason: str) -> None:
        self.dropped_events[reason] = self.dropped_events.get(reason, 0) + len(
            scoring_round.events)


def test_an_output_hears_of_every_round_its_worker_drops_and_what_it_carried() -> None:
    event = AnomalyEvent("open", 0, SeriesKey("m", (), ()), 1, "up", 3.0, 9.0, 1.0, 0.0, 2.0,
                         "default", "m up")
    stuck = CountingOutput()
    fanout = OutputFanout([stuck], Telemetry(CollectorRegistry()), queue_size=1)
    fanout.start()
    try:
        fanout.publish(scored([0], 1.0))
        assert stuck.entered.wait(5), "the output never got the first round"
        for _ in range(3):  # the queue holds one: the two older ones are dropped
            fanout.publish(replace(scored([], 2.0), events=[event, event]))
        assert stuck.dropped_events == {"queue_full": 4}
    finally:
        stuck.gate.set()
    fanout.shutdown(5)


def test_failed_publishes_are_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    inline, queued = FailingOutput("inline", inline=True), FailingOutput("queued")
    recording = RecordingOutput()
    fanout = OutputFanout([inline, queued, recording], Telemetry(registry), queue_size=8)
    fanout.start()
    with caplog.at_level(logging.ERROR, logger="otel_anomaly.exporter.outputs"):
        for i in range(5):
            fanout.publish(scored([i], float(i)))  # never raises
        wait_for(lambda: len(queued.rounds) == 5, 5, lambda: f"got {len(queued.rounds)}/5")
        fanout.shutdown(5)
    for name in ("inline", "queued"):
        assert metric(registry, "otel_anomaly_output_errors_total", output=name,
                      error="RuntimeError") == 5
        lines = [r for r in caplog.records if r.getMessage().startswith(f"output {name}:")]
        assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert len(recording.rounds) == 5
    assert recording.stopped


def test_shutdown_is_bounded_when_an_output_never_returns() -> None:
    registry = CollectorRegistry()
    stuck, recording = BlockingOutput(), RecordingOutput()
    fanout = OutputFanout([stuck, recording], Telemetry(registry), queue_size=4)
    fanout.start()
    try:
        for i in range(3):
            fanout.publish(scored([i], float(i)))
        assert stuck.entered.wait(5), "the output never got the first round"
        started = time.monotonic()
        fanout.shutdown(0.5)
        assert time.monotonic() - started < 3.0
        assert len(recording.rounds) == 3
        assert recording.stopped, "the healthy output was not flushed and stopped"
        fanout.publish(scored([9], 9.0))  # after shutdown: counted, not queued
        assert metric(registry, "otel_anomaly_output_dropped_total", output="recording",
                      reason="shutting_down") == 1
    finally:
        stuck.gate.set()
    wait_for(lambda: metric(registry, "otel_anomaly_output_dropped_total", output="blocking",
                            reason="shutdown_timeout") == 2,
             5, "the rounds the stuck output still held were not counted as dropped")


def test_evictions_apply_before_the_scores_of_the_same_round() -> None:
    output = PrometheusOutput(10, Telemetry(CollectorRegistry()))
    output.publish(scored([0], 1.0, labels={0: (("metric", "old"),)}))
    # Slot 0's series was evicted and the slot reused by a new series in the same round.
    output.publish(scored([0], 2.0, labels={0: (("metric", "new"),)}, evicted=[0]))
    snapshot = output.table.snapshot()
    assert (snapshot.labels, snapshot.value.tolist()) == ([{"metric": "new"}], [2.0])


def test_otlp_scores_go_out_under_each_series_own_resource(sink: OtlpSink) -> None:
    # A backend files a gauge under its resource's service: the sidecar's own resource
    # would put every service's scores under "otel-anomaly".
    output = OtlpScoresOutput(OtlpScoresConfig(endpoint=sink.endpoint, interval=3600), 10,
                              points_per_request=4)
    output.start()
    try:
        resources = {0: (("service.name", "checkout"),), 1: (("service.name", "search"),
                                                            ("service.namespace", "shop")),
                     2: ()}
        output.publish(replace(scored([0, 1, 2], 1.0), resources=resources))
        output.publish(scored([0], 2.0))  # a later round: the resource was kept with slot 0
        output.push()
    finally:
        output.shutdown(5)
    pushed: dict[tuple[tuple[str, str], ...], dict[str, list[tuple[str, float]]]] = {}
    for request in sink.metrics():
        for rm in request.resource_metrics:
            resource = tuple(sorted((kv.key, kv.value.string_value)
                                    for kv in rm.resource.attributes))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    pushed.setdefault(resource, {})[m.name] = [
                        ({kv.key: kv.value.string_value for kv in p.attributes}["metric"],
                         p.as_double) for p in m.gauge.data_points]
    assert pushed[(("service.name", "checkout"),)]["otel_anomaly.value"] == [("m0", 2.0)]
    assert pushed[(("service.name", "search"), ("service.namespace", "shop"))][
        "otel_anomaly.score"] == [("m1", 1.0)]
    # No resource of its own: the sidecar's.
    assert pushed[(("service.name", "otel-anomaly"),)]["otel_anomaly.flag"] == [("m2", 0.0)]
    assert len(pushed) == 3, sorted(pushed)
    # 7 gauges of 3 series, then 7 of one: at most 4 points per request.
    sizes = [sum(len(m.gauge.data_points) for rm in r.resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics) for r in sink.metrics()]
    assert max(sizes) <= 4 and len(sizes) > 1, sizes


def test_a_reused_slot_takes_its_new_series_resource() -> None:
    table = ScoreTable(keep_resources=True)
    round_one = scored([0], 1.0)
    table.update(round_one.scores, round_one.labels, {0: (("service.name", "old"),)})
    table.remove(np.array([0]))  # evicted, and the slot reused by another service's series
    round_two = scored([0], 2.0, labels={0: (("metric", "new"),)})
    table.update(round_two.scores, round_two.labels, {0: (("service.name", "new"),)})
    assert table.snapshot().resources == [(("service.name", "new"),)]
    assert ScoreTable().snapshot().resources == []  # not kept unless asked for


def test_a_push_the_endpoint_does_not_take_is_counted() -> None:
    registry = CollectorRegistry()
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens here
    output = OtlpScoresOutput(OtlpScoresConfig(endpoint=nobody, interval=3600, timeout=0.5), 10,
                              telemetry=Telemetry(registry))
    output.start()
    try:
        output.publish(scored([0], 1.0))
        output.push()
    finally:
        output.shutdown(1)
    assert metric(registry, "otel_anomaly_output_errors_total", output="otlp_scores",
                  error="export_failed") >= 1
