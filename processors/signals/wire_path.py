"""The compiled path of an OTLP metrics request: its number points scored without a Python step.

``MetricsExtractor.extract`` walks every point of the decoded message in Python (about 5 µs
a point, most of it attribute reads and key building). This path takes the request's bytes
as well (the receivers keep them): ``metrics_wire.scan`` turns them into tables,
``wire_rows.classify`` checks each gauge and sum point and finds its stream and slot in the
``WireCache``, ``wire_rows.advance`` does the stream bookkeeping (and a counter's rate), and
the scored points come out as slots, times and values (``SlottedRows``), never as
``SeriesKey`` objects.

Gauges and sums take it (an up-down counter's cumulative value as a level, other sums as
rates). Everything else goes through the Python walk, in the same request, in request
order: histograms, summaries, sums of an unknown temporality, and a point whose series the
cache does not know yet (its first point, or its first since the cache started over). A
point whose stream or slot does not exist yet is walked, which creates them; the next
request finds them and fills the cache. Series the multivariate stage reads are always
walked (it reads keys).

A request the scan cannot model exactly (a gauge or sum it marks unusual, malformed bytes,
spanmetrics-connector scopes, whose coverage rule is per scope) is left to the Python walk
whole: ``extract`` then returns False having changed nothing.

Outcomes are identical to the Python walk: the same counts, the same streams advanced, the
same rows in the same order (``SlottedRows.order``), hence the same scores and events
(``tests/processors/test_wire_path.py`` compares the two). One difference in principle: a
partial interval is detected comparing nanoseconds as float64 here, as exact integers in
Python, which only differ for intervals over 104 days.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.multivariate.features import SOURCE_METRICS
from otel_anomaly.processors.signals.metrics import number_stream
from otel_anomaly.processors.signals.metrics_wire import (
    GAUGE,
    GROUP_COLUMNS,
    M_GROUP,
    M_INDEX,
    M_KIND,
    M_MONOTONIC,
    M_OK,
    M_SCOPE,
    M_TEMPORALITY,
    METRIC_COLUMNS,
    OK,
    P_INDEX,
    P_METRIC,
    P_TIME,
    POINT_COLUMNS,
    SUM,
    scan,
    scratch,
    table_sizes,
)
from otel_anomaly.processors.signals.otlp_resources import (
    labels_of,
    note_version,
    resource_groups,
    service_labels,
)
from otel_anomaly.processors.signals.span_coverage import SPANMETRICS_SCOPE
from otel_anomaly.processors.signals.wire_cache import WireCache
from otel_anomaly.processors.signals.wire_rows import (
    CUMULATIVE_RATE,
    DELTA_RATE,
    FUTURE_TIME,
    LEVEL,
    MISSING_TIME,
    NO_VALUE,
    NON_FINITE,
    OUT_OF_ORDER,
    PARTIAL,
    RESET,
    SCORED,
    UNKNOWN,
    UNRATED,
    advance,
    classify,
)
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey, SlottedRows

if TYPE_CHECKING:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from otel_anomaly.processors.series.index import SeriesIndex
    from otel_anomaly.processors.signals.metrics import MetricsExtractor

_DELTA, _CUMULATIVE = 1, 2  # AggregationTemporality
_POINT_SHIFT = 32  # a row's order: its metric's index above its point's index
_KEEP_TABLES_BYTES = 4 << 20  # larger requests get scan tables of their own, freed after
_REJECTED = {MISSING_TIME: "missing_timestamp", FUTURE_TIME: "future_timestamp",
             NON_FINITE: "non_finite", OUT_OF_ORDER: "out_of_order"}


class _Tables:
    """The scan's output arrays, kept between requests (the engine has one thread)."""

    def __init__(self) -> None:
        self.points = np.empty((0, POINT_COLUMNS), np.int64)
        self.values = np.empty(0, np.float64)
        self.metrics = np.empty((0, METRIC_COLUMNS), np.int64)
        self.groups = np.empty((0, GROUP_COLUMNS), np.int64)
        self.scratch = scratch()

    def fit(self, n_bytes: int) -> None:
        n_points, n_metrics, n_groups = table_sizes(n_bytes)
        if len(self.values) < n_points:
            self.points = np.empty((n_points, POINT_COLUMNS), np.int64)
            self.values = np.empty(n_points, np.float64)
        if len(self.metrics) < n_metrics:
            self.metrics = np.empty((n_metrics, METRIC_COLUMNS), np.int64)
        if len(self.groups) < n_groups:
            self.groups = np.empty((n_groups, GROUP_COLUMNS), np.int64)


