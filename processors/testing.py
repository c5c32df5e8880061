"""Test helpers shipped with the package: a fake clock, synthetic series, OTLP builders.

Users testing their own rules get the same tools the project's tests use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_anomaly.processors.backtest import BacktestResult, RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.types import SeriesKey

SECOND = 1_000_000_000
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
AttrValue = str | int | float | bool


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """Return the current fake time in seconds."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass(frozen=True, slots=True)
class Synthetic:
    """A synthetic series and the 0/1 label of each point (1 = injected anomaly)."""

    values: NDArray[np.float64]
    labels: NDArray[np.int8]


def spiky_series(
    n: int = 600, *, seed: int = 0, level: float = 100.0, noise: float = 5.0,
    spikes: int = 5, spike_sigmas: float = 8.0, warmup: int = 100,
) -> Synthetic:
    """Gaussian noise around a level, with single-point spikes after ``warmup``."""
    rng = np.random.default_rng(seed)
    values = level + noise * rng.standard_normal(n)
    labels = np.zeros(n, np.int8)
    at = rng.choice(np.arange(warmup, n), size=spikes, replace=False)
    signs = rng.choice([-1.0, 1.0], size=spikes)
    values[at] += signs * spike_sigmas * noise
    labels[at] = 1
    return Synthetic(values, labels)


