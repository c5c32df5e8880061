"""Traces to RED features and span outliers; logs to rates and error ratios."""

from __future__ import annotations

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_anomaly.processors.alerting.silence import SILENCE_METRIC
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import SPAN_DURATION_METRIC, EngineSettings
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    counter,
    gauge,
    histogram,
    logs_request,
    metrics_request,
    span,
    traces_request,
)
from otel_anomaly.processors.types import AnomalyEvent, IngestResult


def _engine(**kwargs: object) -> Engine:
    return Engine(EngineSettings(clock=FakeClock(), traces_window_s=10, logs_window_s=10,
                                 lateness_s=0, **kwargs))  # type: ignore[arg-type]


def _rows(result: IngestResult, engine: Engine) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for slot, value in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                           strict=True):
        out.setdefault(engine.series_key(slot).metric, []).append(value)
    return out


def test_red_features_per_operation_over_event_time_windows() -> None:
    engine = _engine(span_outliers=False)
    # The service starts at 95 s: its first window, [90, 100), is incomplete (not scored).
    spans = [span("GET /", 95 * SECOND, 1.0)] + [
        span("GET /", (100 + i) * SECOND, 10.0 * (i + 1), error=(i == 0)) for i in range(4)]
    first = engine.ingest("traces", traces_request(spans))
    assert first.accepted == 5 and len(first.scores) == 0  # the window is still open
    # A span in a later window moves the watermark and closes the first window.
    later = engine.ingest("traces", traces_request([span("GET /", 112 * SECOND, 5.0)]))
    rows = _rows(later, engine)
    assert rows["traces_span_metrics_calls_total:rate"] == [0.4]
    assert rows["traces_span_metrics_error:ratio"] == [0.25]
    assert rows["traces_span_metrics_duration_milliseconds:p50"] == [25.0]
    key = engine.series_key(int(later.scores.slots[0]))
    assert dict(key.attributes) == {"span.name": "GET /", "span.kind": "SPAN_KIND_SERVER"}
    assert dict(key.resource) == {"service.name": "test"}


def test_quiet_operation_reports_zero_calls() -> None:
    engine = _engine(span_outliers=False)
    engine.ingest("traces", traces_request([span("a", 95 * SECOND, 1.0), span("b", 96 * SECOND, 1.0)]))
    engine.ingest("traces", traces_request([span("a", 100 * SECOND, 1.0), span("b", 101 * SECOND, 1.0)]))
    engine.ingest("traces", traces_request([span("b", 110 * SECOND, 1.0)]))
    engine.ingest("traces", traces_request([span("b", 119 * SECOND, 1.0)]))
    # The service still reports: its quiet operation "a" gets a zero, not silence.
    result = engine.ingest("traces", traces_request([span("b", 121 * SECOND, 1.0)]))
    calls = {dict(engine.series_key(s).attributes)["span.name"]: v
             for s, v in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                             strict=True)
             if engine.series_key(s).metric.startswith("traces_span_metrics_calls")}
    assert calls == {"a": 0.0, "b": 0.2}


def test_late_span_is_accepted_but_not_aggregated() -> None:
    engine = _engine(span_outliers=False)
    engine.ingest("traces", traces_request([span("a", 100 * SECOND, 1.0)]))
    engine.ingest("traces", traces_request([span("a", 130 * SECOND, 1.0)]))
    result = engine.ingest("traces", traces_request([span("a", 101 * SECOND, 1.0)]))
    assert result.accepted == 1 and result.skipped == {"late": 1}


def test_span_outlier_carries_trace_and_span_id() -> None:
    engine = _engine()
    rng = np.random.default_rng(0)
    t = 100 * SECOND
    # Ten requests: each teaches its operation's baseline a sample of its spans.
    for r in range(10):
        normal = [span("GET /", t + (r * 100 + i) * SECOND // 100, float(rng.normal(20, 2)))
                  for i in range(100)]
        engine.ingest("traces", traces_request(normal))
    slow = span("GET /", t + 11 * SECOND, 900.0, trace_id=b"\xab" * 16, span_id=b"\xcd" * 8)
    result = engine.ingest("traces", traces_request([slow]))
    opened = [e for e in result.events if e.kind == "open"]
    assert len(opened) == 1, result.events
    event = opened[0]
    assert event.key.metric == SPAN_DURATION_METRIC
    assert event.trace_id == b"\xab" * 16 and event.span_id == b"\xcd" * 8
    assert event.direction == "up" and event.value == 900.0


def test_spans_without_timestamps_are_rejected() -> None:
    engine = _engine()
    bad = span("x", 0, 1.0)
    bad.start_time_unix_nano = 0
    bad.end_time_unix_nano = 0
    result = engine.ingest("traces", traces_request([bad, span("y", 5 * SECOND, 1.0)]))
    assert result.rejected == {"missing_timestamp": 1} and result.accepted == 1


def test_logs_rate_by_severity_and_error_ratio() -> None:
    engine = _engine()
    info, error = 9, 17
    records = [(95 * SECOND, info)]  # the service's first, incomplete window
    records += [(100 * SECOND + i, info) for i in range(6)] + [(101 * SECOND, error)] * 4
    engine.ingest("logs", logs_request(records))
    result = engine.ingest("logs", logs_request([(110 * SECOND, info)]))
    rows = {}
    for slot, value in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                           strict=True):
        key = engine.series_key(slot)
        rows[(key.metric, key.attributes)] = value
    assert rows[("logs_records_total:rate", (("severity", "INFO"),))] == 0.6
    assert rows[("logs_records_total:rate", (("severity", "ERROR"),))] == 0.4
    assert rows[("logs_error:ratio", ())] == 0.4


