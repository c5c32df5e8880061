"""Properties over generated OTLP metrics requests."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.metrics import count_points
from otel_anomaly.processors.signals.registry import ADAPTERS
from otel_anomaly.processors.testing import (
    FakeClock,
    kv,
    logs_request,
    metrics_request,
    traces_request,
)

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**40, 2**40))
timestamps = st.integers(min_value=0, max_value=2**62)
attr_maps = st.dictionaries(st.sampled_from(["a", "b", "c.d", "0x"]),
                            st.one_of(st.text(max_size=3), st.integers(-2**63, 2**63 - 1), st.booleans()),
                            max_size=3)


@st.composite
def metrics(draw: st.DrawFn) -> Metric:
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram",
                                 "summary", "none"]))
    metric = Metric(name=draw(st.sampled_from(["m", "m.x", "é"])), unit=draw(st.sampled_from(["", "ms", "1"])))
    if kind == "none":
        return metric
    data = getattr(metric, kind)
    if kind in ("sum", "histogram", "exponential_histogram"):
        data.aggregation_temporality = draw(st.integers(0, 2))
    if kind == "sum":
        data.is_monotonic = draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        p = data.data_points.add(time_unix_nano=draw(timestamps),
                                 start_time_unix_nano=draw(timestamps))
        p.attributes.extend(kv(draw(attr_maps)))
        v = draw(values)
        if kind in ("gauge", "sum"):
            if isinstance(v, int):
                p.as_int = v
            else:
                p.as_double = v
        elif kind == "histogram":
            n = draw(st.integers(0, 3))
            # Mostly well formed; else bounds out of order or NaN, and counts of any length
            # (``invalid_histogram``).
            bounds = draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n))
            well_formed = draw(st.integers(0, 3)) > 0
            p.explicit_bounds.extend(sorted(bounds) if well_formed else bounds + draw(
                st.lists(st.floats(allow_nan=True), max_size=1)))
            buckets = n + 1 if well_formed else draw(st.integers(0, n + 2))
            p.bucket_counts.extend(draw(st.lists(st.integers(0, 100), min_size=buckets,
                                                 max_size=buckets)))
            p.count = draw(st.integers(0, 400))
            if draw(st.booleans()):
                p.sum = float(draw(st.floats(allow_nan=True)))
        elif kind == "exponential_histogram":
            # The whole range OTLP allows: scale -10 has buckets 2**1024 wide, and offsets
            # reach the int32 limits, so bucket edges overflow a float.
            p.scale = draw(st.integers(-10, 20))
            p.positive.offset = draw(st.one_of(st.integers(-50, 50),
                                               st.integers(-2**31, 2**31 - 1)))
            p.positive.bucket_counts.extend(draw(st.lists(st.integers(0, 50), max_size=5)))
            p.negative.offset = draw(st.integers(-2**31, 2**31 - 1))
            p.negative.bucket_counts.extend(draw(st.lists(st.integers(0, 50), max_size=3)))
            p.zero_count = draw(st.integers(0, 10))
            p.count = draw(st.integers(0, 400))
        else:
            q = p.quantile_values.add(quantile=0.5, value=float(draw(st.floats(allow_nan=True))))
            del q
    return metric


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(metrics(), max_size=4), min_size=1, max_size=3))
def test_parsing_never_raises_and_every_point_is_accounted(requests: list[list[Metric]]) -> None:
    engine = Engine(EngineSettings(clock=FakeClock()))
    for batch in requests:
        request = metrics_request(batch)
        # What the receivers count as received is the adapter's count.
        received = ADAPTERS["metrics"].count(request)
        assert received == sum(count_points(m) for m in batch)
        result = engine.ingest("metrics", request)
        assert result.accepted + result.rejected_total == received, (result, received)
        assert len(result.scores) >= 0


@settings(max_examples=100, deadline=None)
@given(attr_maps, st.randoms())
def test_series_key_is_invariant_under_attribute_order(attrs: dict[str, object], rnd) -> None:  # type: ignore[no-untyped-def]
    items = list(attrs.items())
    shuffled = items[:]
    rnd.shuffle(shuffled)
    engine = Engine(EngineSettings(clock=FakeClock()))
    first = Metric(name="g")
    first.gauge.data_points.add(time_unix_nano=1, as_double=1.0).attributes.extend(kv(dict(items)))
    second = Metric(name="g")
    second.gauge.data_points.add(time_unix_nano=2, as_double=1.0).attributes.extend(
        kv(dict(shuffled))
    )
    result = engine.ingest("metrics", metrics_request([first, second]))
    assert len(set(result.scores.slots.tolist())) == 1


def test_request_of_random_garbage_structure_is_handled() -> None:
    engine = Engine(EngineSettings(clock=FakeClock()))
    result = engine.ingest("metrics", ExportMetricsServiceRequest())
    assert result.accepted == 0


any_times = st.one_of(st.integers(0, 10**12), st.integers(0, 2**64 - 1))


@st.composite
def spans(draw: st.DrawFn) -> Span:
    span = Span(name=draw(st.sampled_from(["GET /", "", "é"])), kind=draw(st.integers(0, 5)),
                trace_id=draw(st.binary(max_size=16)), span_id=draw(st.binary(max_size=8)),
                start_time_unix_nano=draw(any_times), end_time_unix_nano=draw(any_times))
    span.status.code = draw(st.integers(0, 2))  # type: ignore[assignment]
    span.attributes.extend(kv(draw(attr_maps)))
    return span


@st.composite
def log_records(draw: st.DrawFn) -> LogRecord:
    return LogRecord(time_unix_nano=draw(any_times), observed_time_unix_nano=draw(any_times),
                     severity_number=draw(st.integers(0, 24)),  # type: ignore[arg-type]
                     severity_text=draw(st.sampled_from(["", "ERROR", "x"])))


resources = st.fixed_dictionaries(
    {"service.name": st.sampled_from(["a", "b"])},
    optional={"service.version": st.sampled_from(["1", "2"]),
              "service.namespace": st.text(max_size=2)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), resources, st.lists(spans(), max_size=4),
                          st.lists(log_records(), max_size=4)), min_size=1, max_size=4),
       st.sampled_from([None, 2**40]))
def test_traces_and_logs_never_raise_and_every_item_is_accounted(
    requests: list[tuple[bool, dict[str, str], list[Span], list[LogRecord]]],
    latest: int | None,
) -> None:
    engine = Engine(EngineSettings(clock=FakeClock(), latest_event_time=(
        None if latest is None else lambda: latest)))
    for is_traces, resource, span_list, records in requests:
        if is_traces:
            signal, request = "traces", traces_request(span_list, resource)
            items = len(span_list)
        else:
            signal, request = "logs", logs_request([], resource)
            request.resource_logs[0].scope_logs[0].log_records.extend(records)
            items = len(records)
        received = ADAPTERS[signal].count(request)
        assert received == items
        result = engine.ingest(signal, request)
        assert result.accepted + result.rejected_total == received, (result, received)


def _explicit_buckets(draw: st.DrawFn, p: Any) -> None:
    """Bounds and counts of any shape: out of order, NaN, infinite, counts of any length."""
    n = draw(st.integers(0, 3))
    p.explicit_bounds.extend(draw(st.lists(
        st.sampled_from([1.0, 2.0, 5.0, float("nan"), float("inf")]), min_size=n, max_size=n)))
    buckets = draw(st.integers(0, n + 2))
    p.bucket_counts.extend(draw(st.lists(st.integers(0, 100), min_size=buckets,
                                         max_size=buckets)))


def _exponential_buckets(draw: st.DrawFn, p: Any) -> None:
    """Scales a little past the range OTLP allows, offsets to the int32 limits."""
    p.scale = draw(st.integers(-12, 22))
    p.zero_count = draw(st.integers(0, 3))
    for side in (p.positive, p.negative):
        side.offset = draw(st.one_of(st.integers(-5, 5), st.integers(-2**31, 2**31 - 1)))
        side.bucket_counts.extend(draw(st.lists(st.integers(0, 5), max_size=4)))


@st.composite
def histogram_streams(draw: st.DrawFn, kind: str) -> list[Metric]:
    """Points of one histogram stream (``kind``: the Metric field) in time order."""
    temporality = draw(st.integers(1, 2))
    fill = _explicit_buckets if kind == "histogram" else _exponential_buckets
    out = []
    for i in range(draw(st.integers(2, 8))):
        metric = Metric(name="lat", unit="ms")
        data = getattr(metric, kind)
        data.aggregation_temporality = temporality
        p = data.data_points.add(start_time_unix_nano=1, time_unix_nano=(i + 1) * 10**10)
        fill(draw, p)
        p.count = (i + 1) * 3  # few calls a point: quantiles pool several points
        out.append(metric)
    return out


def _point_time(metric: Metric) -> int:
    data = metric.histogram if metric.HasField("histogram") else metric.exponential_histogram
    return int(data.data_points[0].time_unix_nano)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(histogram_streams("histogram"), histogram_streams("exponential_histogram"),
                 st.builds(lambda a, b: sorted(a + b, key=_point_time),
                           histogram_streams("histogram"),
                           histogram_streams("exponential_histogram"))))
def test_a_histogram_stream_of_any_bucket_layouts_never_raises(stream: list[Metric]) -> None:
    # Points of one stream are subtracted and pooled for quantiles: an explicit point whose
    # shape disagreed with the points before it failed the merge (and with it every request
    # carrying the stream); exponential points with buckets 2**31 apart were laid out as one
    # dense run of them (gigabytes); and a name that turned exponential pooled both kinds.
    engine = Engine(EngineSettings(clock=FakeClock()))
    for metric in stream:
        result = engine.ingest("metrics", metrics_request([metric]))
        assert result.accepted + result.rejected_total == 1, result