class WirePath:
    """The compiled metrics path of one engine (see the module doc).

    Parameters
    ----------
    extractor
        The engine's metrics adapter: its stream table, resources and the Python walk.
    index
        The engine's series index (slots are looked up, never created, here).
    """

    def __init__(self, extractor: MetricsExtractor, index: SeriesIndex) -> None:
        self.extractor = extractor
        self.sources = extractor.sources
        self.index = index
        self.cache = WireCache(2 * index.max_series)
        self.handled = 0  # points the kernels scored, ever (a test reads it)
        self._tables = _Tables()

    def extract(
        self, request: ExportMetricsServiceRequest, data: bytes, out: Observations,
        result: IngestResult, now: float, latest: int,
    ) -> bool:
        """Like ``MetricsExtractor.extract``; False (nothing done) if the bytes need the walk.

        ``data`` must be the serialized ``request``. Scored gauge points go to
        ``out.slotted``; the rest of the request's observations to ``out`` as usual.
        """
        try:
            return self._extract(request, data, out, result, now, latest)
        finally:
            if len(data) > _KEEP_TABLES_BYTES:
                # Bounds of a large request (two bytes a row) must not stay allocated, nor
                # the rows it wrote stay resident, for every later request.
                self._tables = _Tables()

    def _extract(
        self, request: ExportMetricsServiceRequest, data: bytes, out: Observations,
        result: IngestResult, now: float, latest: int,
    ) -> bool:
        tables = self._tables
        try:
            tables.fit(len(data))
        except MemoryError:  # bounds of a huge request; the walk needs no more than before
            return False
        status, n_points, n_metrics, n_groups = scan(
            np.frombuffer(data, np.uint8), tables.points, tables.values, tables.metrics,
            tables.groups, *tables.scratch)
        if status != OK or n_groups != len(request.resource_metrics):
            return False
        points, metrics = tables.points[:n_points], tables.metrics[:n_metrics]
        kind = metrics[:, M_KIND]
        number = (kind == GAUGE) | (kind == SUM)
        if not metrics[number, M_OK].all() or _has_spanmetrics(request):
            return False
        temporality, monotonic = metrics[:, M_TEMPORALITY], metrics[:, M_MONOTONIC]
        cumulative, delta = (kind == SUM) & (temporality == _CUMULATIVE), (kind == SUM) & (
            temporality == _DELTA)
        fast = (kind == GAUGE) | cumulative | delta
        # How each metric's streams move on: levels (gauges, up-down counters) or rates.
        mode_of = np.where(cumulative & (monotonic == 1), CUMULATIVE_RATE,
                           np.where(delta, DELTA_RATE, LEVEL))
        groups = [(labels, version) for _, labels, version
                  in resource_groups(request.resource_metrics)]
        resources = [self.extractor.canonical(labels) for labels, _ in groups]
        rows = np.flatnonzero(fast[points[:, P_METRIC]]).astype(np.int64)
        self.cache.follow((self.sources.generation, self.index.generation))
        keys = np.empty((len(rows), 2), np.int64)
        outcome = np.empty(len(rows), np.int64)
        found = np.empty((len(rows), 2), np.int64)
        cache = self.cache
        classify(rows, points, tables.values, metrics, tables.groups[:n_groups], latest,
                 cache.table, keys, outcome, found)
        walk = _Walker(self, request, metrics, resources, out, result, now, latest)
        unknown = np.flatnonzero(outcome == UNKNOWN)
        if len(unknown):
            self._resolve(walk, rows[unknown], keys[unknown], outcome, found, unknown)
        walk.slow_units(np.flatnonzero(~fast), rows[outcome == UNKNOWN])
        arrays = self.sources.arrays
        values, exposure = np.empty(len(rows), np.float64), np.empty(len(rows), np.float64)
        advance(rows, points, tables.values, mode_of[points[rows, P_METRIC]], outcome, found,
                arrays.start, arrays.last_ts, arrays.newest_ts, arrays.interval,
                arrays.last_seen, arrays.level, now, values, exposure)
        _count(outcome, result)
        scored = np.flatnonzero(outcome == SCORED)
        self.handled += len(scored)
        picked = rows[scored]
        order = (points[picked, P_METRIC] << _POINT_SHIFT) | points[picked, P_INDEX]
        rated = exposure[scored]  # the seconds of each counter's rate (NaN: a level)
        out.slotted = SlottedRows(found[scored, 1], points[picked, P_TIME], values[scored],
                                  order, walk.starts, walk.orders, len(out),
                                  counts=rated if np.isfinite(rated).any() else None)
        group_of = metrics[points[picked, P_METRIC], M_GROUP]
        walk.versions(groups, out.slotted.ts_unix_nano, group_of)
        return True

    def _resolve(
        self, walk: _Walker, rows: NDArray[np.int64], keys: NDArray[np.int64],
        outcome: NDArray[np.int64], found: NDArray[np.int64], at: NDArray[np.intp],
    ) -> None:
        """Find the streams and slots of points the cache does not know (Python, once each).

        A point whose stream and slot both exist is scored by the kernel from now on; one
        whose stream or slot does not exist yet stays ``UNKNOWN`` for the Python walk,
        which creates them as it always did.
        """
        resolved: list[int] = []
        ids: list[tuple[int, int]] = []
        for i, row in zip(at.tolist(), rows.tolist(), strict=True):
            tag, name, resource, attrs = walk.stream(row)
            if name in SOURCE_METRICS:  # the multivariate stage reads its points: walked
                continue
            sid = self.sources.sid((tag, name, resource, attrs))
            slot = self.index.slot(SeriesKey(name, resource, attrs)) if sid is not None else None
            if slot is not None and sid is not None:
                outcome[i] = SCORED
                found[i] = sid, slot
                resolved.append(i)
                ids.append((sid, slot))
        if resolved:
            picked = np.searchsorted(at, resolved)
            self.cache.insert(keys[picked, 0], keys[picked, 1], np.array(ids, np.int64))