def test_one_client_from_the_future_does_not_close_everyones_windows() -> None:
    now_s = 1_700_000_000.0
    engine = _engine(latest_event_time=lambda: int((now_s + 600) * 1e9))
    t0 = int(now_s * 1e9) - 60 * SECOND
    a, b = {"service.name": "a"}, {"service.name": "b"}
    engine.ingest("traces", traces_request([span("GET /", t0 - 5 * SECOND, 5.0)], a))
    engine.ingest("traces", traces_request([span("GET /", t0, 5.0)], a))
    # A client whose clock is a day ahead: rejected, so event time does not jump a day.
    future = engine.ingest("traces", traces_request([span("GET /", t0 + 86_400 * SECOND, 5.0)], b))
    assert future.rejected == {"future_timestamp": 1} and future.accepted == 0
    # Everyone else's next spans still count in their windows (they are not "late").
    later = engine.ingest("traces", traces_request([span("GET /", t0 + 10 * SECOND, 5.0)], a))
    assert later.skipped == {} and later.accepted == 1
    calls = [(engine.series_key(slot).resource, value) for slot, value in zip(
        later.scores.slots.tolist(), later.scores.values.tolist(), strict=True)
        if engine.series_key(slot).metric.endswith("calls_total:rate")]
    assert calls == [((("service.name", "a"),), 0.1)]


def test_items_beyond_the_year_2116_are_rejected_on_every_path() -> None:
    engine = _engine()  # a backtest-like engine: no wall clock, only the fixed bound
    far = 2**62 + 1
    spans = engine.ingest("traces", traces_request([span("x", far, 1.0), span("y", SECOND, 1.0)]))
    assert spans.rejected == {"future_timestamp": 1} and spans.accepted == 1
    logs = engine.ingest("logs", logs_request([(far, 9), (2**64 - 1, 17), (SECOND, 9)]))
    assert logs.rejected == {"future_timestamp": 2} and logs.accepted == 1
    points = engine.ingest("metrics", metrics_request([gauge("g", [(SECOND, 1.0), (far, 2.0)])]))
    assert points.rejected == {"future_timestamp": 1} and points.accepted == 1


# Partial windows and silence: windows close per service, on its own event time.

CALLS = "traces_span_metrics_calls_total:rate"


