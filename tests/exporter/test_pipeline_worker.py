"""Pipeline: bounded intake, one named worker, failures resolve futures, clean shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from google.protobuf.message import Message
from helpers import wait_for
from helpers.engines import FailingEngine, GatedEngine, RecordingEngine
from helpers.sidecars import sample_value
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.exporter.outputs import PrometheusOutput, ScoringRound
from otel_anomaly.exporter.pipeline import THREAD_NAME, Pipeline, PipelineClosedError
from otel_anomaly.exporter.receivers.signals import Signal
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.engine import Engine, EngineStats
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    gauge,
    logs_request,
    metrics_request,
    span,
    traces_request,
)
from otel_anomaly.processors.types import AnomalyEvent, IngestResult, ScoreBatch, SeriesKey

REQUEST = metrics_request([gauge("cpu", [(1, 0.5), (2, 0.6)])])


class Harness:
    def __init__(self, engine: RecordingEngine, queue_size: int = 4) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        self.telemetry = Telemetry(self.registry)
        self.prometheus = PrometheusOutput(100, self.telemetry)
        self.scores = self.prometheus.table
        self.rounds: list[ScoringRound] = []
        self.clock = engine.settings.clock
        self.pipeline = Pipeline(
            engine, self.telemetry, self.publish,
            queue_size=queue_size, clock=self.clock, evict_interval_s=10.0,
        )

    def publish(self, scoring_round: ScoringRound) -> None:
        self.prometheus.publish(scoring_round)
        self.rounds.append(scoring_round)

    @property
    def published(self) -> list[AnomalyEvent]:
        return [event for r in self.rounds for event in r.events]

    def metric(self, name: str, **labels: str) -> float:
        families = {
            f.name: f
            for f in text_string_to_metric_families(generate_latest(self.registry).decode())
        }
        return sample_value(families, name, **labels)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def harness(clock: FakeClock) -> Iterator[Harness]:
    h = Harness(RecordingEngine(EngineSettings(clock=clock)))
    h.pipeline.start()
    yield h
    h.pipeline.shutdown(5)


def test_submit_resolves_with_the_engine_result_on_the_named_worker(harness: Harness) -> None:
    future = harness.pipeline.submit("metrics", REQUEST, 2)
    assert future is not None
    assert future.result(5).accepted == 2
    assert harness.engine.threads == {THREAD_NAME}
    assert harness.metric("otel_anomaly_request_processing_seconds_count", signal="metrics") == 1


def test_full_queue_refuses_without_blocking(clock: FakeClock) -> None:
    h = Harness(GatedEngine(EngineSettings(clock=clock)), queue_size=1)
    engine = h.engine
    assert isinstance(engine, GatedEngine)
    h.pipeline.start()
    try:
        first = h.pipeline.submit("metrics", REQUEST, 2)
        wait_for(engine.entered.is_set, 5, "the worker never took the first request")
        queued = h.pipeline.submit("metrics", REQUEST, 2)
        assert queued is not None
        assert h.pipeline.submit("metrics", REQUEST, 2) is None
        assert h.pipeline.accepting
        engine.gate.set()
        assert first is not None and first.result(5).accepted == 2
        assert queued.result(5).accepted == 2
    finally:
        engine.gate.set()
        h.pipeline.shutdown(5)


def test_engine_failure_fails_only_that_request_and_is_logged_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(FailingEngine(EngineSettings(clock=clock)))
    engine = h.engine
    assert isinstance(engine, FailingEngine)
    h.pipeline.start()
    try:
        with caplog.at_level(logging.ERROR, logger="otel_anomaly.exporter.pipeline"):
            for _ in range(3):
                future = h.pipeline.submit("metrics", REQUEST, 2)
                assert future is not None
                with pytest.raises(ValueError, match="boom"):
                    future.result(5)
        assert len([r for r in caplog.records if "ValueError" in r.getMessage()]) == 1
        engine.failure = None
        future = h.pipeline.submit("metrics", REQUEST, 2)
        assert future is not None and future.result(5).accepted == 2
        assert h.metric("otel_anomaly_pipeline_errors_total", stage="metrics",
                        error="ValueError") == 3
        assert h.metric("otel_anomaly_points_dropped_total", signal="metrics",
                        reason="internal_error") == 6
    finally:
        h.pipeline.shutdown(5)


def test_results_feed_scores_events_and_self_metrics(clock: FakeClock) -> None:
    key = SeriesKey("cpu", (("service.name", "a"),), ())
    event = AnomalyEvent("open", 0, key, 5, "up", 3.0, 9.0, 1.0, 0.0, 2.0, "default", "cpu up")
    v = np.array([9.0])

    class Scoring(RecordingEngine):
        def ingest(self, signal: Signal, request: Message, data: bytes | None = None
                   ) -> IngestResult:
            result = IngestResult(accepted=1, rejected={"non_finite": 1},
                                  skipped={"first_point": 1})
            result.scores = ScoreBatch(np.array([0]), np.array([5]), v, v, v, v, v,
                                       np.array([True]))
            result.events = [event]
            return result

        def stats(self) -> EngineStats:
            return EngineStats(7, 3, 0, 1)

    h = Harness(Scoring(EngineSettings(clock=clock)))
    h.pipeline.start()
    try:
        future = h.pipeline.submit("metrics", REQUEST, 2)
        assert future is not None
        future.result(5)
        assert h.scores.snapshot().flag.tolist() == [True]
        assert h.published == [event]
        assert h.metric("otel_anomaly_points_rejected_total", signal="metrics",
                        reason="non_finite") == 1
        assert h.metric("otel_anomaly_points_skipped_total", signal="metrics",
                        reason="first_point") == 1
        assert h.metric("otel_anomaly_events_total", kind="open") == 1
        assert h.metric("otel_anomaly_series_active") == 7
        assert h.metric("otel_anomaly_series_warming") == 3
        assert h.metric("otel_anomaly_points_scored_total") == 1
    finally:
        h.pipeline.shutdown(5)


def test_idle_series_are_evicted_on_the_engine_clock(harness: Harness, clock: FakeClock) -> None:
    future = harness.pipeline.submit("metrics", REQUEST, 2)
    assert future is not None
    future.result(5)
    before = harness.engine.evict_calls
    clock.advance(11.0)
    future = harness.pipeline.submit("metrics", REQUEST, 2)
    assert future is not None
    future.result(5)
    wait_for(lambda: harness.engine.evict_calls > before, 5, "no eviction after the interval")


def test_cancelled_request_is_skipped_and_counted(clock: FakeClock) -> None:
    h = Harness(GatedEngine(EngineSettings(clock=clock)))
    engine = h.engine
    assert isinstance(engine, GatedEngine)
    h.pipeline.start()
    try:
        first = h.pipeline.submit("metrics", REQUEST, 2)
        wait_for(engine.entered.is_set, 5, "the worker never took the first request")
        second = h.pipeline.submit("metrics", REQUEST, 2)
        assert first is not None and second is not None
        assert second.cancel()
        engine.gate.set()
        first.result(5)
        wait_for(lambda: h.metric("otel_anomaly_points_dropped_total", signal="metrics",
                                  reason="cancelled") == 2, 5, "cancelled points not counted")
        assert len(engine.requests) == 1
    finally:
        engine.gate.set()
        h.pipeline.shutdown(5)


def test_shutdown_drains_queued_requests_then_refuses(clock: FakeClock) -> None:
    h = Harness(GatedEngine(EngineSettings(clock=clock)))
    engine = h.engine
    assert isinstance(engine, GatedEngine)
    h.pipeline.start()
    futures = [h.pipeline.submit("metrics", REQUEST, 2) for _ in range(3)]
    engine.gate.set()
    h.pipeline.shutdown(5)
    assert all(f is not None and f.result(0).accepted == 2 for f in futures)
    assert h.pipeline.submit("metrics", REQUEST, 2) is None
    assert not h.pipeline.accepting and not h.pipeline.running


def test_shutdown_timeout_fails_what_is_still_queued(clock: FakeClock) -> None:
    h = Harness(GatedEngine(EngineSettings(clock=clock)))
    engine = h.engine
    assert isinstance(engine, GatedEngine)
    h.pipeline.start()
    first = h.pipeline.submit("metrics", REQUEST, 2)
    wait_for(engine.entered.is_set, 5, "the worker never took the first request")
    stuck = h.pipeline.submit("metrics", REQUEST, 2)
    h.pipeline.shutdown(0.2)  # the worker is blocked in the engine
    assert stuck is not None
    with pytest.raises(PipelineClosedError):
        stuck.result(0)
    engine.gate.set()
    assert first is not None and first.result(5).accepted == 2


CHECKOUT = {"service.name": "checkout"}


def _submit(h: Harness, signal: Signal, request: Message, count: int) -> IngestResult:
    future = h.pipeline.submit(signal, request, count)
    assert future is not None, "the pipeline refused a request"
    return future.result(5)


def test_shutdown_scores_no_open_window_and_raises_no_event(clock: FakeClock) -> None:
    engine = Engine(EngineSettings(clock=clock, traces_window_s=10, lateness_s=0,
                                   span_outliers=False))
    h = Harness(engine)  # type: ignore[arg-type]
    h.pipeline.start()
    try:
        for w in range(100, 160):  # whole windows, 1 call a second
            spans = [span("GET /", (w * 10 + i) * SECOND, 1.0) for i in range(10)]
            _submit(h, "traces", traces_request(spans), 10)
        # The client stops 2 s into the next window: it, and the one before, are still open.
        _submit(h, "traces", traces_request([span("GET /", 1601 * SECOND, 1.0)]), 1)
        scored, published = engine.stats().points_scored_total, list(h.published)
    finally:
        h.pipeline.shutdown(5)
    assert scored > 0
    assert engine.stats().points_scored_total == scored, "shutdown scored open windows"
    assert h.published == published
    assert [e.explanation for e in h.published if e.kind == "open"] == []


def test_a_silent_service_opens_on_the_worker_tick_and_closes_when_it_resumes(
    clock: FakeClock,
) -> None:
    engine = Engine(EngineSettings(clock=clock, silence_after_s=60.0))
    h = Harness(engine)  # type: ignore[arg-type]
    h.pipeline.start()

    def kinds() -> list[str]:
        return [e.kind for e in h.published]

    try:
        for i in range(4):  # every 10 s
            _submit(h, "logs", logs_request([((1000 + i) * SECOND, 9)], CHECKOUT), 1)
            clock.advance(10.0)
        clock.advance(60.0)  # 70 s since it last reported
        wait_for(lambda: kinds() == ["open"], 5, lambda: f"events {kinds()}, expected one open")
        assert h.published[0].explanation == (
            "checkout stopped reporting (no data for 1m10s, usually every 10s)")
        assert dict(h.published[0].key.resource) == CHECKOUT
        wait_for(lambda: h.metric("otel_anomaly_services_silent") == 1, 5,
                 "otel_anomaly_services_silent is not 1")
        _submit(h, "logs", logs_request([(1100 * SECOND, 9)], CHECKOUT), 1)
        clock.advance(1.0)  # the next tick
        wait_for(lambda: kinds() == ["open", "close"], 5,
                 lambda: f"events {kinds()}, expected open then close")
        wait_for(lambda: h.metric("otel_anomaly_services_silent") == 0, 5,
                 "otel_anomaly_services_silent is not back to 0")
        assert h.metric("otel_anomaly_events_total", kind="open") == 1
    finally:
        h.pipeline.shutdown(5)


def test_no_silence_is_reported_once_shutdown_began(clock: FakeClock) -> None:
    h = Harness(GatedEngine(EngineSettings(clock=clock, silence_after_s=60.0)))
    engine = h.engine
    assert isinstance(engine, GatedEngine)
    for i in range(4):
        engine.silence.seen([(("service.name", "checkout"),)], clock() + 10.0 * i)
    h.pipeline.start()
    stopping = threading.Thread(target=h.pipeline.shutdown, args=(5,), name="test-shutdown")
    try:
        first = h.pipeline.submit("metrics", REQUEST, 2)
        wait_for(engine.entered.is_set, 5, "the worker never took the request")
        clock.advance(3600.0)  # everyone silent for an hour, as the sidecar stops
        stopping.start()
        wait_for(lambda: not h.pipeline.accepting, 5, "shutdown did not begin")
        engine.gate.set()
        assert first is not None and first.result(5).accepted == 2
        stopping.join(5)
        assert not stopping.is_alive(), "shutdown did not finish"
    finally:
        engine.gate.set()
        h.pipeline.shutdown(5)
    assert h.published == []


def test_series_counts_catch_up_while_the_sidecar_is_idle(clock: FakeClock) -> None:
    # Counts refresh at most once a second; the second of two quick requests added a series
    # after the last refresh: the idle worker must publish it, not wait for the next request.
    class Counting(RecordingEngine):
        def stats(self) -> EngineStats:
            return EngineStats(len(self.requests), 0, 0, 0)

    h = Harness(Counting(EngineSettings(clock=clock)))
    h.pipeline.start()
    try:
        for _ in range(2):
            future = h.pipeline.submit("metrics", REQUEST, 2)
            assert future is not None
            future.result(5)
        wait_for(lambda: h.metric("otel_anomaly_series_active") == 2, 10,
                 lambda: f"series_active {h.metric('otel_anomaly_series_active')}")
    finally:
        h.pipeline.shutdown(5)


def test_each_round_keeps_the_labels_of_its_own_series_when_a_slot_is_reused(
        clock: FakeClock) -> None:
    # One series at a time: the first is evicted (idle past its ttl), the second takes its
    # slot. The first round, read only afterwards, still names the first series.
    engine = Engine(EngineSettings(clock=clock, max_series=1, series_ttl_s=5.0))
    h = Harness(engine)  # type: ignore[arg-type] # a real engine: it scores and evicts
    h.pipeline.start()
    try:
        for name in ("cpu", "mem"):
            request = metrics_request([gauge(name, [(1, 0.5), (2, 0.6)])])
            future = h.pipeline.submit("metrics", request, 2)
            assert future is not None
            future.result(5)
            clock.advance(11.0)  # past the ttl and the eviction interval
            wait_for(lambda: any(len(r.evicted) for r in h.rounds), 5, "nothing evicted")
        scored = [r for r in h.rounds if len(r.scores)]
        assert [dict(r.labels[int(r.scores.slots[0])])["metric"] for r in scored] == [
            "cpu", "mem"]
        assert scored[0].scores.slots[0] == scored[1].scores.slots[0]  # the same slot
    finally:
        h.pipeline.shutdown(5)
