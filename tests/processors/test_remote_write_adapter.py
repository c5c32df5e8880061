"""The Prometheus remote-write adapter: identity, counters, and every sample accounted for."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.registry import ADAPTERS
from otel_anomaly.processors.signals.remote_write_proto import COUNTER, WriteRequest
from otel_anomaly.processors.testing import FakeClock

T0 = 1_700_000_000_000  # ms
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]


def write_request(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> WriteRequest:
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, value in labels.items():
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return request


def _metrics(engine: Engine, request: WriteRequest) -> dict[str, list[float]]:
    result = engine.ingest("prometheus", request)
    out: dict[str, list[float]] = {}
    for slot, value in zip(result.scores.slots.tolist(), result.scores.values.tolist(),
                           strict=True):
        out.setdefault(engine.series_key(slot).metric, []).append(value)
    return out


def test_job_and_instance_become_the_resource_and_counters_become_rates() -> None:
    engine = Engine(EngineSettings(clock=FakeClock()))
    target = {"job": "shop/cart", "instance": "10.0.0.1:8080"}
    request = write_request([
        ({"__name__": "queue_depth", **target}, [(T0 + i * 1000, 5.0) for i in range(3)]),
        ({"__name__": "requests_total", **target},
         [(T0 + i * 1000, 10.0 * i) for i in range(3)] + [(T0 + 3000, 1.0)]),  # then a reset
    ])
    assert _metrics(engine, request) == {"queue_depth": [5.0] * 3,
                                         "requests_total:rate": [10.0, 10.0]}
    slots = {engine.series_key(s).metric: s for s in range(2)}
    key = engine.series_key(slots["queue_depth"])
    assert key.resource == (("service.instance.id", "10.0.0.1:8080"), ("service.name", "cart"),
                            ("service.namespace", "shop"))
    labels = dict(engine.series_labels(slots["queue_depth"]))
    assert (labels["job"], labels["instance"]) == ("shop/cart", "10.0.0.1:8080")


def test_metadata_names_counters_without_the_total_suffix() -> None:
    engine = Engine(EngineSettings(clock=FakeClock()))
    meta = WriteRequest()
    meta.metadata.add(type=COUNTER, metric_family_name="bytes_sent")
    engine.ingest("prometheus", meta)
    request = write_request([({"__name__": "bytes_sent", "job": "api"},
                              [(T0 + i * 1000, 100.0 * i) for i in range(3)])])
    assert _metrics(engine, request) == {"bytes_sent:rate": [100.0, 100.0]}


def test_stale_markers_buckets_and_unnamed_series_are_counted_not_scored() -> None:
    engine = Engine(EngineSettings(clock=FakeClock()))
    request = write_request([
        ({"__name__": "up", "job": "api"}, [(T0, 1.0), (T0 + 1000, STALE)]),
        ({"__name__": "latency_bucket", "le": "0.5", "job": "api"}, [(T0, 3.0)]),
        ({"job": "api"}, [(T0, 1.0)]),
        ({"__name__": "temp", "job": "api"}, [(T0, float("nan")), (0, 1.0)]),
    ])
    request.timeseries[0].histograms.append(b"")
    result = engine.ingest("prometheus", request)
    assert result.accepted == 3
    assert result.skipped == {"stale_marker": 1, "histogram_bucket": 1}
    assert result.rejected == {"unsupported_type": 1, "missing_metric_name": 1,
                               "non_finite": 1, "missing_timestamp": 1}


names = st.sampled_from(["up", "x_total", "h_bucket", "h_count", ""])
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(STALE))
samples = st.lists(st.tuples(st.integers(-5, 2**50), values), max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(names, st.sampled_from(["", "api", "ns/api"]), samples,
                                   st.integers(0, 2)), max_size=4), min_size=1, max_size=3))
def test_every_sample_is_accepted_or_rejected(
    requests: list[list[tuple[str, str, list[tuple[int, float]], int]]],
) -> None:
    engine = Engine(EngineSettings(clock=FakeClock()))
    for series in requests:
        request = write_request([({"__name__": n, "job": j} if n else {"job": j}, s)
                                 for n, j, s, _ in series])
        for ts, (_, _, _, native) in zip(request.timeseries, series, strict=True):
            ts.histograms.extend([b""] * native)
        received = ADAPTERS["prometheus"].count(request)
        result = engine.ingest("prometheus", request)
        assert result.accepted + result.rejected_total == received, (result, received)
