"""OTLP metrics to scored points: gauges as they are, sums as rates, histograms as features."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    Metric,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_anomaly.processors.series.prometheus_names import prometheus_metric_name
from otel_anomaly.processors.signals.adapter import AdapterContext, Signal
from otel_anomaly.processors.signals.cumulative_streams import (
    FIRST,
    OUT_OF_ORDER,
    PARTIAL,
    RESET,
    SourceTable,
    per_second,
    seconds,
)
from otel_anomaly.processors.signals.histogram_quantiles import (
    MAX_BUCKET_SPAN,
    downscale,
    interned_bounds,
    pooled_quantiles,
    same_bounds,
    span_steps,
    subtract_buckets,
)
from otel_anomaly.processors.signals.otlp_resources import (
    labels_of,
    note_version,
    resource_groups,
    service_labels,
    time_problem,
)
from otel_anomaly.processors.signals.quantile_pools import MAX_SPAN_S, QuantilePools
from otel_anomaly.processors.signals.span_coverage import SPANMETRICS_SCOPE, SpanCoverage
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_NO_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
HISTOGRAM_QUANTILES = np.array([0.5, 0.95, 0.99])
_QUANTILE_FEATURES = ("p50", "p95", "p99")
_CANONICAL_RESOURCES = 4096


def count_points(metric: Metric) -> int:
    """Data points in a metric.

    A metric of a type this build does not know (no data field it can read) counts as one
    item, rejected as ``unsupported_type``: its points cannot be counted, and the sender
    must hear that they were not used.
    """
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 1


def number_stream(metric: Metric) -> tuple[str, str]:
    """Stream tag and scored name of a gauge's or a sum's points.

    ``gauge``; ``updown`` (an up-down counter's cumulative value is a level, like a gauge);
    ``sum`` (a counter, scored as its rate). The Python walk and the compiled path
    (``signals.wire_path``) both name streams by it.
    """
    if metric.WhichOneof("data") == "gauge":
        return "gauge", prometheus_metric_name(metric.name, metric.unit, monotonic_sum=False,
                                               gauge=True)
    data = metric.sum
    if not data.is_monotonic and data.aggregation_temporality == CUMULATIVE:
        return "updown", prometheus_metric_name(metric.name, metric.unit, monotonic_sum=False,
                                                gauge=True)
    return "sum", prometheus_metric_name(metric.name, metric.unit,
                                         monotonic_sum=data.is_monotonic, gauge=False) + ":rate"


class MetricsExtractor:
    """The metrics adapter: walks requests; keeps the previous point of each cumulative stream."""

    signal: ClassVar[Signal] = "metrics"
    request_type: ClassVar[type[ExportMetricsServiceRequest]] = ExportMetricsServiceRequest

    def __init__(self, sources: SourceTable, span_coverage: SpanCoverage | None = None) -> None:
        self.sources = sources
        self.span_coverage = span_coverage
        self._resources: dict[Labels, Labels] = {}
        # A p99 of a few requests is their maximum: quiet intervals pool their buckets.
        self.quantile_pools: QuantilePools[dict[str, Any]] = QuantilePools(
            HISTOGRAM_QUANTILES.tolist(), int(MAX_SPAN_S * 1e9))

    @classmethod
    def create(cls, context: AdapterContext) -> MetricsExtractor:
        """The engine's metrics adapter, on its cumulative-stream table."""
        return cls(context.sources, context.span_coverage)

    @staticmethod
    def count(request: ExportMetricsServiceRequest) -> int:
        """Data points in the request."""
        return sum(count_points(metric) for rm in request.resource_metrics
                   for sm in rm.scope_metrics for metric in sm.metrics)

    @staticmethod
    def resources(request: ExportMetricsServiceRequest) -> Iterator[Resource]:
        """The resources that sent the request's points."""
        return (rm.resource for rm in request.resource_metrics)

    def extract(
        self, request: ExportMetricsServiceRequest, out: Observations, result: IngestResult,
        now: float, latest: int,
    ) -> None:
        """Append every scored point of ``request`` to ``out``; count the rest in ``result``.

        ``now`` is the ingest clock; points stamped after ``latest`` (ns) are rejected.
        """
        for rm, labels, version in resource_groups(request.resource_metrics):
            resource = self.canonical(labels)
            first = len(out)
            for sm in rm.scope_metrics:
                if self._covered(sm, resource, now):
                    points = sum(count_points(metric) for metric in sm.metrics)
                    result.accepted += points
                    result.skip("covered_by_spans", points)
                    continue
                walk = self.walk(resource, out, result, now, latest)
                for metric in sm.metrics:
                    walk.metric(metric)
            note_version(out, service_labels(resource), version, out.ts[first:], latest)

    def state_dict(self) -> dict[str, Any]:
        """The histogram buckets pooled for quantiles (baselines live in ``SourceTable``)."""
        return {"quantile_pools": self.quantile_pools.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the pooled buckets (the resource cache refills itself)."""
        if "quantile_pools" in state:
            self.quantile_pools.load_state_dict(state["quantile_pools"])

    def _covered(self, scope_metrics: ScopeMetrics, resource: Labels, now: float) -> bool:
        """Spanmetrics-connector output of a service whose spans are scored already."""
        return (self.span_coverage is not None and scope_metrics.scope.name == SPANMETRICS_SCOPE
                and self.span_coverage.covers(service_labels(resource), now))

    def walk(self, resource: Labels, out: Observations, result: IngestResult, now: float,
             latest: int) -> _Walk:
        """The Python walk of one resource's metrics (``walk.metric(metric)``)."""
        return _Walk(self.sources, self.quantile_pools, resource, out, result, now, latest)

    def canonical(self, resource: Labels) -> Labels:
        """``resource`` as the one tuple every key of this resource holds."""
        # Every key built from this request then holds the same resource object as the
        # keys already stored, so dict lookups compare it by identity, not attribute by
        # attribute. Bounded: resources come from clients.
        known = self._resources.setdefault(resource, resource)
        if len(self._resources) > _CANONICAL_RESOURCES:
            self._resources.clear()
        return known


class _Walk:
    """One metric's points; a small object so the per-kind methods share their context."""

    __slots__ = ("latest", "now", "out", "pools", "resource", "result", "sources")

    def __init__(
        self, sources: SourceTable, pools: QuantilePools[dict[str, Any]], resource: Labels,
        out: Observations, result: IngestResult, now: float, latest: int,
    ) -> None:
        self.sources, self.pools, self.resource, self.out, self.result = (
            sources, pools, resource, out, result)
        self.now, self.latest = now, latest

    def metric(self, metric: Metric) -> None:
        kind = metric.WhichOneof("data")
        if kind == "gauge":
            tag, name = number_stream(metric)
            self.gauge_points(name, metric.gauge.data_points, tag)
        elif kind == "sum":
            self.sum(metric)
        elif kind in ("histogram", "exponential_histogram"):
            self.histogram(metric, kind)
        elif kind == "summary":
            self.summary(
                prometheus_metric_name(metric.name, metric.unit, monotonic_sum=False, gauge=False),
                metric,
            )
        else:
            self.result.reject("unsupported_type")

    def _valid(self, point: Any) -> bool:
        """Common checks; counts the point as rejected or skipped when it is not usable."""
        problem = time_problem(point.time_unix_nano, self.latest)
        if problem:
            self.result.reject(problem)
            return False
        if point.flags & _NO_VALUE:
            self.result.accepted += 1
            self.result.skip("no_recorded_value")
            return False
        return True

    def _advance(
        self, key: Any, point: Any, payload: Any, cumulative: bool = False
    ) -> tuple[str, int, Any]:
        # Only a cumulative stream restarts when its start time moves; a delta stream's
        # start time moves with every point. Only a cumulative point can be folded into the
        # next one when it closes a partial interval (a delta point's count is its own).
        start = point.start_time_unix_nano if cumulative else 0
        status, prev_ts, prev = self.sources.advance(
            key, start, point.time_unix_nano, payload, self.now, hold_partial=cumulative
        )
        if status in (OUT_OF_ORDER, "series_limit"):
            self.result.reject(status)
        else:
            self.result.accepted += 1
        return status, prev_ts, prev

    def _no_interval(self, status: str, cumulative: bool, point: Any) -> bool:
        """True (the point is counted as skipped) when it closes no interval to rate over."""
        if _has_interval(status, cumulative, point):
            return False
        if status in (FIRST, RESET, PARTIAL):
            self.result.skip(status)
        return True

    def gauge_points(self, name: str, points: Any, tag: str) -> None:
        # The hot path of most traffic: one point per stream and request, so the per-point
        # work is kept to attribute reads and two dict lookups.
        resource, result, add, advance = self.resource, self.result, self.out.add, (
            self.sources.advance)
        for p in points:
            if not self._valid(p):
                continue
            value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            if not math.isfinite(value):
                result.reject("non_finite")
                continue
            attrs = labels_of(p.attributes)
            ts = p.time_unix_nano
            # A gauge's value is its score input as it is: a first point is scored too.
            status = advance((tag, name, resource, attrs), 0, ts, None, self.now)[0]
            if status in (OUT_OF_ORDER, "series_limit"):
                result.reject(status)
                continue
            result.accepted += 1
            add(SeriesKey(name, resource, attrs), ts, value)

    def sum(self, metric: Metric, points: Any = None) -> None:
        """A sum's points (``points``: only these of them), as levels or as rates."""
        data = metric.sum
        points = data.data_points if points is None else points
        tag, name = number_stream(metric)
        if tag == "updown":
            self.gauge_points(name, points, tag)
            return
        if data.aggregation_temporality not in (CUMULATIVE, DELTA):
            self.result.reject("unsupported_temporality", len(points))
            return
        cumulative = data.aggregation_temporality == CUMULATIVE
        for p in points:
            if not self._valid(p):
                continue
            value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
            if not math.isfinite(value):
                self.result.reject("non_finite")
                continue
            attrs = labels_of(p.attributes)
            key = ("sum", name, self.resource, attrs)
            status, prev_ts, prev = self._advance(key, p, value, cumulative)
            if self._no_interval(status, cumulative, p):
                continue
            if cumulative:
                if value < prev:  # a counter only goes down when it restarted
                    self.result.skip(RESET)
                    continue
                dt = p.time_unix_nano - prev_ts
                rate = per_second(value - prev, dt)
            else:
                dt = p.time_unix_nano - (p.start_time_unix_nano or prev_ts)
                rate = per_second(value, dt)
            if math.isfinite(rate):  # with its interval: a rate of events is a count
                self.out.add(SeriesKey(name, self.resource, attrs), p.time_unix_nano, rate,
                             seconds(dt))

    def summary(self, name: str, metric: Metric) -> None:
        for p in metric.summary.data_points:
            if not self._valid(p):
                continue
            attrs = labels_of(p.attributes)
            status, _, _ = self._advance(("summary", name, self.resource, attrs), p, None)
            if status in (OUT_OF_ORDER, "series_limit"):
                continue
            for q in p.quantile_values:
                if math.isfinite(q.value):
                    labels = tuple(sorted((*attrs, ("quantile", repr(q.quantile)))))
                    self.out.add(SeriesKey(name, self.resource, labels), p.time_unix_nano, q.value)

    def histogram(self, metric: Metric, kind: str) -> None:
        data = getattr(metric, kind)
        if data.aggregation_temporality not in (CUMULATIVE, DELTA):
            self.result.reject("unsupported_temporality", len(data.data_points))
            return
        name = prometheus_metric_name(metric.name, metric.unit, monotonic_sum=False, gauge=False)
        cumulative = data.aggregation_temporality == CUMULATIVE
        exponential = kind == "exponential_histogram"
        for p in data.data_points:
            if not self._valid(p):
                continue
            snap = _exp_snapshot(p) if exponential else _explicit_snapshot(p)
            if snap is None:
                self.result.reject("invalid_histogram")
                continue
            attrs = labels_of(p.attributes)
            key = (kind, name, self.resource, attrs)
            status, prev_ts, prev = self._advance(key, p, snap, cumulative)
            if self._no_interval(status, cumulative, p):
                continue
            if cumulative:
                delta = _exp_delta(snap, prev) if exponential else _explicit_delta(snap, prev)
                if delta is None:
                    self.result.skip(RESET)
                    continue
                dt = p.time_unix_nano - prev_ts
            else:
                delta, dt = snap, p.time_unix_nano - (p.start_time_unix_nano or prev_ts)
            self._histogram_features(name, attrs, p, delta, dt, exponential, cumulative)

    def _histogram_features(
        self, name: str, attrs: Labels, p: Any, delta: dict[str, Any], dt: int,
        exponential: bool, cumulative: bool,
    ) -> None:
        ts = p.time_unix_nano
        count = delta["count"]
        rate = per_second(count, dt)
        if math.isfinite(rate):
            self.out.add(SeriesKey(name + ":rate", self.resource, attrs), ts, rate, seconds(dt))
        if count <= 0:
            return
        # The latency features' events carry the slowest traced measurement of the interval.
        slowest = slowest_exemplar(p.exemplars) if len(p.exemplars) else None
        if delta["sum"] is not None and math.isfinite(delta["sum"]):
            self.out.add(SeriesKey(name + ":mean", self.resource, attrs), ts, delta["sum"] / count,
                         exemplar=slowest)
        if not exponential and not len(delta["counts"]):
            return  # a count and sum only: no buckets to take quantiles of
        sample = self._quantile_sample(p, delta, exponential, cumulative)
        ready = self.pools.add(SeriesKey(name, self.resource, attrs), ts, count, sample)
        # A quantile's windows are the newest ones of its series: quantiles ready from as many
        # windows share one merge (a busy window readies them all from itself).
        groups: dict[int, tuple[list[dict[str, Any]], list[int]]] = {}
        for i, samples in ready:
            groups.setdefault(len(samples), (samples, []))[1].append(i)
        values: dict[int, float] = {}
        for samples, indices in groups.values():
            quantiles = pooled_quantiles(samples, exponential, HISTOGRAM_QUANTILES[indices])
            values.update(zip(indices, quantiles.tolist(), strict=True))
        for i, _ in ready:
            if math.isfinite(values[i]):
                self.out.add(SeriesKey(f"{name}:{_QUANTILE_FEATURES[i]}", self.resource, attrs),
                             ts, values[i], exemplar=slowest)

    @staticmethod
    def _quantile_sample(p: Any, delta: dict[str, Any], exponential: bool,
                         cumulative: bool) -> dict[str, Any]:
        """What an interval contributes to a pooled quantile."""
        if exponential:
            return {side: delta[side] for side in ("scale", "zero", "pos", "neg")}
        # min/max of a cumulative point cover its whole life, not this interval.
        low = p.min if p.HasField("min") and not cumulative else np.nan
        high = p.max if p.HasField("max") and not cumulative else np.nan
        return {"bounds": delta["bounds"], "counts": delta["counts"], "low": low, "high": high}


def slowest_exemplar(exemplars: Any) -> tuple[bytes, bytes] | None:
    """``(trace_id, span_id)`` of the largest of a point's exemplars that name a span.

    A histogram point's exemplars are measurements the SDK sampled in the interval, with
    the span they were recorded in (``TraceBasedExemplarFilter``: sampled spans only; one
    per bucket with the default reservoir), so the largest is a slow request to look at.
    Exemplars without a valid trace (16 bytes) and span id (8 bytes, neither all zero) are
    skipped (one without a value counts as 0, a NaN as the smallest); None if none is left.
    """
    # Values first (cheap), ids only from the largest down: most exemplars are never read.
    values = [v if v == v else -math.inf  # noqa: PLR0124 -- NaN last
              for v in (e.as_double or e.as_int for e in exemplars)]
    for i in sorted(range(len(values)), key=values.__getitem__, reverse=True):
        e = exemplars[i]
        trace_id, span_id = e.trace_id, e.span_id
        sized = len(trace_id) == 16 and len(span_id) == 8  # noqa: PLR2004
        if sized and any(trace_id) and any(span_id):
            return bytes(trace_id), bytes(span_id)
    return None


def _has_interval(status: str, cumulative: bool, point: Any) -> bool:
    """Whether a point closes an interval a rate can be computed over."""
    if status == "ok":
        return True
    # A delta point carries its own interval when it has a start time.
    return status == FIRST and not cumulative and point.start_time_unix_nano > 0


def _explicit_snapshot(p: Any) -> dict[str, Any] | None:
    """A point's buckets, count and sum; None if its buckets break the OTLP data model.

    ``bucket_counts`` holds one count more than ``explicit_bounds`` has bounds (or none at
    all, with no bounds: a count and sum only), and the bounds are strictly increasing.
    Kept, a point of another shape was summed with its stream's earlier ones when their
    quantiles were pooled: the merge raised, failing every request carrying the stream.
    """
    counts = p.bucket_counts
    bounds = interned_bounds(p.explicit_bounds)
    if bounds is None or not (len(counts) == len(bounds) + 1 or len(counts) == len(bounds) == 0):
        return None
    return {
        "bounds": bounds,
        "counts": np.fromiter(counts, np.float64, len(counts)),
        "count": float(p.count),
        "sum": p.sum if p.HasField("sum") else None,
    }


def _explicit_delta(cur: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any] | None:
    """Difference of two cumulative points, or None when they are not one sequence."""
    if not same_bounds(cur["bounds"], prev["bounds"]) or len(cur["counts"]) != len(
        prev["counts"]
    ):
        return None
    counts = cur["counts"] - prev["counts"]
    count = cur["count"] - prev["count"]
    if count < 0 or counts.min(initial=0.0) < 0:
        return None
    total = None if cur["sum"] is None or prev["sum"] is None else cur["sum"] - prev["sum"]
    return {"bounds": cur["bounds"], "counts": counts, "count": count, "sum": total}


def _exp_snapshot(p: Any) -> dict[str, Any]:
    """A point's buckets (each side at most ``MAX_BUCKET_SPAN`` of them), count and sum."""
    pos = (int(p.positive.offset), np.asarray(p.positive.bucket_counts, np.float64))
    neg = (int(p.negative.offset), np.asarray(p.negative.bucket_counts, np.float64))
    # A point of more buckets is kept coarser: what is stored per stream stays bounded.
    longest = max(len(pos[1]), len(neg[1]))
    steps = 0 if longest <= MAX_BUCKET_SPAN else max(span_steps([pos]), span_steps([neg]))
    return {
        "scale": int(p.scale) - steps,
        "zero": float(p.zero_count),
        "pos": downscale(*pos, steps),
        "neg": downscale(*neg, steps),
        "count": float(p.count),
        "sum": p.sum if p.HasField("sum") else None,
    }


def _exp_delta(cur: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any] | None:
    """Difference of two cumulative exponential points, at the coarser of their scales."""
    scale = min(cur["scale"], prev["scale"])
    pos = [downscale(p["pos"][0], p["pos"][1], p["scale"] - scale) for p in (cur, prev)]
    neg = [downscale(p["neg"][0], p["neg"][1], p["scale"] - scale) for p in (cur, prev)]
    # Coarser still where the two points' buckets lie too far apart to lay out densely.
    steps = max(span_steps(pos), span_steps(neg))
    if steps:
        scale -= steps
        pos = [downscale(offset, counts, steps) for offset, counts in pos]
        neg = [downscale(offset, counts, steps) for offset, counts in neg]
    parts = {"pos": subtract_buckets(pos[0], pos[1]), "neg": subtract_buckets(neg[0], neg[1])}
    zero = cur["zero"] - prev["zero"]
    count = cur["count"] - prev["count"]
    if count < 0 or zero < 0 or any((v[1] < 0).any() for v in parts.values()):
        return None
    total = None if cur["sum"] is None or prev["sum"] is None else cur["sum"] - prev["sum"]
    return {"scale": scale, "zero": zero, "count": count, "sum": total, **parts}
