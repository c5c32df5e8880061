"""The wire scan of metrics requests reads what the protobuf (upb) decoder reads."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.metrics_requests import mixed_round, sdk_requests
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint

from otel_anomaly.processors.signals import metrics_wire as w
from otel_anomaly.processors.signals.metrics import MetricsExtractor
from otel_anomaly.processors.signals.metrics_wire_count import count_points
from otel_anomaly.processors.testing import SECOND, counter, gauge, histogram, metrics_request

Tables = tuple[int, NDArray[np.int64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]


def scan(data: bytes) -> Tables:
    """(status, points, values, metrics, groups), each table cut to the rows written."""
    n_points, n_metrics, n_groups = w.table_sizes(len(data))
    points = np.full((n_points, w.POINT_COLUMNS), -7, np.int64)
    values = np.full(n_points, -7.0)
    metrics = np.full((n_metrics, w.METRIC_COLUMNS), -7, np.int64)
    groups = np.full((n_groups, w.GROUP_COLUMNS), -7, np.int64)
    status, p, m, g = w.scan(np.frombuffer(data, np.uint8), points, values, metrics, groups,
                             *w.scratch())
    return status, points[:p], values[:p], metrics[:m], groups[:g]


def assert_matches_upb(request: ExportMetricsServiceRequest) -> None:
    data = request.SerializeToString()
    status, points, values, metrics, groups = scan(data)
    assert status == w.OK
    parsed = [(g, s, i, metric) for g, rm in enumerate(request.resource_metrics)
              for s, sm in enumerate(rm.scope_metrics) for i, metric in enumerate(sm.metrics)]
    assert len(metrics) == len(parsed) and len(groups) == len(request.resource_metrics)
    kinds = {"gauge": w.GAUGE, "sum": w.SUM, "histogram": w.HISTOGRAM,
             "exponential_histogram": w.EXPONENTIAL_HISTOGRAM, "summary": w.SUMMARY, None: 0}
    for m, (g, s, i, metric) in enumerate(parsed):
        row = metrics[m]
        assert (row[w.M_GROUP], row[w.M_SCOPE], row[w.M_INDEX], row[w.M_OK]) == (g, s, i, 1)
        assert row[w.M_KIND] == kinds[metric.WhichOneof("data")]
        assert data[row[w.M_NAME_LO]:row[w.M_NAME_HI]].decode() == metric.name
        assert data[row[w.M_UNIT_LO]:row[w.M_UNIT_HI]].decode() == metric.unit
        number = metric.gauge if metric.HasField("gauge") else metric.sum
        if row[w.M_KIND] == w.SUM:
            assert row[w.M_TEMPORALITY] == metric.sum.aggregation_temporality
            assert row[w.M_MONOTONIC] == metric.sum.is_monotonic
        if row[w.M_KIND] not in (w.GAUGE, w.SUM):
            assert row[w.M_ROWS] == 0
            continue
        assert row[w.M_ROWS] == len(number.data_points)
        for k, p in enumerate(number.data_points):
            r = row[w.M_FIRST_ROW] + k
            assert (points[r, w.P_METRIC], points[r, w.P_INDEX]) == (m, k)
            assert (points[r, w.P_START], points[r, w.P_TIME], points[r, w.P_FLAGS]) == (
                p.start_time_unix_nano, min(p.time_unix_nano, 2**63 - 1), p.flags)
            expected = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            np.testing.assert_equal(values[r], expected)
            lo, hi = points[r, w.P_ATTR_LO], points[r, w.P_ATTR_HI]
            if p.attributes:
                span = data[lo:hi]
                assert span.startswith(p.attributes[0].SerializeToString())
                assert span.endswith(p.attributes[-1].SerializeToString())
            else:
                assert (lo, hi) == (-1, -1)


@pytest.mark.parametrize("r", [0, 1, 31, 50])
def test_mixed_requests_read_as_upb_reads_them(r: int) -> None:
    assert_matches_upb(mixed_round(r, reverse=r % 2 == 1))


def test_sdk_requests_read_as_upb_reads_them() -> None:
    for request in sdk_requests(3):
        assert_matches_upb(request)


def test_large_and_odd_values() -> None:
    metric = gauge("big", [(2**64 - 1, -0.0), (1, 1e308), (2**40, float("-inf"))],
                   attributes={"k" * 300: "v" * 200})  # lengths over one varint byte
    odd = Metric(name="ints")
    odd.gauge.data_points.add(time_unix_nano=5, as_int=-(2**63))
    odd.gauge.data_points.add(time_unix_nano=6, as_int=2**63 - 1, flags=2**32 - 1)
    odd.gauge.data_points.add(time_unix_nano=7)  # no value: 0, as the walk reads it
    assert_matches_upb(metrics_request([metric, odd, counter("c", [(SECOND, 1.0)]),
                                        histogram("h", [(SECOND, [1.0])], [1.0])]))


def _hashes(request: ExportMetricsServiceRequest) -> list[tuple[int, int]]:
    _, points, _, _, _ = scan(request.SerializeToString())
    return [(int(a), int(b)) for a, b in points[:, [w.P_HASH1, w.P_HASH2]]]


def test_attribute_hash_follows_the_bytes() -> None:
    same = _hashes(metrics_request([gauge("a", [(1, 1.0)], attributes={"x": "1", "y": "2"}),
                                    gauge("b", [(1, 1.0)], attributes={"x": "1", "y": "2"})]))
    assert same[0] == same[1]
    differ = _hashes(metrics_request([
        gauge("a", [(1, 1.0)], attributes={"x": "1", "y": "2"}),
        gauge("a", [(1, 1.0)], attributes={"y": "2", "x": "1"}),  # another byte order
        gauge("a", [(1, 1.0)], attributes={"x": "12"}),
        gauge("a", [(1, 1.0)], attributes={"x1": "2"}),
        gauge("a", [(1, 1.0)], attributes={}),
    ]))
    assert len(set(differ)) == len(differ)


def test_metric_identity_hash_covers_name_unit_and_kind() -> None:
    request = metrics_request([gauge("a", [(1, 1.0)]), gauge("a", [(1, 1.0)], unit="s"),
                               gauge("b", [(1, 1.0)]), counter("a", [(1, 1.0)]),
                               gauge("a", [(2, 3.0)])])
    _, _, _, metrics, _ = scan(request.SerializeToString())
    ids = [(int(a), int(b)) for a, b in metrics[:, [w.M_HASH1, w.M_HASH2]]]
    assert ids[0] == ids[4] and len(set(ids)) == 4


def _metric_bytes_with(extra: bytes) -> bytes:
    """A request of one gauge metric with ``extra`` appended to the Metric's bytes."""
    point = NumberDataPoint(time_unix_nano=1, as_double=1.0)
    body = Metric(name="m", gauge=Gauge(data_points=[point])).SerializeToString() + extra
    metric = b"\x12" + bytes([len(body)]) + body  # ScopeMetrics.metrics
    scope = b"\x12" + bytes([len(metric)]) + metric  # ResourceMetrics.scope_metrics
    return b"\x0a" + bytes([len(scope)]) + scope  # ExportMetricsServiceRequest.resource_metrics


