"""Traces to RED features per operation (as the spanmetrics connector) and span outliers."""

from __future__ import annotations

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
    time_problem,
)
from otel_anomaly.processors.signals.quantile_pools import MAX_SPAN_S, QuantilePools
from otel_anomaly.processors.signals.span_coverage import SpanCoverage
from otel_anomaly.processors.signals.windows import ClosedCell, WindowAggregator
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey

CALLS_METRIC = "traces_span_metrics_calls_total:rate"
ERROR_RATIO_METRIC = "traces_span_metrics_error:ratio"
DURATION_METRIC = "traces_span_metrics_duration_milliseconds"
_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
_KIND_NAMES: dict[int, str] = {int(v): str(k) for k, v in Span.SpanKind.items()}


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
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self._span(service, span, out, result, latest, resource)
            if self.span_coverage is not None and any(ss.spans for ss in rs.scope_spans):
                self.span_coverage.saw_spans([service], now)
            note_version(out, service, version,
                         (s.end_time_unix_nano for ss in rs.scope_spans for s in ss.spans),
                         latest)
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

    def _span(
        self, service: Labels, span: Span, out: Observations, result: IngestResult, latest: int,
        resource: Labels,
    ) -> None:
        end = span.end_time_unix_nano
        problem = time_problem(end, latest) or time_problem(span.start_time_unix_nano, latest)
        if problem:
            result.reject(problem)
            return
        if end < span.start_time_unix_nano:
            result.reject("negative_duration")
            return
        result.accepted += 1
        duration_ms = (end - span.start_time_unix_nano) / 1e6
        operation = (("span.kind", span_kind_name(span.kind)), ("span.name", span.name))
        error = span.status.code == Status.STATUS_CODE_ERROR
        # Windows close per service, each waiting for all of its instances (resources).
        if not self.windows.add((service, operation), end, source=service, sender=resource,
                                error=error, duration=duration_ms):
            result.skip("late")
        if self.span_outliers:
            out.exemplars[len(out)] = (bytes(span.trace_id), bytes(span.span_id))
            out.add(SeriesKey(SPAN_DURATION_METRIC, service, operation), end, duration_ms)

    def closed_features(self, cells: list[ClosedCell], out: Observations) -> None:
        """RED features of closed windows: call rate, error ratio, duration quantiles."""
        for cell in cells:
            service, operation = cast(tuple[Labels, Labels], cell.group)
            ts = cell.end_unix_nano
            out.add(SeriesKey(CALLS_METRIC, service, operation), ts, cell.count / self.window_s)
            if cell.count == 0:
                continue
            # The calls travel with the ratio: 1 error in 4 calls is not 25 in 100.
            out.add(SeriesKey(ERROR_RATIO_METRIC, service, operation), ts,
                    cell.errors / cell.count, cell.count)
            ready = self.duration_pools.add(cell.group, ts, cell.count,
                                            np.asarray(cell.durations, np.float64))
            # Quantiles ready from the same windows (all of them, in a busy window) share
            # one pass over the durations.
            groups: dict[int, tuple[list[NDArray[np.float64]], list[int]]] = {}
            for i, samples in ready:  # equal lengths: the same newest windows
                groups.setdefault(len(samples), (samples, []))[1].append(i)
            for samples, indices in groups.values():
                durations = samples[0] if len(samples) == 1 else np.concatenate(samples)
                values = np.quantile(durations, [_QUANTILES[i][1] for i in indices])
                for i, value in zip(indices, values.tolist(), strict=True):
                    out.add(SeriesKey(f"{DURATION_METRIC}:{_QUANTILES[i][0]}", service,
                                      operation), ts, value)
