"""Compile the scoring kernels before live data arrives.

numba compiles a kernel at its first call (or loads it from its cache). Left to the first
export, that would stall it for the whole compilation, long enough for a Collector's
exporter to time out. ``warm_up`` instead scores a few synthetic points through every
detector rule of a throwaway engine at start-up, before the sidecar reports ready.
"""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_anomaly.processors.alerting.row_sampling import max_of_n_factors
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.histogram_quantiles import (
    explicit_bucket_quantiles,
    exponential_bucket_quantiles,
)
from otel_anomaly.processors.signals.metrics_wire_count import count_points
from otel_anomaly.processors.types import SeriesKey

_warmed: set[tuple[tuple[str, tuple[str, ...]], ...]] = set()  # rule sets this process ran
_POINTS = 48  # past the level member's warm-up (30 points), so every kernel runs
_STEP_NS = 300 * 10**9


def example_metric(glob: str) -> str:
    """A metric name ``glob`` matches (wildcards filled with ``x``).

    >>> example_metric("*_duration_milliseconds:p99"), example_metric("cpu[0-9]_?")
    ('x_duration_milliseconds:p99', 'cpu0_x')
    """

    def one_of(match: re.Match[str]) -> str:
        chars = match.group(1)
        return "x" if chars.startswith("!") or not chars else chars[0]

    return re.sub(r"\[([^\]]*)\]", one_of, glob).replace("*", "x").replace("?", "x")


def warm_up(settings: EngineSettings) -> float:
    """Score synthetic series through every rule of ``settings``; return the seconds taken.

    Compiled kernels live as long as the process: the same rules are warmed once (0 s).
    Each rule gets one series named after its first glob (when that name is routed to the
    rule), a slow cycle with noise and, near the end, a spike: enough points to pass
    warm-up and open an anomaly, then a few while it is open, so learning and alerting
    kernels (the held band's too) run as well as scoring ones.
    """
    started = time.perf_counter()
    rule_set = tuple((rule.detector, tuple(rule.match)) for rule in settings.rules)
    if rule_set in _warmed:
        return 0.0
    _warmed.add(rule_set)
    engine = Engine(dataclasses.replace(settings, clock=lambda: 0.0))
    _warm_up_wire(engine)
    _warm_up_spans(engine)
    # The band of a request's extreme row (only a busy request's slow span reaches it).
    max_of_n_factors(6.0, np.array([1.0, 2.0]))
    # Histogram quantiles (a histogram's second point reaches them).
    explicit_bucket_quantiles(np.array([1.0, 2.0]), np.array([1.0, 2.0, 1.0]),
                              np.array([0.5, 0.99]))
    exponential_bucket_quantiles(0, 1.0, (0, np.array([1.0, 2.0])), (0, np.array([1.0])),
                                 np.array([0.5, 0.99]))
    rng = np.random.default_rng(0)
    scorer = engine.scorer
    names = [name for rule in settings.rules if rule.match
             for name in [example_metric(rule.match[0])]
             if scorer.rules[scorer.rule_for(name)] == rule]
    ts = np.arange(_POINTS, dtype=np.int64) * _STEP_NS + 1_700_000_000 * 10**9
    cycle = 0.5 + 0.2 * np.sin(np.arange(_POINTS) / 5.0)
    for name in names:
        values = cycle + rng.normal(0.0, 0.02, _POINTS)
        values[-6:-3] *= 5.0  # opens an anomaly; the rows after it run the held band's kernels
        key = SeriesKey(name, (("service.name", "otel-anomaly-warm-up"),), ())
        engine.ingest_series([key] * _POINTS, ts, values, np.full(_POINTS, 100.0))
    # A deploy's grace period (its offsets ask which rows count events), on its own service.
    if names:
        deployed = (("service.name", "otel-anomaly-warm-up-deploy"),)
        engine.observe_version(deployed, "1", int(ts[0]))
        engine.observe_version(deployed, "2", int(ts[-5]))
        key = SeriesKey(names[-1], deployed, ())
        engine.ingest_series([key] * _POINTS, ts, np.round(cycle * 10.0) / 100.0,
                             np.full(_POINTS, 100.0))
    return time.perf_counter() - started


def _warm_up_wire(engine: Engine) -> None:
    """Run the compiled metrics path (``signals.wire_path``): first sight, then a cache hit.

    Also the receivers' count of a request's points (``metrics_wire_count``): left to the
    first export, it compiled on the event loop (0.76 s with an empty cache).
    """
    service = KeyValue(key="service.name", value=AnyValue(string_value="otel-anomaly-warm-up"))
    for step in (1, 2, 3):
        point = NumberDataPoint(time_unix_nano=step * _STEP_NS, as_double=1.0)
        metric = Metric(name="otel_anomaly_warm_up", gauge=Gauge(data_points=[point]))
        group = ResourceMetrics(resource=Resource(attributes=[service]),
                                scope_metrics=[ScopeMetrics(metrics=[metric])])
        request = ExportMetricsServiceRequest(resource_metrics=[group])
        data = request.SerializeToString()
        count_points(data)
        engine.ingest("metrics", request, data)


def _warm_up_spans(engine: Engine) -> None:
    """Run the compiled traces path (``signals.span_path``) until windows close.

    The first request's outliers go by key (their series are new), the next ones' by
    slot; windows close once event time passes them, which runs the quantile kernel.
    """
    service = KeyValue(key="service.name", value=AnyValue(string_value="otel-anomaly-warm-up"))
    window_ns = int(engine.settings.traces_window_s * 1e9)
    lateness_ns = int(engine.settings.lateness_s * 1e9)
    for step in range(4):
        ts = 1_700_000_000 * 10**9 + step * (window_ns + lateness_ns)
        spans = [Span(name="warm-up", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=ts,
                      end_time_unix_nano=ts + 10**6 * (1 + i)) for i in range(3)]
        group = ResourceSpans(resource=Resource(attributes=[service]),
                              scope_spans=[ScopeSpans(spans=spans)])
        request = ExportTraceServiceRequest(resource_spans=[group])
        engine.ingest("traces", request, request.SerializeToString())