def _spans(ops: dict[str, int], start_s: int, end_s: int) -> list[Span]:
    """``ops`` (name -> spans per second) spread evenly over ``[start_s, end_s)``."""
    return [span(name, start_s * SECOND + (2 * i + 1) * SECOND // (2 * rate), 1.0)
            for name, rate in ops.items() for i in range((end_s - start_s) * rate)]


def _batches(
    service: str, ops: dict[str, int], start_s: int, end_s: int, delay_s: float, every_s: int = 5,
) -> list[tuple[float, ExportTraceServiceRequest]]:
    """As a BatchSpanProcessor sends them: every ``every_s``, ``delay_s`` after each batch."""
    return [(b + every_s + delay_s,
             traces_request(_spans(ops, b, b + every_s), {"service.name": service}))
            for b in range(start_s, end_s, every_s)]


def _deliver(
    engine: Engine, *senders: list[tuple[float, ExportTraceServiceRequest]]
) -> tuple[dict[tuple[str, str, int], float], list[AnomalyEvent], dict[str, int]]:
    """Ingest every batch in delivery order; calls per (service, span name, window end)."""
    calls: dict[tuple[str, str, int], float] = {}
    events: list[AnomalyEvent] = []
    skipped: dict[str, int] = {}
    for _, request in sorted((b for batches in senders for b in batches), key=lambda b: b[0]):
        result = engine.ingest("traces", request)
        events += result.events
        for reason, count in result.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        for slot, ts, value in zip(result.scores.slots.tolist(),
                                   result.scores.ts_unix_nano.tolist(),
                                   result.scores.values.tolist(), strict=True):
            key = engine.series_key(slot)
            if key.metric == CALLS:
                where = (dict(key.resource)["service.name"], dict(key.attributes)["span.name"])
                calls[(*where, ts // SECOND)] = value
    return calls, events, skipped


def test_interleaved_late_batches_of_two_services_give_only_whole_windows() -> None:
    engine = _engine(span_outliers=False)
    # b's exporter delivers 13 s after a's: a's spans must not close b's windows.
    calls, _, skipped = _deliver(
        engine,
        _batches("a", {"GET /": 4}, 1000, 1300, delay_s=1.0),
        _batches("b", {"POST /": 2}, 1000, 1300, delay_s=13.0),
    )
    assert skipped == {}
    for service, rate in (("a", 4.0), ("b", 2.0)):
        scored = {end: value for (s, _, end), value in calls.items() if s == service}
        # Every window but the first (the services started in it) and the last (still open).
        assert sorted(scored) == list(range(1020, 1300, 10)), service
        assert set(scored.values()) == {rate}, f"{service}: partial windows scored: {scored}"


def test_a_client_that_stops_mid_window_scores_no_partial_window_and_opens_nothing() -> None:
    engine = _engine(span_outliers=False)
    calls, events, _ = _deliver(
        engine,
        _batches("a", {"GET /": 2}, 1000, 1435, delay_s=1.0),  # stops mid-window
        _batches("a", {"GET /": 2}, 1705, 2000, delay_s=1.0),  # resumes mid-window
        _batches("b", {"GET /": 3}, 1000, 2000, delay_s=2.0),
    )
    scored = {end: value for (s, _, end), value in calls.items() if s == "a"}
    assert set(scored.values()) == {2.0}, f"partial windows were scored: {scored}"
    # Neither the window it stopped in nor the quiet ones are scored, as zero or otherwise;
    # the window it resumed in is not either.
    assert not [end for end in scored if 1430 < end <= 1710]
    assert 1430 in scored and 1720 in scored
    assert [e for e in events if dict(e.key.resource)["service.name"] == "a"] == []


def test_a_straggler_before_a_services_first_window_does_not_make_that_window_whole() -> None:
    engine = _engine(span_outliers=False)
    first = traces_request([span("GET /", 1003 * SECOND, 1.0), span("GET /", 998 * SECOND, 1.0)])
    calls, _, _ = _deliver(engine, [(0.0, first)],
                           _batches("test", {"GET /": 1}, 1005, 1040, delay_s=0.0))
    assert calls == {("test", "GET /", 1020): 1.0, ("test", "GET /", 1030): 1.0}


def test_an_operation_that_stops_while_its_service_reports_opens_a_throughput_drop() -> None:
    engine = _engine(span_outliers=False)
    rng = np.random.default_rng(7)
    events: list[AnomalyEvent] = []
    for w in range(100, 220):
        # About 40 calls a window (a few percent of noise), then none from window 200 on.
        n = int(rng.integers(38, 43)) if w < 200 else 0
        spans = [span("GET /", w * 10 * SECOND + i * 10 * SECOND // (n + 1), 1.0)
                 for i in range(1, n + 1)] + _spans({"POST /": 2}, w * 10, w * 10 + 10)
        events += engine.ingest("traces", traces_request(spans)).events
    drops = [e for e in events if e.kind == "open" and e.key.metric == CALLS]
    assert [(dict(e.key.attributes)["span.name"], e.direction, e.value) for e in drops] == [
        ("GET /", "down", 0.0)]


def test_a_service_that_goes_silent_opens_once_and_closes_when_it_reports_again() -> None:
    clock = FakeClock(0.0)
    engine = Engine(EngineSettings(clock=clock, silence_after_s=60.0, span_outliers=False))
    checkout, payments = {"service.name": "checkout"}, {"service.name": "payments"}
    for i in range(4):
        engine.ingest("traces", traces_request([span("GET /", (1000 + i) * SECOND, 1.0)], checkout))
        engine.ingest("logs", logs_request([((1000 + i) * SECOND, 9)], payments))
        clock.advance(10.0)
    assert clock() == 40.0  # both last reported at 30 s
    clock.advance(25.0)
    engine.ingest("logs", logs_request([(1100 * SECOND, 9)], payments))  # payments still reports
    assert engine.check_silence(7) == []  # checkout quiet for 35 s: not yet 60 s
    clock.advance(40.0)
    opened = engine.check_silence(7)
    assert [(e.kind, e.key.metric, e.key.resource, e.ts_unix_nano, e.explanation)
            for e in opened] == [(
        "open", SILENCE_METRIC, (("service.name", "checkout"),), 7,
        "checkout stopped reporting (no data for 1m15s, usually every 10s)")]
    assert engine.stats().services_silent == 1
    clock.advance(30.0)
    engine.ingest("logs", logs_request([(1101 * SECOND, 9)], payments))
    assert engine.check_silence(8) == []  # one open per silence
    engine.ingest("traces", traces_request([span("GET /", 1200 * SECOND, 1.0)], checkout))
    closed = engine.check_silence(9)
    assert [(e.kind, e.explanation) for e in closed] == [
        ("close", "checkout reports again (after 1m45s without data)")]
    assert engine.check_silence(10) == [] and engine.stats().services_silent == 0


def test_silence_after_zero_never_reports_silence() -> None:
    clock = FakeClock(0.0)
    engine = Engine(EngineSettings(clock=clock, silence_after_s=0.0))
    for i in range(4):
        engine.ingest("logs", logs_request([((1000 + i) * SECOND, 9)]))
        clock.advance(10.0)
    clock.advance(86_400.0)
    assert engine.check_silence(0) == []


def _spanmetrics(service: str, ts: int, calls: float) -> ExportMetricsServiceRequest:
    """What a Collector's spanmetrics connector sends: its scope, ``calls`` per status code."""
    dims = {"span.name": "GET /", "span.kind": "SPAN_KIND_SERVER", "status.code": "STATUS_CODE_UNSET"}
    request = metrics_request([
        counter("traces.span.metrics.calls", [(ts, calls)], attributes=dims),
        histogram("traces.span.metrics.duration", [(ts, [5.0, 7.0])], [1.0, 10.0, 100.0],
                  attributes=dims)], {"service.name": service})
    request.resource_metrics[0].scope_metrics[0].scope.name = "spanmetricsconnector"
    return request


def test_spanmetrics_of_a_service_that_sends_spans_are_not_scored_twice() -> None:
    clock = FakeClock()
    engine = Engine(EngineSettings(clock=clock, traces_window_s=10, lateness_s=0))
    metrics: dict[str, list[str]] = {"checkout": [], "billing": []}
    for i in range(1, 40):
        ts = (100 + 10 * i) * SECOND
        engine.ingest("traces", traces_request([span("GET /", ts, 5.0)],
                                               {"service.name": "checkout"}))
        for service in metrics:
            result = engine.ingest("metrics", _spanmetrics(service, ts, 10.0 * i))
            assert result.accepted + result.rejected_total == 2, result
            metrics[service] += [engine.series_key(s).metric for s in result.scores.slots]
        clock.advance(10.0)
    # checkout's operations come from its spans; billing sends no spans, so its spanmetrics
    # are what measures it.
    assert metrics["checkout"] == []
    assert "traces_span_metrics_calls_total:rate" in metrics["billing"]
    # Once checkout's spans stop for longer than the silence horizon, its spanmetrics count.
    clock.advance(engine.settings.silence_after_s + 1)
    ts = 600 * SECOND
    result = engine.ingest("metrics", _spanmetrics("checkout", ts, 500.0))
    assert result.skipped.get("covered_by_spans", 0) == 0, result.skipped


def test_the_sidecars_own_events_sent_back_are_skipped_not_counted_as_service_logs() -> None:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope  # noqa: PLC0415
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs  # noqa: PLC0415

    from otel_anomaly.processors.settings import EVENTS_SCOPE_NAME  # noqa: PLC0415

    engine = _engine()
    info = 9
    engine.ingest("logs", logs_request([(95 * SECOND, info)]))
    request = logs_request([(100 * SECOND + i, info) for i in range(3)])
    # A Collector that sends every log pipeline here also sends our anomaly events back.
    request.resource_logs[0].scope_logs.append(ScopeLogs(
        scope=InstrumentationScope(name=EVENTS_SCOPE_NAME),
        log_records=[LogRecord(time_unix_nano=101 * SECOND, severity_number=13)] * 5))
    first = engine.ingest("logs", request)
    assert first.accepted == 8 and first.rejected == {}
    assert first.skipped == {"own_events": 5}
    result = engine.ingest("logs", logs_request([(110 * SECOND, info)]))
    rows = {engine.series_key(slot).metric + str(engine.series_key(slot).attributes): value
            for slot, value in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                                   strict=True)}
    assert rows == {"logs_records_total:rate(('severity', 'INFO'),)": 0.3,
                    "logs_error:ratio()": 0.0}


def test_a_severity_number_outside_1_to_24_leaves_the_text_to_decide() -> None:
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord  # noqa: PLC0415

    from otel_anomaly.processors.signals.logs import severity_name  # noqa: PLC0415

    def named(number: int, text: str = "") -> str:
        return severity_name(LogRecord(severity_number=number, severity_text=text))[0]  # type: ignore[arg-type]

    assert [named(-3, "ERROR"), named(99), named(99, "warning"), named(0, "ERROR")] == [
        "ERROR", "UNSPECIFIED", "WARN", "ERROR"]
    assert [named(17), named(24, "info"), named(1)] == ["ERROR", "FATAL", "TRACE"]
