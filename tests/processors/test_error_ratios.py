"""Error ratios are judged with their calls: built-in rule, explanations, trace traffic."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_anomaly.processors.alerting.scorer import Scorer
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.multivariate import MultivariateSettings
from otel_anomaly.processors.multivariate.features import vector_of
from otel_anomaly.processors.settings import DEFAULT_RULES, DetectorRule, EngineSettings
from otel_anomaly.processors.signals import logs as otlp_logs
from otel_anomaly.processors.signals import traces as red
from otel_anomaly.processors.signals.windows import WindowAggregator
from otel_anomaly.processors.testing import SECOND, FakeClock, logs_request, span, traces_request
from otel_anomaly.processors.types import (
    AnomalyEvent,
    IngestResult,
    Observations,
    SeriesBatch,
    SeriesKey,
)

TRACES_KEY = SeriesKey(red.ERROR_RATIO_METRIC, (("service.name", "cart"),),
                       (("span.kind", "SPAN_KIND_SERVER"), ("span.name", "GET /items")))
LOGS_KEY = SeriesKey(otlp_logs.ERROR_RATIO_METRIC, (("service.name", "cart"),), ())
WINDOW_S = 10.0
WINDOW = int(WINDOW_S) * SECOND


def _warm_scorer(key: SeriesKey, windows: int = 600) -> tuple[Scorer, int]:
    """A scorer whose one series has learned 0.5 % errors in windows of 200 calls."""
    scorer = Scorer(DEFAULT_RULES)
    scorer.assign(0, key)
    ts = np.arange(windows, dtype=np.int64) * WINDOW
    rng = np.random.default_rng(0)
    errors = rng.binomial(200, 0.005, windows)
    batch = SeriesBatch.of([0] * windows, errors / 200.0, ts, counts=[200.0] * windows)
    _, events = scorer.run(batch, lambda _: key, {})
    assert not [e for e in events if e.kind == "open"], "quiet warm-up opened an anomaly"
    return scorer, windows


def _feed(scorer: Scorer, key: SeriesKey, start: int, rows: list[tuple[int, int]],
          ) -> list[AnomalyEvent]:
    """Windows of ``(errors, calls)`` one at a time, as closed windows arrive."""
    events: list[AnomalyEvent] = []
    for i, (errors, calls) in enumerate(rows):
        batch = SeriesBatch.of([0], [errors / calls], [(start + i) * WINDOW], counts=[calls])
        events += scorer.run(batch, lambda _: key, {})[1]
    return events


def test_error_ratios_rule_routes_span_and_log_ratios_to_the_count_aware_detector() -> None:
    scorer = Scorer(DEFAULT_RULES)
    for metric in (red.ERROR_RATIO_METRIC, otlp_logs.ERROR_RATIO_METRIC):
        rule = scorer.rules[scorer.rule_for(metric)]
        assert (rule.name, rule.detector, rule.alert.direction) == (
            "error_ratios", "binomial_ratio", "up")
    assert scorer.rules[scorer.rule_for("http_server_requests:ratio")].detector == "ensemble"


def test_one_error_in_four_calls_never_opens_but_thirty_in_a_hundred_does() -> None:
    scorer, t = _warm_scorer(TRACES_KEY)
    # 1 error in 4 calls: alone, twice in a row, and among quiet windows, repeatedly.
    small = [(1, 4), (0, 4), (0, 200), (1, 4), (1, 4), (0, 4), (0, 50)] * 20
    events = _feed(scorer, TRACES_KEY, t, small)
    assert [e for e in events if e.kind == "open"] == []
    events = _feed(scorer, TRACES_KEY, t + len(small), [(30, 100)])
    assert [e.kind for e in events] == ["open"], events
    assert events[0].direction == "up"


def test_explanations_say_the_counts() -> None:
    scorer, t = _warm_scorer(TRACES_KEY)
    [opened] = _feed(scorer, TRACES_KEY, t, [(12, 40)])
    assert "12 errors in 40 calls (30%), usual 0.5" in opened.explanation, opened.explanation
    assert "band up to" in opened.explanation and "for 40 calls" in opened.explanation
    # It closes at the ninth quiet window in a row: ``ERROR_RATIO_ALERT.close_after`` (5)
    # windows of evidence, each worth this series' learned independence (0.57: the detector
    # also scores each window pooled with the recent ones, so its scores are correlated).
    quiet = [_feed(scorer, TRACES_KEY, t + 1 + i, [(1, 200)]) for i in range(12)]
    closing = [i for i, events in enumerate(quiet) for e in events if e.kind == "close"]
    assert closing == [8], closing
    closes = [e for e in quiet[8] if e.kind == "close"]
    assert "back to normal, 1 error in 200 calls (0.5%)" in closes[0].explanation

    scorer, t = _warm_scorer(LOGS_KEY)
    [opened] = _feed(scorer, LOGS_KEY, t, [(9, 30)])
    assert "9 error records in 30 records (30%)" in opened.explanation, opened.explanation


def test_traces_and_logs_extractors_send_the_calls_with_the_ratio() -> None:
    traces = red.TracesExtractor(WindowAggregator(WINDOW, 0), span_outliers=False)
    spans = [span("GET /", (100 + i) * SECOND, 1.0, error=i < 3) for i in range(8)]
    traces.extract(traces_request([span("GET /", 95 * SECOND, 1.0), *spans]), Observations(),
                   IngestResult(), 0.0, 2**62)
    out = Observations()
    later = [span("GET /", 112 * SECOND, 1.0), span("GET /", 121 * SECOND, 1.0)]
    traces.extract(traces_request(later), out, IngestResult(), 0.0, 2**62)
    rows = {(k.metric, t): (v, n) for k, t, v, n in zip(out.keys, out.ts, out.values,
                                                         out.count_array(), strict=True)}
    assert rows[(red.ERROR_RATIO_METRIC, 110 * SECOND)] == (3 / 8, 8)
    # A rate's sample size is the seconds it was counted over (judged as a count).
    assert rows[(red.CALLS_METRIC, 110 * SECOND)] == (8 / WINDOW_S, WINDOW_S)

    logs = otlp_logs.LogsExtractor(WindowAggregator(WINDOW, 0), WindowAggregator(WINDOW, 0))
    records = [((101 + 2 * i) * SECOND, 17 if i < 2 else 9) for i in range(5)]
    logs.extract(logs_request([(95 * SECOND, 9), *records]), Observations(), IngestResult(),
                 0.0, 2**62)
    out = Observations()
    logs.extract(logs_request([(112 * SECOND, 9), (121 * SECOND, 9)]), out, IngestResult(),
                 0.0, 2**62)
    i = out.keys.index(SeriesKey(otlp_logs.ERROR_RATIO_METRIC, (("service.name", "test"),), ()))
    assert (out.values[i], out.counts.get(i)) == (2 / 5, 5)
    rates = [j for j, key in enumerate(out.keys) if key.metric == otlp_logs.RATE_METRIC]
    assert rates and all(out.counts.get(j) == WINDOW_S for j in rates)


# --- Trace traffic through the engine, in event time ---------------------------------

def _quick_engine() -> Engine:
    """The built-in error-ratio rule; every other series on a cheap detector (speed)."""
    [errors] = [r for r in DEFAULT_RULES if r.name == "error_ratios"]
    rest = DetectorRule(name="rest", detector="ewma_zscore", alert=replace(
        errors.alert, direction="both", min_absolute_deviation=0.0))
    return Engine(EngineSettings(
        clock=FakeClock(), rules=(errors, rest), span_outliers=False, lateness_s=0,
        multivariate=MultivariateSettings(model="disabled")))


class _Traffic:
    """One service with ``ops`` operations at ``rate`` calls/s each, window by window."""

    def __init__(self, ops: int, rate: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.names = [f"op-{i}" for i in range(ops)]
        self.rate = rate
        self.resource = Resource(attributes=[KeyValue(
            key="service.name", value=AnyValue(string_value="shop"))])

    def request(self, window: int, error: dict[str, float]) -> ExportTraceServiceRequest:
        counts = self.rng.poisson(self.rate * 10, len(self.names))
        spans = []
        for name, n in zip(self.names, counts.tolist(), strict=True):
            ends = 1_000 * SECOND + window * WINDOW + np.sort(
                self.rng.integers(0, WINDOW, n))
            failed = self.rng.random(n) < error.get(name, 0.005)
            for end, bad in zip(ends.tolist(), failed.tolist(), strict=True):
                s = Span(name=name, kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=end - 10**6,
                         end_time_unix_nano=end)
                if bad:
                    s.status.code = 2  # type: ignore[assignment]
                spans.append(s)
        return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=self.resource, scope_spans=[ScopeSpans(spans=spans)])])


def _opens(events: list[AnomalyEvent]) -> list[AnomalyEvent]:
    return [e for e in events if e.kind == "open" and e.key.metric == red.ERROR_RATIO_METRIC]


def test_sustained_half_percent_errors_rarely_open_over_many_operation_days() -> None:
    # 72 operations of about 1.5 calls per window (most windows hold 0-4 calls, where one
    # error is a 25-100 % ratio) for 2 hours each, from their first call: 6 operation-days.
    ops, windows = 72, 720
    traffic, engine = _Traffic(ops, 0.15, seed=1), _quick_engine()
    opened: list[AnomalyEvent] = []
    ratios = 0
    for w in range(windows):
        result = engine.ingest("traces", traffic.request(w, {}))
        opened += _opens(result.events)
        ratios += sum(engine.series_key(slot).metric == red.ERROR_RATIO_METRIC
                      for slot in result.scores.slots.tolist())
    op_days = ops * windows * 10 / 86_400
    assert op_days >= 6.0 and ratios > 0.7 * ops * windows  # every op-window with calls
    assert len(opened) / op_days <= 0.1, (
        f"{len(opened)} false opens in {op_days:.1f} operation-days: "
        f"{[e.explanation for e in opened[:3]]}")


def test_an_error_burst_opens_within_two_minutes() -> None:
    # Operations at 2 and at 10 calls/s; each gets a burst of 20 % or 40 % errors.
    for rate, burst in ((2.0, 0.2), (10.0, 0.2), (2.0, 0.4)):
        traffic, engine = _Traffic(3, rate, seed=2), _quick_engine()
        onset = 360  # an hour of quiet traffic first
        opened_at = None
        for w in range(onset + 12):
            error = {"op-1": burst} if w >= onset else {}
            events = _opens(engine.ingest("traces", traffic.request(w, error)).events)
            early = [e for e in events if w < onset]
            assert not early, early[0].explanation
            if events and opened_at is None:
                assert dict(events[0].key.attributes)["span.name"] == "op-1"
                opened_at = w
        assert opened_at is not None, f"{burst:.0%} errors at {rate} calls/s: no open in 2 min"


def test_the_multivariate_error_feature_weighs_a_window_by_its_calls() -> None:
    op = (("span.name", "a"),)
    one_in_four = {(red.CALLS_METRIC, op): 0.4, (red.ERROR_RATIO_METRIC, op): 0.25}
    thirty_in_100 = {(red.CALLS_METRIC, op): 10.0, (red.ERROR_RATIO_METRIC, op): 0.3}
    small = vector_of(one_in_four, {(red.ERROR_RATIO_METRIC, op): 4.0})[1]
    large = vector_of(thirty_in_100, {(red.ERROR_RATIO_METRIC, op): 100.0})[1]
    assert small < 0.02
    assert large > 0.15
    # Without counts (older callers), the ratio is used as it is.
    assert vector_of(one_in_four)[1] == 0.25


def test_backtests_replay_the_calls_with_the_ratios() -> None:
    rng = np.random.default_rng(5)
    calls = np.r_[np.full(600, 200.0), 4.0, 100.0]
    ratios = np.r_[rng.binomial(200, 0.005, 600) / 200.0, 0.25, 0.3]
    ts = np.arange(len(calls), dtype=np.int64) * WINDOW
    engine = Engine(EngineSettings(clock=FakeClock()))
    [out] = backtest(engine, [RecordedSeries(TRACES_KEY, ts, ratios, calls)])
    assert out.score[-2] < 1.0 < out.score[-1]  # 1 in 4 is inside its band, 30 in 100 not
    assert out.upper[-2] > 0.25  # the band for 4 calls is wide,
    assert out.upper[-1] < 0.3  # for 100 calls narrow


def _slow_burst_opens(recent: float) -> int:
    """Of 40 operations at 5 calls per window, how many open within 2 minutes of a 20 %
    error burst (after an hour at 0.5 %)."""
    rules = tuple(replace(r, params=MappingProxyType({"recent": recent}))
                  if r.name == "error_ratios" else r for r in DEFAULT_RULES)
    scorer, ops = Scorer(rules), 40
    keys = [TRACES_KEY._replace(attributes=(("span.name", f"op-{i}"),)) for i in range(ops)]
    scorer.assign_many(np.arange(ops), keys)
    rng = np.random.default_rng(3)
    opened: set[int] = set()
    for w in range(372):
        calls = rng.poisson(5.0, ops).astype(np.float64)
        errors = rng.binomial(calls.astype(np.int64), 0.2 if w >= 360 else 0.005)
        rows = np.flatnonzero(calls > 0)
        batch = SeriesBatch(rows, np.full(len(rows), w * WINDOW), errors[rows] / calls[rows],
                            calls[rows])
        events = scorer.run(batch, lambda slot: keys[slot], {})[1]
        assert w >= 360 or not events, events[0].explanation
        opened |= {e.slot for e in events if e.kind == "open"}
    return len(opened)


def test_a_slow_burst_in_windows_of_few_calls_is_caught_by_pooling_recent_windows() -> None:
    # 1 error in 5 calls is not significant alone; a run of them is.
    alone, pooled = _slow_burst_opens(0.0), _slow_burst_opens(0.8)
    assert pooled >= 0.6 * 40, f"{pooled}/40 caught"
    assert pooled > 2 * alone, (pooled, alone)


def _burst_course(calls: float, burst: float, seed: int) -> tuple[int, int, float]:
    """40 operations at ``calls`` per window: an hour at 0.5 % errors, then ``burst`` for
    5 minutes (30 windows). Returns how many opened, how many of those closed while the
    burst went on, and the share of the burst flagged from each one's first open."""
    scorer, ops, onset, end = Scorer(DEFAULT_RULES), 40, 360, 390
    keys = [TRACES_KEY._replace(attributes=(("span.name", f"op-{i}"),)) for i in range(ops)]
    scorer.assign_many(np.arange(ops), keys)
    rng = np.random.default_rng(seed)
    first, closed_early = np.full(ops, -1), np.zeros(ops, np.bool_)
    is_open, flagged = np.zeros(ops, np.bool_), np.zeros(ops, np.int64)
    for w in range(end):
        n = rng.poisson(calls, ops).astype(np.float64)
        errors = rng.binomial(n.astype(np.int64), burst if w >= onset else 0.005)
        rows = np.flatnonzero(n > 0)
        batch = SeriesBatch(rows, np.full(len(rows), w * WINDOW), errors[rows] / n[rows],
                            n[rows])
        for event in scorer.run(batch, lambda slot: keys[slot], {})[1]:
            assert w >= onset, event.explanation
            is_open[event.slot] = event.kind != "close"
            first[event.slot] = w if first[event.slot] < 0 else first[event.slot]
            closed_early[event.slot] |= event.kind == "close"
        flagged += is_open
    opened = first >= 0
    share = flagged[opened].sum() / (end - first[opened]).sum()
    return int(opened.sum()), int(closed_early[opened].sum()), float(share)


def test_an_error_burst_in_windows_of_few_calls_stays_open_while_it_lasts() -> None:
    # A third of the windows of 5 calls at 20 % errors hold no error at all, so one window
    # back inside the band is no sign that the burst is over (closed on it, 40 of 40 did
    # so within the burst, and the cooldown then kept them closed).
    for calls, burst, seed in ((5.0, 0.4, 0), (20.0, 0.1, 1)):
        opened, closed, share = _burst_course(calls, burst, seed)
        assert opened >= 36, f"{burst:.0%} errors at {calls:g} calls a window: {opened}/40 opened"
        assert closed <= opened // 4, (
            f"{burst:.0%} errors at {calls:g} calls a window: {closed} of {opened} anomalies "
            f"closed while the burst went on ({share:.0%} of it flagged after the open)")
        assert share >= 0.9, f"{share:.0%} of the burst flagged after the open"