def _has_spanmetrics(request: ExportMetricsServiceRequest) -> bool:
    """Whether a scope is the spanmetrics connector's (its coverage rule is the walk's)."""
    return any(sm.scope.name == SPANMETRICS_SCOPE
               for rm in request.resource_metrics for sm in rm.scope_metrics)


def _count(outcome: NDArray[np.int64], result: IngestResult) -> None:
    """Count the compiled rows' outcomes as the walk would have."""
    counts = np.bincount(outcome, minlength=UNRATED + 1).tolist()
    result.accepted += sum(counts[code] for code in (SCORED, NO_VALUE, PARTIAL, RESET, UNRATED))
    result.skip("no_recorded_value", counts[NO_VALUE])
    result.skip("partial_interval", counts[PARTIAL])
    result.skip("counter_reset", counts[RESET])
    for code, reason in _REJECTED.items():
        result.reject(reason, counts[code])


class _Walker:
    """The Python walk of what the kernels leave: whole metrics, or single unknown points."""

    def __init__(
        self, path: WirePath, request: ExportMetricsServiceRequest, metrics: NDArray[np.int64],
        resources: list[Labels], out: Observations, result: IngestResult, now: float,
        latest: int,
    ) -> None:
        self.path, self.request, self.metrics, self.resources = path, request, metrics, resources
        self.out, self.result, self.now, self.latest = out, result, now, latest
        self.starts: list[int] = []  # first row in ``out`` of each walked unit
        self.orders: list[int] = []  # and its place in the request
        self.unit_groups: list[int] = []

    def metric(self, m: int) -> Any:
        """The decoded ``Metric`` of table row ``m``."""
        g, s, i = self.metrics[m, M_GROUP], self.metrics[m, M_SCOPE], self.metrics[m, M_INDEX]
        return self.request.resource_metrics[g].scope_metrics[s].metrics[i]

    def _point(self, row: int) -> tuple[int, Any, Any]:
        points = self.path._tables.points  # noqa: SLF001 - the scan's table, this module's own
        m, p = int(points[row, P_METRIC]), int(points[row, P_INDEX])
        metric = self.metric(m)
        data = metric.gauge if metric.WhichOneof("data") == "gauge" else metric.sum
        return m, metric, data.data_points[p]

    def stream(self, row: int) -> tuple[str, str, Labels, Labels]:
        """The ``SourceTable`` key of a gauge point: what the walk would build for it."""
        m, metric, point = self._point(row)
        tag, name = number_stream(metric)
        resource = self.resources[int(self.metrics[m, M_GROUP])]
        return tag, name, resource, labels_of(point.attributes)

    def slow_units(self, metrics: NDArray[np.intp], rows: NDArray[np.int64]) -> None:
        """Walk whole metrics and single points, in request order."""
        points = self.path._tables.points  # noqa: SLF001
        units = [(m << _POINT_SHIFT, m, -1) for m in metrics.tolist()]
        units += [(int(points[r, P_METRIC]) << _POINT_SHIFT | int(points[r, P_INDEX]),
                   int(points[r, P_METRIC]), r) for r in rows.tolist()]
        units.sort()
        walks: dict[int, Any] = {}
        for order, m, row in units:
            g = int(self.metrics[m, M_GROUP])
            walk = walks.get(g)
            if walk is None:
                walk = walks[g] = self.path.extractor.walk(
                    self.resources[g], self.out, self.result, self.now, self.latest)
            self.starts.append(len(self.out))
            self.orders.append(order)
            self.unit_groups.append(g)
            if row < 0:
                walk.metric(self.metric(m))
            else:
                _, metric, point = self._point(row)
                tag, name = number_stream(metric)
                if tag == "sum":
                    walk.sum(metric, [point])
                else:
                    walk.gauge_points(name, [point], tag)

    def versions(self, groups: list[tuple[Labels, str]], fast_ts: NDArray[np.int64],
                 fast_groups: NDArray[np.int64]) -> None:
        """Each resource's ``service.version`` from its earliest scored point, as the walk."""
        bounds = [*self.starts, len(self.out)]
        for g, (_, version) in enumerate(groups):
            if not version:
                continue
            times = fast_ts[fast_groups == g].tolist()
            for u, unit_group in enumerate(self.unit_groups):
                if unit_group == g:
                    times += self.out.ts[bounds[u]:bounds[u + 1]]
            note_version(self.out, service_labels(self.resources[g]), version, times,
                         self.latest)