def test_what_parsers_merge_is_flagged_not_guessed() -> None:
    second = Gauge(data_points=[NumberDataPoint(time_unix_nano=2, as_double=2.0)])
    gauge_again = second.SerializeToString()
    data = _metric_bytes_with(b"\x2a" + bytes([len(gauge_again)]) + gauge_again)
    parsed = ExportMetricsServiceRequest.FromString(data)
    assert len(parsed.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points) == 2
    status, _, _, metrics, _ = scan(data)
    assert status == w.OK and metrics[0, w.M_OK] == 0


def test_unknown_fields_are_skipped() -> None:
    point = NumberDataPoint(time_unix_nano=9, as_double=4.0,
                            attributes=[KeyValue(key="k", value=AnyValue(string_value="v"))])
    # Unknown fields of every wire type inside the point: varint, fixed64, bytes, fixed32.
    extra = b"\xf8\x01\x05" + b"\xf9\x01" + bytes(8) + b"\xfa\x01\x02ab" + b"\xfd\x01" + bytes(4)
    body = point.SerializeToString() + extra
    gauge_bytes = b"\x0a" + bytes([len(body)]) + body
    data = _metric_bytes_with(b"\x2a" + bytes([len(gauge_bytes)]) + gauge_bytes)
    parsed = ExportMetricsServiceRequest.FromString(data)
    status, points, values, metrics, _ = scan(data)
    assert status == w.OK and metrics[0, w.M_OK] == 0  # two gauge fields: flagged
    assert_matches_upb(metrics_request([gauge("m", [(9, 4.0)], attributes={"k": "v"})]))
    got = parsed.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    assert [p.time_unix_nano for p in got] == points[:, w.P_TIME].tolist()
    assert [p.as_double for p in got] == values.tolist()


def test_every_truncation_is_reported_never_raised() -> None:
    data = mixed_round(3).SerializeToString()
    for end in range(len(data)):
        status, *_ = scan(data[:end])
        try:
            ExportMetricsServiceRequest.FromString(data[:end])
        except Exception:  # noqa: BLE001 - any decode error: the scan must not say OK
            assert status != w.OK


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_and_agree_with_upb_when_both_accept(data: bytes) -> None:
    status, _, _, _, groups = scan(data)
    try:
        parsed = ExportMetricsServiceRequest.FromString(data)
    except Exception:  # noqa: BLE001 - the decoder refused it: the receiver answers that
        return
    if status == w.OK:
        assert len(groups) == len(parsed.resource_metrics)


def test_count_from_bytes_is_the_adapters_count() -> None:
    no_data = ExportMetricsServiceRequest()
    no_data.resource_metrics.add().scope_metrics.add().metrics.add(name="no data")
    requests = [mixed_round(r) for r in (0, 1, 31)] + list(sdk_requests(2)) + [no_data]
    for request in requests:
        assert count_points(request.SerializeToString()) == MetricsExtractor.count(request)


def test_count_follows_merged_and_replaced_oneof_members() -> None:
    second = Gauge(data_points=[NumberDataPoint(time_unix_nano=2)] * 2).SerializeToString()
    merged = _metric_bytes_with(b"\x2a" + bytes([len(second)]) + second)  # gauge again
    summary = b"\x0a\x00"  # Summary with one empty data point
    replaced = _metric_bytes_with(b"\x5a" + bytes([len(summary)]) + summary)
    for data in (merged, replaced):
        parsed = ExportMetricsServiceRequest.FromString(data)
        assert count_points(data) == MetricsExtractor.count(parsed)
    assert (count_points(merged), count_points(replaced)) == (3, 1)


def test_count_of_truncated_bytes_is_none_or_right() -> None:
    data = mixed_round(5).SerializeToString()
    for end in range(len(data)):
        count = count_points(data[:end])
        try:
            parsed = ExportMetricsServiceRequest.FromString(data[:end])
        except Exception:  # noqa: BLE001 - undecodable: the receiver refuses it before counting
            continue
        assert count is None or count == MetricsExtractor.count(parsed)
