"""The Prometheus remote-write adapter: samples of Prometheus series to scored points.

Identity follows the Prometheus labels, mapped onto a resource as the Collector's
Prometheus receiver does: ``job`` is the service (``namespace/name`` splits into
``service.namespace`` and ``service.name``), ``instance`` is ``service.instance.id``; the
other labels stay the point's attributes. So a series keeps its ``job`` and ``instance``
on ``/metrics``, and the same target scraped by an OTLP Collector scores the same series.

Counters (a name ending in ``_total``, or a family the sender's metadata calls a counter,
remembered across requests because Prometheus sends metadata on its own schedule) are
scored as per-second rates over each scrape interval, a drop in value being a counter
reset; everything else is a gauge. Not scored: classic histogram buckets (``_bucket``: one
series per bucket says little alone; their ``_count`` and ``_sum`` are rated when metadata
names the family), native histograms (rejected as ``unsupported_type``) and staleness
markers (skipped: the series ended, which the silence watch reports per service).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any, ClassVar

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_anomaly.processors.signals.adapter import AdapterContext, Signal
from otel_anomaly.processors.signals.cumulative_streams import (
    FIRST,
    OUT_OF_ORDER,
    PARTIAL,
    SourceTable,
    per_second,
    seconds,
)
from otel_anomaly.processors.signals.otlp_resources import time_problem
from otel_anomaly.processors.signals.remote_write_proto import COUNTER, WriteRequest
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey

_MS = 1_000_000
_STALE_NAN = 0x7FF0000000000002  # Prometheus' staleness marker: a NaN with this payload
_HISTOGRAM_TYPES = (3, 4, 5)  # HISTOGRAM, GAUGEHISTOGRAM, SUMMARY: their _count/_sum count up
_MAX_FAMILIES = 100_000  # families come from senders: bound what is remembered


def is_stale_marker(value: float) -> bool:
    """Whether ``value`` is Prometheus' staleness marker (not any NaN).

    >>> is_stale_marker(struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0])
    True
    >>> is_stale_marker(float("nan"))
    False
    """
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == _STALE_NAN


def identity(labels: dict[str, str]) -> tuple[Labels, Labels]:
    """A series' resource (from ``job`` and ``instance``) and its other labels.

    >>> identity({"job": "shop/cart", "instance": "10.0.0.1:8080", "route": "/"})
    ((('service.instance.id', '10.0.0.1:8080'), ('service.name', 'cart'), \
('service.namespace', 'shop')), (('route', '/'),))
    """
    resource: dict[str, str] = {}
    job = labels.pop("job", "")
    if job:
        namespace, _, name = job.rpartition("/")
        resource["service.name"] = name
        if namespace:
            resource["service.namespace"] = namespace
    instance = labels.pop("instance", "")
    if instance:
        resource["service.instance.id"] = instance
    return tuple(sorted(resource.items())), tuple(sorted(labels.items()))


class RemoteWriteAdapter:
    """Remote-write requests (already decompressed and decoded) to observations."""

    signal: ClassVar[Signal] = "prometheus"
    request_type: ClassVar[type[Any]] = WriteRequest

    def __init__(self, sources: SourceTable) -> None:
        self.sources = sources
        self._family_types: dict[str, int] = {}

    @classmethod
    def create(cls, context: AdapterContext) -> RemoteWriteAdapter:
        """The engine's remote-write adapter, on its cumulative-stream table."""
        return cls(context.sources)

    @staticmethod
    def count(request: Any) -> int:
        """Samples and native-histogram samples in the request."""
        return sum(len(ts.samples) + len(ts.histograms) for ts in request.timeseries)

    @staticmethod
    def resources(request: Any) -> Iterator[Resource]:
        """One resource per target (``job`` and ``instance``) in the request."""
        targets: set[Labels] = set()
        for ts in request.timeseries:
            labels = {label.name: label.value for label in ts.labels
                      if label.name in ("job", "instance")}
            targets.add(identity(labels)[0])
        for resource in targets:
            yield Resource(attributes=[KeyValue(key=k, value=AnyValue(string_value=v))
                                       for k, v in resource])

    def extract(
        self, request: Any, out: Observations, result: IngestResult, now: float, latest: int,
    ) -> None:
        """Append every scored sample to ``out``; count every sample in ``result``."""
        self._remember_types(request)
        for ts in request.timeseries:
            result.reject("unsupported_type", len(ts.histograms))
            if not ts.samples:
                continue
            labels: dict[str, str] = {}
            for label in ts.labels:
                labels.setdefault(label.name, label.value)
            name = labels.pop("__name__", "")
            if not name:
                result.reject("missing_metric_name", len(ts.samples))
                continue
            if name.endswith("_bucket"):
                result.accepted += len(ts.samples)
                result.skip("histogram_bucket", len(ts.samples))
                continue
            resource, attrs = identity(labels)
            if self._is_counter(name):
                self._counter(name, resource, attrs, ts.samples, out, result, now, latest)
            else:
                self._gauge(name, resource, attrs, ts.samples, out, result, now, latest)

    def state_dict(self) -> dict[str, Any]:
        """The metric types the sender's metadata named."""
        return {"family_types": dict(self._family_types)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the remembered metric types."""
        self._family_types = {str(k): int(v) for k, v in state["family_types"].items()}

    def _remember_types(self, request: Any) -> None:
        for meta in request.metadata:
            if meta.metric_family_name:
                self._family_types[meta.metric_family_name] = meta.type
        if len(self._family_types) > _MAX_FAMILIES:
            self._family_types.clear()

    def _is_counter(self, name: str) -> bool:
        if name.endswith("_total"):
            return True
        types = self._family_types
        if types.get(name) == COUNTER:
            return True
        family, _, suffix = name.rpartition("_")
        return suffix in ("count", "sum") and types.get(family) in _HISTOGRAM_TYPES

    def _usable(self, sample: Any, result: IngestResult, latest: int) -> int | None:
        """The sample's time in ns, or None (counted) when the sample cannot be scored."""
        value = sample.value
        if not math.isfinite(value):
            if is_stale_marker(value):
                result.accepted += 1
                result.skip("stale_marker")
            else:
                result.reject("non_finite")
            return None
        ts_ns = sample.timestamp * _MS
        problem = time_problem(ts_ns, latest) if sample.timestamp > 0 else "missing_timestamp"
        if problem:
            result.reject(problem)
            return None
        return int(ts_ns)

    def _gauge(self, name: str, resource: Labels, attrs: Labels, samples: Any,
               out: Observations, result: IngestResult, now: float, latest: int) -> None:
        key = SeriesKey(name, resource, attrs)
        for sample in samples:
            ts_ns = self._usable(sample, result, latest)
            if ts_ns is None:
                continue
            status = self.sources.advance(("prometheus", key), 0, ts_ns, None, now)[0]
            if status in (OUT_OF_ORDER, "series_limit"):
                result.reject(status)
                continue
            result.accepted += 1
            out.add(key, ts_ns, sample.value)

    def _counter(self, name: str, resource: Labels, attrs: Labels, samples: Any,
                 out: Observations, result: IngestResult, now: float, latest: int) -> None:
        key = SeriesKey(f"{name}:rate", resource, attrs)
        for sample in samples:
            ts_ns = self._usable(sample, result, latest)
            if ts_ns is None:
                continue
            status, prev_ts, prev = self.sources.advance(
                ("prometheus", key), 0, ts_ns, sample.value, now, hold_partial=True)
            if status in (OUT_OF_ORDER, "series_limit"):
                result.reject(status)
                continue
            result.accepted += 1
            if status in (FIRST, PARTIAL):
                result.skip(status)
            elif sample.value < prev:
                result.skip("counter_reset")  # the process restarted: no interval to rate
            else:
                out.add(key, ts_ns, per_second(sample.value - prev, ts_ns - prev_ts),
                        seconds(ts_ns - prev_ts))
