"""Metrics to series: rates, resets, ordering, histogram quantiles, bad values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.histogram_quantiles import MAX_BUCKET_SPAN, merge_exponential
from otel_anomaly.processors.signals.otlp_resources import labels_of
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    counter,
    gauge,
    histogram,
    metrics_request,
)
from otel_anomaly.processors.types import IngestResult


def _engine() -> Engine:
    return Engine(EngineSettings(clock=FakeClock()))


def _series(result: IngestResult, engine: Engine) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for slot, value in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                           strict=True):
        out.setdefault(engine.series_key(slot).metric, []).append(value)
    return out


def test_gauge_points_are_scored_as_they_are() -> None:
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([
        gauge("system.cpu.utilization", [(1 * SECOND, 0.5), (2 * SECOND, 0.7)], unit="1")
    ]))
    assert result.accepted == 2 and result.rejected == {}
    assert _series(result, engine) == {"system_cpu_utilization_ratio": [0.5, 0.7]}
    # Both points were scored: the first one is not counted as skipped.
    assert result.skipped == {}


def test_cumulative_counter_becomes_rate_without_spike_at_reset() -> None:
    engine = _engine()
    points = [(10 * SECOND, 100.0), (20 * SECOND, 150.0), (30 * SECOND, 250.0),
              (40 * SECOND, 5.0),  # the process restarted: the counter went down
              (50 * SECOND, 55.0)]
    result = engine.ingest("metrics", metrics_request([counter("app.requests", points)]))
    assert result.accepted == 5
    assert _series(result, engine) == {"app_requests_total:rate": [5.0, 10.0, 5.0]}
    assert result.skipped == {"first_point": 1, "counter_reset": 1}


def test_start_time_change_starts_a_new_sequence() -> None:
    engine = _engine()
    first = counter("c", [(10 * SECOND, 100.0), (20 * SECOND, 200.0)], start=1)
    # Same value range, new start time: a restart the value alone would not reveal.
    second = counter("c", [(30 * SECOND, 500.0), (40 * SECOND, 600.0)], start=25 * SECOND)
    engine.ingest("metrics", metrics_request([first]))
    result = engine.ingest("metrics", metrics_request([second]))
    assert _series(result, engine) == {"c_total:rate": [10.0]}
    assert result.skipped == {"counter_reset": 1}


def test_delta_counter_rate_uses_its_own_interval() -> None:
    engine = _engine()
    metric = counter("d", [], cumulative=False)
    for start, end, value in [(0, 10, 50.0), (10, 20, 100.0)]:
        metric.sum.data_points.add(start_time_unix_nano=start * SECOND + 1,
                                   time_unix_nano=end * SECOND + 1, as_double=value)
    result = engine.ingest("metrics", metrics_request([metric]))
    assert _series(result, engine) == {"d_total:rate": [5.0, 10.0]}


def test_out_of_order_and_duplicate_points_are_refused_and_series_intact() -> None:
    engine = _engine()
    engine.ingest("metrics", metrics_request([gauge("g", [(10 * SECOND, 1.0), (20 * SECOND, 2.0)])]))
    result = engine.ingest("metrics", metrics_request([
        gauge("g", [(20 * SECOND, 9.0), (15 * SECOND, 9.0), (30 * SECOND, 3.0)])
    ]))
    assert result.rejected == {"out_of_order": 2}
    assert result.accepted == 1
    assert _series(result, engine) == {"g": [3.0]}
    assert "2 out_of_order" in result.error_message()


def test_counter_out_of_order_does_not_corrupt_rate() -> None:
    engine = _engine()
    engine.ingest("metrics", metrics_request([counter("c", [(10 * SECOND, 100.0),
                                                         (20 * SECOND, 200.0)])]))
    late = engine.ingest("metrics", metrics_request([counter("c", [(15 * SECOND, 150.0)])]))
    assert late.rejected == {"out_of_order": 1}
    result = engine.ingest("metrics", metrics_request([counter("c", [(30 * SECOND, 300.0)])]))
    assert _series(result, engine) == {"c_total:rate": [10.0]}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected_by_reason(value: float) -> None:
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([gauge("g", [(SECOND, value), (2 * SECOND, 1.0)])]))
    assert result.rejected == {"non_finite": 1}
    assert result.accepted == 1
    assert result.error_message() == "rejected: 1 non_finite"


def test_unknown_metric_type_is_rejected() -> None:
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([Metric(name="empty")]))
    assert result.rejected == {"unsupported_type": 1}


def test_empty_request_gives_empty_result() -> None:
    result = _engine().ingest("metrics", metrics_request([]))
    assert result.accepted == 0 and result.rejected == {} and len(result.scores) == 0


@pytest.mark.parametrize(
    ("sampler", "bounds"),
    [
        (lambda rng, n: rng.normal(300.0, 40.0, n), np.arange(100.0, 600.0, 10.0)),
        (lambda rng, n: rng.lognormal(np.log(100.0), 0.5, n), np.geomspace(5, 5000, 60)),
    ],
    ids=["normal", "lognormal"],
)
def test_histogram_quantiles_match_the_distribution(sampler, bounds) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    engine = _engine()
    batches = [sampler(rng, 20_000) for _ in range(3)]
    points = [((i + 1) * 10 * SECOND, b) for i, b in enumerate(batches)]
    result = engine.ingest("metrics", metrics_request([histogram("lat", points, bounds)]))
    series = _series(result, engine)
    # Cumulative: the first point is the baseline, two intervals follow.
    assert len(series["lat_milliseconds:p99"]) == 2
    truth = np.quantile(batches[2], [0.5, 0.95, 0.99])
    got = [series[f"lat_milliseconds:{q}"][-1] for q in ("p50", "p95", "p99")]
    widths = np.diff(bounds)
    for want, have in zip(truth, got, strict=True):
        bucket_width = widths[min(np.searchsorted(bounds, want), len(widths) - 1)]
        assert abs(have - want) <= bucket_width, f"quantile {have:.1f} vs true {want:.1f}"
    assert series["lat_milliseconds:rate"][-1] == pytest.approx(20_000 / 10)
    assert series["lat_milliseconds:mean"][-1] == pytest.approx(batches[2].mean())


def test_exponential_histogram_quantiles() -> None:
    rng = np.random.default_rng(1)
    samples = rng.lognormal(np.log(50.0), 0.3, 50_000)
    scale = 4
    base = 2 ** (2.0 ** -scale)
    idx = np.ceil(np.log(samples) / np.log(base)).astype(int) - 1
    offset = int(idx.min())
    counts = np.bincount(idx - offset)
    metric = Metric(name="lat", unit="ms")
    metric.exponential_histogram.aggregation_temporality = 1  # delta
    p = metric.exponential_histogram.data_points.add(
        start_time_unix_nano=SECOND, time_unix_nano=11 * SECOND, count=len(samples),
        sum=float(samples.sum()), scale=scale,
    )
    p.positive.offset = offset
    p.positive.bucket_counts.extend(int(c) for c in counts)
    engine = _engine()
    series = _series(engine.ingest("metrics", metrics_request([metric])), engine)
    truth = np.quantile(samples, 0.99)
    assert abs(series["lat_milliseconds:p99"][0] / truth - 1) < base - 1
    assert series["lat_milliseconds:rate"][0] == pytest.approx(5000.0)


def _exponential_point(metric: Metric, ts: int, count: int, scale: int, offset: int,
                       counts: list[int]) -> None:
    p = metric.exponential_histogram.data_points.add(
        start_time_unix_nano=SECOND, time_unix_nano=ts, count=count, sum=float(count),
        scale=scale)
    p.positive.offset = offset
    p.positive.bucket_counts.extend(counts)


@pytest.mark.parametrize("cumulative", [True, False])
def test_exponential_buckets_far_apart_are_worked_on_coarser_not_laid_out_densely(
        cumulative: bool) -> None:
    # Offsets 2**31 apart were subtracted (cumulative) or pooled (delta) as one dense run
    # of 2**31 buckets: 16 GiB, and the process was killed.
    metric = Metric(name="lat", unit="ms")
    metric.exponential_histogram.aggregation_temporality = 2 if cumulative else 1
    _exponential_point(metric, 10 * SECOND, 3, 3, -2**31, [1, 2])
    _exponential_point(metric, 20 * SECOND, 6, 3, 2**31 - 3, [1, 2])
    _exponential_point(metric, 30 * SECOND, 9, 3, 0, [1, 2])
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([metric]))
    assert result.rejected == {}
    if cumulative:  # buckets that moved away are no continuation of the point before
        assert result.skipped == {"first_point": 1, "counter_reset": 2}
    else:
        assert len(_series(result, engine)["lat_milliseconds:rate"]) == 3
    far = {"scale": 3, "zero": 0.0, "count": 6.0, "sum": None,
           "pos": (2**31 - 3, np.array([2.0, 4.0])), "neg": (0, np.zeros(0))}
    near = {**far, "count": 3.0, "pos": (-2**31, np.array([1.0, 2.0]))}
    merged = merge_exponential([near, far])
    assert len(merged["pos"][1]) <= MAX_BUCKET_SPAN
    assert merged["pos"][1].sum() == 9.0 and merged["scale"] < 3


def test_histogram_bucket_layout_change_is_a_reset() -> None:
    engine = _engine()
    engine.ingest("metrics", metrics_request([histogram("h", [(10 * SECOND, [1.0, 2.0])], [1.5])]))
    result = engine.ingest("metrics", metrics_request([
        histogram("h", [(20 * SECOND, [1.0, 2.0, 3.0])], [1.5, 2.5])
    ]))
    assert result.skipped == {"counter_reset": 1}
    assert len(result.scores) == 0


def _broken(point: Any, bounds: list[float] | None, counts: list[int] | None) -> None:
    if bounds is not None:
        point.ClearField("explicit_bounds")
        point.explicit_bounds.extend(bounds)
    if counts is not None:
        point.ClearField("bucket_counts")
        point.bucket_counts.extend(counts)


@pytest.mark.parametrize(("bounds", "counts"), [
    (None, [3, 4]),  # fewer counts than buckets
    ([10.0, 50.0, 20.0, 100.0], None),  # bounds not increasing
    ([10.0, 10.0, 50.0, 100.0], None),  # nor strictly
    ([10.0, float("nan"), 50.0, 100.0], None),
    ([10.0, 20.0, math.inf, math.inf], None),
    ([], None),  # counts but no bounds
    (None, []),  # bounds but no counts
], ids=["short counts", "decreasing", "repeated", "nan", "two inf", "no bounds", "no counts"])
def test_a_histogram_point_that_breaks_the_data_model_is_refused_alone(
        bounds: list[float] | None, counts: list[int] | None) -> None:
    # Kept, a point of another shape was pooled with its stream's earlier ones: the merge
    # raised, and every later request carrying the stream failed whole.
    rng = np.random.default_rng(2)
    good = histogram("lat", [((i + 1) * 10 * SECOND, rng.lognormal(3.0, 0.3, 40))
                             for i in range(12)], [10.0, 20.0, 50.0, 100.0])
    engine = _engine()
    scored: list[dict[str, list[float]]] = []
    for i, point in enumerate(good.histogram.data_points):
        metric = Metric(name="lat", unit="ms")
        metric.histogram.aggregation_temporality = good.histogram.aggregation_temporality
        metric.histogram.data_points.add().CopyFrom(point)
        if i in (6, 7, 8):
            _broken(metric.histogram.data_points[0], bounds, counts)
        result = engine.ingest("metrics", metrics_request([
            metric, gauge("queue", [((i + 1) * 10 * SECOND, float(i))])]))
        assert result.rejected == ({"invalid_histogram": 1} if i in (6, 7, 8) else {}), i
        assert "1 invalid_histogram" in result.error_message() or i not in (6, 7, 8)
        scored.append(_series(result, engine))
    assert all(s["queue"] == [float(i)] for i, s in enumerate(scored)), "the gauge was lost"
    # The stream goes on from its last valid point: the first one after is a full interval.
    assert "lat_milliseconds:rate" in scored[9], scored[9]


def test_an_infinite_last_bound_is_let_through() -> None:
    # Redundant (the last bucket is unbounded anyway) but not against the data model.
    metric = histogram("lat", [(10 * SECOND, [5.0, 7.0]), (20 * SECOND, [1.0, 3.0, 5.0])],
                       [2.0, 4.0, math.inf])
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([metric]))
    assert result.rejected == {}
    assert _series(result, engine)["lat_milliseconds:p50"] == [pytest.approx(3.0)]


def test_a_histogram_of_count_and_sum_only_gives_its_rate_and_mean() -> None:
    metric = histogram("lat", [(10 * SECOND, [5.0, 7.0]), (20 * SECOND, [1.0, 3.0, 5.0])], [])
    for point in metric.histogram.data_points:
        _broken(point, [], [])
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([metric]))
    assert result.rejected == {}
    series = _series(result, engine)
    assert series["lat_milliseconds:rate"] == [pytest.approx(0.3)]
    assert series["lat_milliseconds:mean"] == [pytest.approx(3.0)]


def test_series_identity_ignores_attribute_order() -> None:
    engine = _engine()
    a = gauge("g", [(SECOND, 1.0)], attributes={"a": "1", "b": "2"})
    b = gauge("g", [(2 * SECOND, 2.0)], attributes={"b": "2", "a": "1"})
    result = engine.ingest("metrics", metrics_request([a, b]))
    assert len(set(result.scores.slots.tolist())) == 1


def test_attribute_values_of_every_kind_become_label_text() -> None:
    attributes = [
        KeyValue(key="s", value=AnyValue(string_value="GET")),
        KeyValue(key="empty", value=AnyValue(string_value="")),
        KeyValue(key="i", value=AnyValue(int_value=200)),
        KeyValue(key="b", value=AnyValue(bool_value=False)),
        KeyValue(key="d", value=AnyValue(double_value=0.5)),
        KeyValue(key="a", value=AnyValue(array_value=ArrayValue(
            values=[AnyValue(string_value="x"), AnyValue(int_value=1)]))),
        KeyValue(key="s", value=AnyValue(string_value="repeated: the first one wins")),
    ]
    assert labels_of(attributes) == (
        ("a", '["x", "1"]'), ("b", "false"), ("d", "0.5"), ("empty", ""), ("i", "200"),
        ("s", "GET"))


def test_nested_attribute_values_are_one_json_document_as_long_as_their_request() -> None:
    inner = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="k", value=AnyValue(array_value=ArrayValue(
            values=[AnyValue(string_value='say "hi"'), AnyValue(bool_value=True)])))]))
    nested = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), inner]))
    assert labels_of([KeyValue(key="n", value=nested)]) == (
        ("n", '["1", {"k": ["say \\"hi\\"", "true"]}]'),)
    # Each level used to be a JSON string inside its parent, escaped again: the text
    # doubled per level (here 218 kB; 30 levels, a 180-byte request: 42 s and gigabytes).
    deep = AnyValue(string_value="x")
    for level in range(16):
        deep = (AnyValue(array_value=ArrayValue(values=[deep])) if level % 2 else
                AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=deep)])))
    [(_, text)] = labels_of([KeyValue(key="deep", value=deep)])
    assert text == '[{"k": ' * 8 + '"x"' + "}]" * 8


def test_equal_resources_of_later_requests_continue_the_same_series() -> None:
    engine = _engine()
    resource = {"service.name": "api", "host.name": "node-1", "k8s.pod.name": "api-1"}
    first = engine.ingest("metrics", metrics_request([gauge("g", [(SECOND, 1.0)])], resource))
    second = engine.ingest("metrics", metrics_request([gauge("g", [(2 * SECOND, 2.0)])],
                                                   dict(resource)))
    assert second.rejected == {}
    assert first.scores.slots.tolist() == second.scores.slots.tolist()
    assert engine.stats().series_active == 1


def test_a_final_collection_at_shutdown_is_a_partial_interval_not_a_drop() -> None:
    engine = _engine()
    points = [(t * SECOND, 10.0 * t) for t in range(1, 5)]  # 10/s, collected every 1 s
    # The SDK's shutdown collects 0.3 s after the last export; the traffic had stopped.
    points.append((4 * SECOND + 3 * SECOND // 10, 40.0))
    request = metrics_request([counter("http.server.requests", points)])
    result = engine.ingest("metrics", request)
    assert _series(result, engine) == {"http_server_requests_total:rate": [10.0, 10.0, 10.0]}
    assert result.skipped == {"first_point": 1, "partial_interval": 1}
    # Had the sender gone on, its next point is rated over both intervals together.
    later = engine.ingest("metrics", metrics_request([counter("http.server.requests",
                                                           [(5 * SECOND, 47.0)])]))
    assert _series(later, engine) == {"http_server_requests_total:rate": [7.0]}


def test_a_missed_export_does_not_slow_a_counters_rates_for_good() -> None:
    # Every 1 s, one export missed (a 2 s gap), then the schedule again: the point after
    # the gap is folded into the next (its interval looks short beside the gap), and every
    # later point is rated on its own, in one request (the Python walk) as in one request
    # per point (the compiled path, once the stream is known).
    times = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    points = [(t * SECOND, 10.0 * t) for t in times]
    one = _engine().ingest("metrics", metrics_request([counter("http.server.requests",
                                                                points)]))
    assert one.skipped == {"first_point": 1, "partial_interval": 1}, one.skipped
    engine = _engine()
    skipped: dict[str, int] = {}
    for point in points:
        result = engine.ingest("metrics", metrics_request([counter("http.server.requests",
                                                                    [point])]))
        for reason, n in result.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    assert skipped == {"first_point": 1, "partial_interval": 1}, skipped


def test_a_histogram_partial_interval_is_folded_into_the_next() -> None:
    engine = _engine()
    points: list[tuple[int, list[float]]] = [(t * SECOND, [50.0] * 10) for t in range(1, 4)]
    points.append((3 * SECOND + SECOND // 10, []))  # 0.1 s later, nothing new
    metric = histogram("http.server.duration", points, [10.0, 100.0], unit="ms")
    result = engine.ingest("metrics", metrics_request([metric]))
    rates = _series(result, engine)["http_server_duration_milliseconds:rate"]
    assert rates == [10.0, 10.0] and result.skipped["partial_interval"] == 1


def test_ingest_names_an_unknown_signal_and_a_request_of_another_signal() -> None:
    engine = _engine()
    with pytest.raises(ValueError, match="no adapter for signal 'profiles'; known: metrics"):
        engine.ingest("profiles", metrics_request([]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a traces request must be ExportTraceServiceRequest, "
                                         "not ExportMetricsServiceRequest"):
        engine.ingest("traces", metrics_request([]))


def test_an_exponential_point_of_more_buckets_than_the_span_is_kept_coarser() -> None:
    metric = Metric(name="lat", unit="ms")
    metric.exponential_histogram.aggregation_temporality = 1  # delta
    _exponential_point(metric, 10 * SECOND, 10_000, 3, 0, [1] * 10_000)
    _exponential_point(metric, 20 * SECOND, 10_000, 3, 0, [1] * 10_000)
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([metric]))
    series = _series(result, engine)
    # Uniform over buckets 0..9,999 at scale 3: the median is near bucket 5,000 (2**625),
    # one scale step coarser at most a factor 2**(1/4) off.
    assert series["lat_milliseconds:p50"][-1] == pytest.approx(2.0 ** (5000 / 8), rel=0.2)


def test_a_histogram_that_turns_exponential_keeps_its_quantiles() -> None:
    # An SDK's view switched to exponential buckets: the same name and attributes share
    # the quantile pools, and a merge of both kinds raised (the request failed whole).
    engine = _engine()
    explicit = histogram("lat", [(10 * SECOND, [5.0] * 10)], [1.0, 10.0], cumulative=False)
    engine.ingest("metrics", metrics_request([explicit]))  # too few calls for a p95 yet
    metric = Metric(name="lat", unit="ms")
    metric.exponential_histogram.aggregation_temporality = 1  # delta
    _exponential_point(metric, 20 * SECOND, 15, 0, 2, [15])  # (4, 8]
    result = engine.ingest("metrics", metrics_request([metric]))
    assert result.rejected == {}
    assert 4.0 < _series(result, engine)["lat_milliseconds:p95"][0] <= 8.0
