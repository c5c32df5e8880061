"""Traces to RED features per operation (as the spanmetrics connector) and span outliers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, cast

import numpy as np
from numpy.typing import NDArray
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_anomaly.processors.settings import SPAN_DURATION_METRIC
from otel_anomaly.processors.signals.adapter import AdapterContext, Signal
from otel_anomaly.processors.signals.otlp_resources import (
    note_version,
    resource_groups,
    service_labels,
)
from otel_anomaly.processors.signals.quantile_pools import MAX_SPAN_S, QuantilePools
from otel_anomaly.processors.signals.sample_quantiles import quantiles
from otel_anomaly.processors.signals.span_coverage import SpanCoverage
from otel_anomaly.processors.signals.windows import ClosedCell, WindowAggregator
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey

CALLS_METRIC = "traces_span_metrics_calls_total:rate"
ERROR_RATIO_METRIC = "traces_span_metrics_error:ratio"
DURATION_METRIC = "traces_span_metrics_duration_milliseconds"
_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
_QUANTILE_METRICS = tuple(f"{DURATION_METRIC}:{name}" for name, _ in _QUANTILES)
_KNOWN_GROUPS = 1 << 16  # operations whose feature keys are kept between windows
_KIND_NAMES: dict[int, str] = {int(v): str(k) for k, v in Span.SpanKind.items()}


TIME_REJECTIONS = ("missing_timestamp", "future_timestamp", "negative_duration")
"""Why spans are refused for their times, in the order ``time_checks`` counts them (and
``traces_wire.kept_spans`` fills its ``reasons``)."""


def time_checks(ends: NDArray[np.uint64], starts: NDArray[np.uint64], latest: np.uint64,
                ) -> tuple[NDArray[np.bool_], dict[str, int]]:
    """Spans with usable times, and how many of the others are rejected for which reason.

    The reasons are ``time_problem``'s (the end checked before the start), then
    ``negative_duration``.
    """
    missing_end = ends == 0
    bad_end = missing_end | (ends > latest)
    missing_start = ~bad_end & (starts == 0)
    bad = bad_end | missing_start | (starts > latest)
    negative = ~bad & (ends < starts)
    missing = int(np.count_nonzero(missing_end | missing_start))
    usable: NDArray[np.bool_] = ~bad & ~negative
    counts = (missing, int(np.count_nonzero(bad)) - missing, int(np.count_nonzero(negative)))
    return usable, dict(zip(TIME_REJECTIONS, counts, strict=True))


def operation_labels(kind: int, name: str) -> Labels:
    """An operation's attributes, as spanmetrics names its dimensions."""
    return (("span.kind", span_kind_name(kind)), ("span.name", name))


def span_kind_name(kind: int) -> str:
    """``SPAN_KIND_SERVER`` and so on, as spanmetrics writes the ``span.kind`` dimension."""
    return _KIND_NAMES.get(kind, "SPAN_KIND_UNSPECIFIED")


