"""Scale-out: replicas fed through the Collector's loadbalancing split score as one engine.

The ``loadbalancing`` exporter routes metrics by ``streamID`` (resource, scope, metric and
point attributes: every point of one stream reaches the same replica) and spans by
``service``. Every series' state is its own, so N replicas fed that way must give each
series exactly the scores one engine fed everything gives it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    counter,
    gauge,
    metrics_request,
    production_series,
    span,
    traces_request,
)
from otel_anomaly.processors.types import SeriesKey

REPLICAS = 2
SERVICES = ("cart", "checkout", "search")
HOSTS = ("node-1", "node-2")
STEP = 60


def shard_of(*parts: object) -> int:
    """A stable hash of a routing key onto a replica (the exporter's ring, simplified)."""
    return hashlib.sha256(repr(parts).encode()).digest()[0] % REPLICAS


def split_metrics(request: ExportMetricsServiceRequest) -> list[ExportMetricsServiceRequest]:
    """One request per replica, each point going where its stream (streamID) is routed."""
    parts = [ExportMetricsServiceRequest() for _ in range(REPLICAS)]
    for rm in request.resource_metrics:
        resource = sorted((kv.key, kv.value.string_value) for kv in rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    attrs = sorted((kv.key, kv.value.string_value) for kv in point.attributes)
                    target = parts[shard_of(resource, sm.scope.name, metric.name, attrs)]
                    out_rm = target.resource_metrics.add(resource=rm.resource)
                    out_metric = out_rm.scope_metrics.add(scope=sm.scope).metrics.add()
                    out_metric.CopyFrom(metric)
                    getattr(out_metric, kind).ClearField("data_points")
                    getattr(out_metric, kind).data_points.add().CopyFrom(point)
    return parts


def split_traces(request: ExportTraceServiceRequest) -> list[ExportTraceServiceRequest]:
    """One request per replica, every span of a service on the same replica."""
    parts = [ExportTraceServiceRequest() for _ in range(REPLICAS)]
    for rs in request.resource_spans:
        service = next(kv.value.string_value for kv in rs.resource.attributes
                       if kv.key == "service.name")
        parts[shard_of(service)].resource_spans.add().CopyFrom(rs)
    return parts


def traffic(step: int) -> tuple[ExportMetricsServiceRequest, ExportTraceServiceRequest]:
    """One collection interval of every service and host: a gauge, a counter, spans."""
    metrics = ExportMetricsServiceRequest()
    traces = ExportTraceServiceRequest()
    ts = (1_700_000_000 + step * STEP) * SECOND
    for i, service in enumerate(SERVICES):
        _, cpu = CPU[i]
        for host in HOSTS:
            resource = {"service.name": service, "host.name": host}
            one = metrics_request([
                gauge("system.cpu.utilization", [(ts, float(cpu[step]))], {"cpu": "0"}),
                gauge("system.cpu.utilization", [(ts, float(cpu[step]) / 2)], {"cpu": "1"}),
                counter("http.server.requests", [(ts, 100.0 * step * (i + 1))],
                        attributes={"route": "/"}),
            ], resource)
            metrics.resource_metrics.extend(one.resource_metrics)
        slow = 40.0 if step % 97 else 400.0  # now and then a slow operation
        spans = [span("GET /", ts + k * SECOND, slow if k == 0 else 5.0 + k,
                      error=(step + k) % 50 == 0) for k in range(6)]
        traces.resource_spans.extend(traces_request(spans, {"service.name": service})
                                     .resource_spans)
    return metrics, traces


CPU = [production_series("gauge", days=0.5, step_s=STEP, seed=s) for s in range(len(SERVICES))]


def scores_by_series(engines: list[Engine], feed: Callable[[int], None], steps: int
                     ) -> dict[SeriesKey, list[tuple[int, float, float]]]:
    """Every score row each engine returned, by series (time, score, expected)."""
    rows: dict[SeriesKey, list[tuple[int, float, float]]] = {}
    results = []
    for step in range(steps):
        results += feed(step)
    for engine, result in results:
        s = result.scores
        for slot, ts, score, expected in zip(s.slots.tolist(), s.ts_unix_nano.tolist(),
                                             s.score.tolist(), s.expected.tolist(), strict=True):
            rows.setdefault(engine.series_key(slot), []).append((ts, score, expected))
    return rows


def test_two_replicas_fed_through_the_loadbalancing_split_score_like_one_engine() -> None:
    settings = EngineSettings(clock=FakeClock(), traces_window_s=STEP, lateness_s=0,
                              silence_after_s=0)
    single = Engine(settings)
    replicas = [Engine(settings) for _ in range(REPLICAS)]

    def one(step: int) -> list[tuple[Engine, object]]:
        metrics, traces = traffic(step)
        return [(single, single.ingest("metrics", metrics)),
                (single, single.ingest("traces", traces))]

    def sharded(step: int) -> list[tuple[Engine, object]]:
        metrics, traces = traffic(step)
        out = []
        for replica, m, t in zip(replicas, split_metrics(metrics), split_traces(traces),
                                 strict=True):
            out += [(replica, replica.ingest("metrics", m)), (replica, replica.ingest("traces", t))]
        return out

    steps = len(CPU[0][1])
    expected = scores_by_series([single], one, steps)
    got = scores_by_series(replicas, sharded, steps)
    assert sum(r.stats().series_active for r in replicas) == single.stats().series_active
    assert all(r.stats().series_active > 0 for r in replicas), "the split left a replica idle"
    assert got.keys() == expected.keys()
    for key, rows in expected.items():
        np.testing.assert_array_equal(np.array(got[key]), np.array(rows), err_msg=str(key))
    metrics = {key.metric for key in expected}
    assert {"traces_span_metrics_error:ratio", "service_multivariate:score",
            "http_server_requests_total:rate"} <= metrics, metrics