def bursty_counts(
    rate: NDArray[np.float64], size: float, rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Events per interval that arrive in bursts: ``rate`` events per interval on average.

    Bursts come as Poisson arrivals at ``rate / size`` per interval, each of a geometric
    number of events with mean ``size`` (a retry storm, a stack trace's log lines); their
    variance is ``2 size - 1`` times a Poisson count's. ``size`` 1: Poisson counts.
    """
    if size <= 1.0:
        return rng.poisson(rate).astype(np.float64)
    bursts = rng.poisson(rate / size)
    events = rng.geometric(1.0 / size, size=int(bursts.sum())).astype(np.float64)
    # Weighted, bincount sums the bursts' events in floats already (typed as ints).
    return np.bincount(np.repeat(np.arange(len(rate)), bursts), weights=events,
                       minlength=len(rate)).astype(np.float64)


def kv(attributes: Mapping[str, AttrValue]) -> list[KeyValue]:
    """OTLP attributes from a mapping."""
    out = []
    for key, value in attributes.items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        elif isinstance(value, float):
            any_value = AnyValue(double_value=value)
        else:
            any_value = AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=any_value))
    return out


def metrics_request(
    metrics: Iterable[Metric], resource: Mapping[str, AttrValue] | None = None
) -> ExportMetricsServiceRequest:
    """Wrap metrics in one resource and scope."""
    res = Resource(attributes=kv(resource or {"service.name": "test"}))
    scope = ScopeMetrics(metrics=list(metrics))
    return ExportMetricsServiceRequest(
        resource_metrics=[ResourceMetrics(resource=res, scope_metrics=[scope])]
    )


def gauge(
    name: str, points: Sequence[tuple[int, float]],
    attributes: Mapping[str, AttrValue] | None = None, unit: str = "",
) -> Metric:
    """A gauge metric with ``(time_unix_nano, value)`` points."""
    metric = Metric(name=name, unit=unit)
    for ts, value in points:
        p = metric.gauge.data_points.add(time_unix_nano=ts, as_double=value)
        p.attributes.extend(kv(attributes or {}))
    return metric


def counter(
    name: str, points: Sequence[tuple[int, float]], *, start: int = 1, cumulative: bool = True,
    attributes: Mapping[str, AttrValue] | None = None, unit: str = "",
) -> Metric:
    """A monotonic sum with ``(time_unix_nano, value)`` points sharing ``start``."""
    metric = Metric(name=name, unit=unit)
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = CUMULATIVE if cumulative else DELTA
    for ts, value in points:
        p = metric.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=ts,
                                       as_double=value)
        p.attributes.extend(kv(attributes or {}))
    return metric


def histogram(
    name: str, points: Sequence[tuple[int, Sequence[float]]], bounds: Sequence[float], *,
    start: int = 1, cumulative: bool = True, attributes: Mapping[str, AttrValue] | None = None,
    unit: str = "ms",
) -> Metric:
    """An explicit-bucket histogram; each point is ``(time_unix_nano, raw samples)``.

    With ``cumulative`` the samples accumulate from point to point, as an SDK reports them.
    """
    metric = Metric(name=name, unit=unit)
    metric.histogram.aggregation_temporality = CUMULATIVE if cumulative else DELTA
    edges = np.asarray(bounds, np.float64)
    counts = np.zeros(len(edges) + 1)
    total, n = 0.0, 0
    for ts, samples in points:
        arr = np.asarray(samples, np.float64)
        here = np.bincount(np.searchsorted(edges, arr, side="left"), minlength=len(counts))
        if cumulative:
            counts, total, n = counts + here, total + float(arr.sum()), n + len(arr)
        else:
            counts, total, n = here.astype(np.float64), float(arr.sum()), len(arr)
        p = metric.histogram.data_points.add(
            start_time_unix_nano=start, time_unix_nano=ts, count=n, sum=total,
            explicit_bounds=list(edges), bucket_counts=[int(c) for c in counts],
        )
        p.attributes.extend(kv(attributes or {}))
    return metric


def span(
    name: str, start_ns: int, duration_ms: float, *, error: bool = False,
    trace_id: bytes = b"\x01" * 16, span_id: bytes = b"\x02" * 8, kind: int = 2,
) -> Span:
    """A span of ``duration_ms`` starting at ``start_ns``."""
    s = Span(
        name=name, kind=kind, trace_id=trace_id, span_id=span_id,  # type: ignore[arg-type]
        start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + int(duration_ms * 1e6),
    )
    if error:
        s.status.code = 2  # type: ignore[assignment]
    return s


def traces_request(
    spans: Iterable[Span], resource: Mapping[str, AttrValue] | None = None
) -> ExportTraceServiceRequest:
    """Wrap spans in one resource and scope."""
    res = Resource(attributes=kv(resource or {"service.name": "test"}))
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=res, scope_spans=[ScopeSpans(spans=list(spans))])
    ])


def logs_request(
    records: Iterable[tuple[int, int]], resource: Mapping[str, AttrValue] | None = None
) -> ExportLogsServiceRequest:
    """Log records from ``(time_unix_nano, severity_number)`` pairs."""
    res = Resource(attributes=kv(resource or {"service.name": "test"}))
    logs = [LogRecord(time_unix_nano=ts, severity_number=sev) for ts, sev in records]  # type: ignore[arg-type]
    return ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(resource=res, scope_logs=[ScopeLogs(log_records=logs)])
    ])


DAY_S = 86_400
BASE_KINDS = ("requests", "latency", "error_ratio", "gauge", "noise")
INCIDENT_KINDS = ("spike", "level_shift", "slow_leak", "throughput_drop",
                  "latency_regression", "error_burst", "deploy_step", "latency_leak",
                  "traffic_decline", "latency_shift", "traffic_loss")
# Which base series each incident is injected into, its length (s) and its size.
_INCIDENTS: dict[str, tuple[str, float, float]] = {
    "spike": ("gauge", 0.0, 3.0),  # one point at 3x
    "level_shift": ("gauge", -1.0, 1.3),  # +30% from onset on (-1: lasts)
    "slow_leak": ("gauge", 6 * 3600.0, 1.6),  # linear ramp to +60% over 6 h
    "throughput_drop": ("requests", 3600.0, 0.5),  # half the traffic for 1 h
    "latency_regression": ("latency", 2 * 3600.0, 1.5),  # p99 x1.5 for 2 h
    "error_burst": ("error_ratio", 1200.0, 0.05),  # +5 points of errors for 20 min
    "deploy_step": ("latency", -1.0, 1.25),  # a release makes p99 25% slower, for good
    "latency_leak": ("latency", 12 * 3600.0, 2.2),  # p99 climbs 10%/h for 12 h, then stays
    "traffic_decline": ("requests", 12 * 3600.0, 0.28),  # traffic falls 6%/h for 12 h
    "latency_shift": ("latency", -1.0, 2.0),  # p99 doubles for good, with no release
    "traffic_loss": ("requests", -1.0, 0.5),  # half the traffic gone for good
}
LASTING = ("level_shift", "latency_shift", "traffic_loss")
"""Incidents that start at once and never end: still flagged hours later?"""
INCIDENT_RAMPS = {"slow_leak": 6 * 3600.0, "latency_leak": 12 * 3600.0,
                  "traffic_decline": 12 * 3600.0}
"""Incidents that ramp linearly to their size over this many seconds, then stay there."""


@dataclass(frozen=True, slots=True)
class Incident:
    """A synthetic production series; ``start``/``end`` index the injected incident.

    ``start == end == -1`` for a control series (no incident).
    """

    kind: str
    ts_unix_nano: NDArray[np.int64]
    values: NDArray[np.float64]
    start: int
    end: int


def production_series(
    base: str, *, days: float = 14.0, step_s: float = 60.0, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A realistic metric with daily and weekly seasonality, per ``base`` kind.

    ``requests``: a counter's rate (req/s), Poisson noise, weekends at 60%; ``latency``: a
    p99 in ms, log-normal (skewed) and busier-is-slower; ``error_ratio``: errors / requests;
    ``gauge``: a CPU-like percentage with autocorrelated noise; ``noise``: Gaussian noise
    around a constant (a control with no pattern).
    """
    rng = np.random.default_rng(seed)
    n = int(days * DAY_S / step_s)
    t = np.arange(n) * step_s + 3 * DAY_S + float(rng.integers(0, DAY_S))  # a random phase
    day = np.sin(2 * np.pi * (t % DAY_S) / DAY_S - np.pi / 2)  # trough at midnight UTC
    # Five busy days and two quiet ones: epoch days 0-4 mod 7 (Thursday to Monday) are busy,
    # so the quiet "weekend" falls on Tuesday and Wednesday (UTC). Only the 5/2 pattern
    # matters to the detectors; moving it would change every benchmark's figures.
    weekday = ((t // DAY_S) % 7 < 5).astype(np.float64)
    load = (1.0 + 0.6 * day) * (0.6 + 0.4 * weekday)
    if base == "requests":
        values = rng.poisson(50.0 * load * step_s) / step_s
    elif base == "latency":
        values = 120.0 * (1.0 + 0.3 * load) * np.exp(0.15 * rng.standard_normal(n))
    elif base == "error_ratio":
        requests = np.maximum(rng.poisson(50.0 * load * step_s), 1)
        values = rng.binomial(requests, 0.002) / requests
    elif base == "gauge":
        ar = np.zeros(n)
        shocks = rng.standard_normal(n)
        for i in range(1, n):  # AR(1) noise: smooth, like a real utilisation
            ar[i] = 0.8 * ar[i - 1] + shocks[i]
        values = 40.0 + 12.0 * load + 1.5 * ar
    elif base == "noise":
        values = 100.0 + 5.0 * rng.standard_normal(n)
    else:
        msg = f"unknown base kind {base!r}; expected one of {BASE_KINDS}"
        raise ValueError(msg)
    ts = (t * SECOND).astype(np.int64)
    return ts, values.astype(np.float64)


def incident_series(
    kind: str | None, *, base: str = "noise", days: float = 14.0, step_s: float = 60.0,
    at_day: float = 10.0, seed: int = 0,
) -> Incident:
    """A ``production_series`` with one incident of ``kind`` at ``at_day`` (None: control).

    Each incident kind has its own base series (``_INCIDENTS``); ``base`` is used only for
    controls. The onset is moved by up to a day at random (seeded), so it hits any phase.
    """
    if kind is None:
        ts, values = production_series(base, days=days, step_s=step_s, seed=seed)
        return Incident("control:" + base, ts, values, -1, -1)
    if kind not in _INCIDENTS:
        msg = f"unknown incident kind {kind!r}; expected one of {INCIDENT_KINDS}"
        raise ValueError(msg)
    base, duration_s, size = _INCIDENTS[kind]
    ts, values = production_series(base, days=days, step_s=step_s, seed=seed)
    rng = np.random.default_rng(seed + 1_000_003)
    start = int((at_day + rng.uniform(0.0, 1.0)) * DAY_S / step_s)
    end = len(values) if duration_s < 0 else start + max(int(duration_s / step_s), 1)
    values = values.copy()
    part = slice(start, end)
    if kind in INCIDENT_RAMPS:
        values[part] *= np.linspace(1.0, size, end - start)
        values[end:] *= size
        end = len(values)
    elif kind == "error_burst":
        values[part] += size
    else:
        values[part] *= size
    if base == "requests":  # a counter's rate: whole events a window, as a counter counts
        values = np.round(values * step_s) / step_s
    return Incident(kind, ts, values, start, end)


BASE_METRIC = {
    "requests": "http_server_requests:rate",
    "latency": "http_server_duration_milliseconds:p99",
    "error_ratio": "http_server_requests:ratio",
    "gauge": "system_cpu_utilization_percent",
    "noise": "queue_depth",
}
"""Each base kind's metric name as the sidecar derives it, so the default rules route it
as in production."""


def incident_base(kind: str) -> str:
    """The base series an incident of ``kind`` is injected into."""
    return _INCIDENTS[kind][0]


def base_of(case: Incident) -> str:
    """The base kind of ``case``: its incident's, or the control's own."""
    return case.kind.removeprefix("control:") if case.start < 0 else incident_base(case.kind)


def incident_cases(
    series_per_kind: int, *, days: float, step_s: float
) -> list[Incident]:
    """Seeded series: ``series_per_kind`` of every incident kind, then of every control.

    Each incident's onset falls in the fourth day before the end.
    """
    cases = [incident_series(kind, days=days, step_s=step_s, at_day=days - 4.0,
                             seed=100 * i + 7)
             for kind in INCIDENT_KINDS for i in range(series_per_kind)]
    cases += [incident_series(None, base=base, days=days, step_s=step_s, seed=100 * i + 3)
              for base in BASE_KINDS for i in range(series_per_kind)]
    return cases


def replay_incidents(engine: Engine, cases: Sequence[Incident], *,
                     interval_s: float | None = None) -> list[BacktestResult]:
    """Backtest ``cases`` together through ``engine``, each series its own service.

    A ``deploy_step`` is a release: its service reports ``service.version`` "1" from the
    start and "2" at the onset (``Engine.observe_version``). With ``interval_s`` (the
    cases' spacing), request rates carry it as each row's interval, as the live path gives
    a counter's rate: they are then judged as counts of events.
    """
    services = [(("service.name", f"svc{i}"),) for i in range(len(cases))]
    series = []
    for service, case in zip(services, cases, strict=True):
        base = base_of(case)
        counts = (np.full(len(case.values), float(interval_s))
                  if interval_s is not None and base == "requests" else None)
        series.append(RecordedSeries(SeriesKey(BASE_METRIC[base], service, ()),
                                     case.ts_unix_nano, case.values, counts))
        # The grace period only compares event times, so the releases can be announced first.
        if case.kind == "deploy_step":
            engine.observe_version(service, "1", int(case.ts_unix_nano[0]))
            engine.observe_version(service, "2", int(case.ts_unix_nano[case.start]))
    return backtest(engine, series)