class TracesExtractor:
    """The traces adapter: spans into per-operation windows, and span-duration outliers."""

    signal: ClassVar[Signal] = "traces"
    request_type: ClassVar[type[ExportTraceServiceRequest]] = ExportTraceServiceRequest

    def __init__(self, windows: WindowAggregator, span_outliers: bool,
                 span_coverage: SpanCoverage | None = None) -> None:
        self.windows = windows
        self.span_outliers = span_outliers
        self.span_coverage = span_coverage
        self.window_s = windows.window_ns / 1e9
        # A p99 of five calls is their maximum: quiet windows pool their durations.
        self.duration_pools: QuantilePools[NDArray[np.float64]] = QuantilePools(
            [q for _, q in _QUANTILES], int(MAX_SPAN_S * 1e9))
        # Each (service, operation)'s RED keys: calls, error ratio, then the quantiles
        # (built once, not five named tuples per operation per window).
        self._feature_keys: dict[tuple[Labels, Labels], tuple[SeriesKey, ...]] = {}

    @classmethod
    def create(cls, context: AdapterContext) -> TracesExtractor:
        """The engine's traces adapter: RED windows of ``traces_window_s``."""
        settings = context.settings
        windows = WindowAggregator(int(settings.traces_window_s * 1e9),
                                   int(settings.lateness_s * 1e9))
        return cls(windows, settings.span_outliers, context.span_coverage)

    @staticmethod
    def count(request: ExportTraceServiceRequest) -> int:
        """Spans in the request."""
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)

    @staticmethod
    def resources(request: ExportTraceServiceRequest) -> Iterator[Resource]:
        """The resources that sent the request's spans."""
        return (rs.resource for rs in request.resource_spans)

    def extract(
        self, request: ExportTraceServiceRequest, out: Observations, result: IngestResult,
        now: float, latest: int,
    ) -> None:
        """Count every span into its window; append span outliers' points to ``out``.

        Spans stamped after ``latest`` (ns) are rejected: one client's wrong clock must not
        move the event time that closes every service's windows. Windows run on event time;
        ``now`` only dates the services seen sending spans (``span_coverage``).
        """
        for rs, resource, version in resource_groups(request.resource_spans):
            service = service_labels(resource)
            spans = [span for ss in rs.scope_spans for span in ss.spans]
            if not spans:
                continue
            ends = self._spans(service, resource, spans, out, result, latest)
            if self.span_coverage is not None:
                self.span_coverage.saw_spans([service], now)
            note_version(out, service, version, ends, latest)
        self.closed_features(self.windows.close_ready(), out)

    def state_dict(self) -> dict[str, Any]:
        """The open RED windows and the durations pooled for quantiles."""
        return {"windows": self.windows.state_dict(),
                "duration_pools": self.duration_pools.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the open RED windows (and pooled durations, when the state has them)."""
        self.windows.load_state_dict(state["windows"])
        if "duration_pools" in state:
            self.duration_pools.load_state_dict(state["duration_pools"])

    def _spans(
        self, service: Labels, resource: Labels, spans: list[Span], out: Observations,
        result: IngestResult, latest: int,
    ) -> list[int]:
        """Count one resource's spans into windows (and outliers into ``out``); their ends.

        Field reads are one pass each; checks, durations and windows work on arrays, so
        the Python work per span is a few attribute reads.
        """
        ends = np.fromiter((s.end_time_unix_nano for s in spans), np.uint64, len(spans))
        end_times: list[int] = ends.tolist()
        starts = np.fromiter((s.start_time_unix_nano for s in spans), np.uint64, len(spans))
        usable, rejected = time_checks(ends, starts, np.uint64(latest))
        for reason, n in rejected.items():
            result.reject(reason, n)
        rows = np.flatnonzero(usable)
        result.accepted += len(rows)
        if not len(rows):
            return end_times
        end_ns = ends[rows].astype(np.int64)
        duration_ms = (end_ns - starts[rows].astype(np.int64)) / 1e6
        kept = [spans[i] for i in rows.tolist()]
        # One group per operation (span kind and name), numbered in order of appearance.
        ids: dict[tuple[int, str], int] = {}
        group_of = np.fromiter((ids.setdefault((s.kind, s.name), len(ids)) for s in kept),
                               np.intp, len(kept))
        operations = [operation_labels(kind, name) for kind, name in ids]
        errors = np.fromiter((s.status.code == Status.STATUS_CODE_ERROR for s in kept),
                             np.bool_, len(kept))
        self.count_into_windows(service, resource, self.window_groups(service, operations),
                                group_of, end_ns, errors, duration_ms, result)
        if self.span_outliers:
            keys = self.outlier_keys(service, operations)
            out.extend([keys[g] for g in group_of.tolist()], end_ns.tolist(), duration_ms.tolist(),
                       [(bytes(s.trace_id), bytes(s.span_id)) for s in kept])
        return end_times

    @staticmethod
    def window_groups(service: Labels, operations: list[Labels]) -> list[tuple[Labels, Labels]]:
        """The window group of each of a service's ``operations``."""
        return [(service, operation) for operation in operations]

    def count_into_windows(
        self, service: Labels, resource: Labels, groups: list[tuple[Labels, Labels]],
        group_of: NDArray[np.intp], end_ns: NDArray[np.int64], errors: NDArray[np.bool_],
        duration_ms: NDArray[np.float64], result: IngestResult,
    ) -> None:
        """Count one resource's usable spans into their operations' windows; skip the late.

        Span ``i`` is of ``groups[group_of[i]]`` (``window_groups``: the same list object
        batch after batch spares the windows hashing its groups again). Windows close per
        service, each waiting for all of its instances (resources).
        """
        counted = self.windows.add_many(
            groups, group_of, end_ns, source=service, sender=resource, errors=errors,
            durations=duration_ms)
        result.skip("late", len(counted) - int(np.count_nonzero(counted)))

    @staticmethod
    def outlier_key(service: Labels, operation: Labels) -> SeriesKey:
        """The series an operation's span durations are scored in (span outliers)."""
        return SeriesKey(SPAN_DURATION_METRIC, service, operation)

    @staticmethod
    def outlier_keys(service: Labels, operations: list[Labels]) -> list[SeriesKey]:
        """``outlier_key`` of each of ``operations``."""
        return [TracesExtractor.outlier_key(service, operation) for operation in operations]

    def closed_features(self, cells: list[ClosedCell], out: Observations) -> None:
        """RED features of closed windows: call rate, error ratio, duration quantiles.

        The quantiles are placeholders until every cell's samples are known; then one
        compiled call computes them all (``sample_quantiles``).
        """
        samples: list[NDArray[np.float64]] = []
        sample_of: list[int] = []  # per quantile asked: its sample, its q, its row in out
        qs: list[float] = []
        rows: list[int] = []
        for cell in cells:
            keys = self._keys_of(cast(tuple[Labels, Labels], cell.group))
            ts = cell.end_unix_nano
            out.add(keys[0], ts, cell.count / self.window_s, self.window_s)
            if cell.count == 0:
                continue
            # The calls travel with the ratio: 1 error in 4 calls is not 25 in 100.
            out.add(keys[1], ts, cell.errors / cell.count, cell.count)
            ready = self.duration_pools.add(cell.group, ts, cell.count,
                                            np.asarray(cell.durations, np.float64))
            # Quantiles ready from the same windows (all of them, in a busy window) share
            # one sample.
            groups: dict[int, tuple[list[NDArray[np.float64]], list[int]]] = {}
            for i, pooled in ready:  # equal lengths: the same newest windows
                groups.setdefault(len(pooled), (pooled, []))[1].append(i)
            for pooled, indices in groups.values():
                samples.append(pooled[0] if len(pooled) == 1 else np.concatenate(pooled))
                for i in indices:
                    sample_of.append(len(samples) - 1)
                    qs.append(_QUANTILES[i][1])
                    rows.append(len(out))
                    out.add(keys[2 + i], ts, math.nan)
        if rows:
            bounds = np.cumsum([0] + [len(sample) for sample in samples], dtype=np.int64)
            values = np.empty(len(qs), np.float64)
            quantiles(np.concatenate(samples).astype(np.float64, copy=False), bounds,
                      np.asarray(sample_of, np.int64), np.asarray(qs, np.float64), values)
            for row, value in zip(rows, values.tolist(), strict=True):
                out.values[row] = value

    def _keys_of(self, group: tuple[Labels, Labels]) -> tuple[SeriesKey, ...]:
        keys = self._feature_keys.get(group)
        if keys is None:
            if len(self._feature_keys) >= _KNOWN_GROUPS:  # bounded: operations come and go
                self._feature_keys.clear()
            service, operation = group
            keys = self._feature_keys[group] = tuple(
                SeriesKey(metric, service, operation)
                for metric in (CALLS_METRIC, ERROR_RATIO_METRIC, *_QUANTILE_METRICS))
        return keys
