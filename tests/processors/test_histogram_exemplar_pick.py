"""``slowest_exemplar``: which of a histogram point's exemplars its latency events carry."""

from __future__ import annotations

from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar, HistogramDataPoint

from otel_anomaly.processors.signals.metrics import slowest_exemplar

TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))


def _point(*exemplars: Exemplar) -> HistogramDataPoint:
    return HistogramDataPoint(exemplars=list(exemplars))


def test_the_largest_traced_value_wins_as_double_or_as_int() -> None:
    point = _point(Exemplar(as_double=12.5, trace_id=TRACE, span_id=SPAN),
                   Exemplar(as_int=40, trace_id=TRACE[::-1], span_id=SPAN[::-1]),
                   Exemplar(as_double=39.5, trace_id=TRACE, span_id=SPAN))
    assert slowest_exemplar(point.exemplars) == (TRACE[::-1], SPAN[::-1])


def test_exemplars_that_name_no_span_or_no_value_are_skipped() -> None:
    point = _point(Exemplar(as_double=1e9),  # not recorded in a span: no ids
                   Exemplar(as_double=5e8, trace_id=bytes(16), span_id=SPAN),  # invalid trace
                   Exemplar(as_double=4e8, trace_id=TRACE[:8], span_id=SPAN),  # short id
                   Exemplar(as_double=3e8, trace_id=TRACE, span_id=bytes(8)),  # invalid span
                   Exemplar(trace_id=TRACE[::-1], span_id=SPAN),  # no value: 0
                   Exemplar(as_double=float("nan"), trace_id=TRACE[::-1], span_id=SPAN),
                   Exemplar(as_double=3.0, trace_id=TRACE, span_id=SPAN))
    assert slowest_exemplar(point.exemplars) == (TRACE, SPAN)
    nan_first = _point(Exemplar(as_double=float("nan"), trace_id=TRACE[::-1], span_id=SPAN),
                       Exemplar(as_double=-1.0, trace_id=TRACE, span_id=SPAN))
    assert slowest_exemplar(nan_first.exemplars) == (TRACE, SPAN)


def test_none_when_no_exemplar_names_a_span() -> None:
    assert slowest_exemplar(_point().exemplars) is None
    assert slowest_exemplar(_point(Exemplar(as_double=2.0)).exemplars) is None
