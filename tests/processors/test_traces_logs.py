"""Traces to RED features and span outliers; logs to rates and error ratios."""

from __future__ import annotations

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import SPAN_DURATION_METRIC, EngineSettings
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    gauge,
    logs_request,
    metrics_request,
    span,
    traces_request,
)
from otel_anomaly.processors.types import IngestResult


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
    spans = [span("GET /", (100 + i) * SECOND // 1, 10.0 * (i + 1), error=(i == 0))
             for i in range(4)]
    first = engine.ingest_traces(traces_request(spans))
    assert first.accepted == 4 and len(first.scores) == 0  # the window is still open
    # A span in a later window moves the watermark and closes the first window.
    later = engine.ingest_traces(traces_request([span("GET /", 125 * SECOND, 5.0)]))
    rows = _rows(later, engine)
    assert rows["traces_span_metrics_calls_total:rate"] == [0.4]
    assert rows["traces_span_metrics_error:ratio"] == [0.25]
    assert rows["traces_span_metrics_duration_milliseconds:p50"] == [25.0]
    key = engine.series_key(int(later.scores.slots[0]))
    assert dict(key.attributes) == {"span.name": "GET /", "span.kind": "SPAN_KIND_SERVER"}
    assert dict(key.resource) == {"service.name": "test"}


def test_quiet_operation_reports_zero_calls() -> None:
    engine = _engine(span_outliers=False)
    engine.ingest_traces(traces_request([span("a", 100 * SECOND, 1.0), span("b", 101 * SECOND, 1.0)]))
    engine.ingest_traces(traces_request([span("b", 112 * SECOND, 1.0)]))
    result = engine.ingest_traces(traces_request([span("b", 125 * SECOND, 1.0)]))
    calls = {dict(engine.series_key(s).attributes)["span.name"]: v
             for s, v in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                             strict=True)
             if engine.series_key(s).metric.startswith("traces_span_metrics_calls")}
    assert calls == {"a": 0.0, "b": 0.1}


def test_late_span_is_accepted_but_not_aggregated() -> None:
    engine = _engine(span_outliers=False)
    engine.ingest_traces(traces_request([span("a", 100 * SECOND, 1.0)]))
    engine.ingest_traces(traces_request([span("a", 130 * SECOND, 1.0)]))
    result = engine.ingest_traces(traces_request([span("a", 101 * SECOND, 1.0)]))
    assert result.accepted == 1 and result.skipped == {"late": 1}


def test_span_outlier_carries_trace_and_span_id() -> None:
    engine = _engine()
    rng = np.random.default_rng(0)
    t = 100 * SECOND
    normal = [span("GET /", t + i * SECOND // 10, float(rng.normal(20, 2))) for i in range(100)]
    engine.ingest_traces(traces_request(normal))
    slow = span("GET /", t + 11 * SECOND, 900.0, trace_id=b"\xab" * 16, span_id=b"\xcd" * 8)
    result = engine.ingest_traces(traces_request([slow]))
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
    result = engine.ingest_traces(traces_request([bad, span("y", 5 * SECOND, 1.0)]))
    assert result.rejected == {"missing_timestamp": 1} and result.accepted == 1


def test_logs_rate_by_severity_and_error_ratio() -> None:
    engine = _engine()
    info, error = 9, 17
    records = [(100 * SECOND + i, info) for i in range(6)] + [(101 * SECOND, error)] * 4
    engine.ingest_logs(logs_request(records))
    result = engine.ingest_logs(logs_request([(120 * SECOND, info)]))
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
    engine.ingest_traces(traces_request([span("GET /", t0, 5.0)], a))
    # A client whose clock is a day ahead: rejected, so event time does not jump a day.
    future = engine.ingest_traces(traces_request([span("GET /", t0 + 86_400 * SECOND, 5.0)], b))
    assert future.rejected == {"future_timestamp": 1} and future.accepted == 0
    # Everyone else's next spans still count in their windows (they are not "late").
    later = engine.ingest_traces(traces_request([span("GET /", t0 + 15 * SECOND, 5.0)], a))
    assert later.skipped == {} and later.accepted == 1
    calls = [(engine.series_key(slot).resource, value) for slot, value in zip(
        later.scores.slots.tolist(), later.scores.values.tolist(), strict=True)
        if engine.series_key(slot).metric.endswith("calls_total:rate")]
    assert calls == [((("service.name", "a"),), 0.1)]


def test_items_beyond_the_year_2116_are_rejected_on_every_path() -> None:
    engine = _engine()  # a backtest-like engine: no wall clock, only the fixed bound
    far = 2**62 + 1
    spans = engine.ingest_traces(traces_request([span("x", far, 1.0), span("y", SECOND, 1.0)]))
    assert spans.rejected == {"future_timestamp": 1} and spans.accepted == 1
    logs = engine.ingest_logs(logs_request([(far, 9), (2**64 - 1, 17), (SECOND, 9)]))
    assert logs.rejected == {"future_timestamp": 2} and logs.accepted == 1
    points = engine.ingest_metrics(metrics_request([gauge("g", [(SECOND, 1.0), (far, 2.0)])]))
    assert points.rejected == {"future_timestamp": 1} and points.accepted == 1
