"""The compiled path of an OTLP traces request: spans counted and scored without a Python step.

``TracesExtractor.extract`` reads every span of the decoded message in Python (its times,
kind, name, status and ids), builds a ``SeriesKey`` per span for its outlier point and a
``(trace_id, span_id)`` pair per span for its exemplar. This path takes the request's bytes
as well (the receivers keep them): ``traces_wire.scan`` turns them into a table of
numbers, ``traces_wire.operations`` tells each resource's operations apart by their name
bytes, and the steps the walk runs on arrays (time checks, windows, late spans) run on
the table's columns. Python works per resource and per operation, not per span.

Span outliers come out as slots (``SlottedRows``) when every operation of the request
already has its outlier series; otherwise (an operation's first spans, or its first since
its series expired) as keys, as the walk gives them, which creates the series. A request
the scan cannot model exactly (a field it reads with another wire type, malformed bytes,
bytes that are not the request's) is left to the walk whole: ``extract`` then returns
False having changed nothing.

Outcomes are identical to the walk's: the same counts, windows, outlier points in the same
order, exemplars and versions (``tests/processors/test_span_path.py`` compares the two).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.signals.otlp_resources import (
    note_version,
    resource_groups,
    service_labels,
)
from otel_anomaly.processors.signals.span_ids import SpanIds
from otel_anomaly.processors.signals.traces import TIME_REJECTIONS, operation_labels
from otel_anomaly.processors.signals.traces_wire import (
    FULL,
    OK,
    S_GROUP,
    S_KIND,
    S_NAME_HI,
    S_NAME_LO,
    SPAN_COLUMNS,
    T_END,
    count_spans,
    kept_spans,
    operation_names,
    operations,
    scan,
)
from otel_anomaly.processors.types import (
    IngestResult,
    Labels,
    Observations,
    SeriesKey,
    SlottedRows,
)

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from otel_anomaly.processors.series.index import SeriesIndex
    from otel_anomaly.processors.signals.traces import TracesExtractor

_KEEP_ROWS = 1 << 16  # tables up to this many spans are kept between requests
_KNOWN_OPERATIONS = 1 << 16  # operations whose labels are kept between requests
# Requests' operation lists remembered (``SpanPath._request_labels``), each key at most
# this long: at most 16 MiB of keys, whatever clients name their spans.
_KNOWN_REQUESTS, _MAX_KEY_BYTES = 256, 1 << 16


class _Scanned:
    """One request's spans as columns (kept rows only where said), and its operations."""

    def __init__(self, data: bytes, spans: NDArray[np.int64], times: NDArray[np.uint64],
                 latest: int) -> None:
        self.data = data
        self.buffer = np.frombuffer(data, np.uint8)
        self.groups = spans[:, S_GROUP]
        self.ends = times[:, T_END]
        n = len(spans)
        rows, end_ns = np.empty(n, np.int64), np.empty(n, np.int64)
        duration_ms, errors = np.empty(n, np.float64), np.empty(n, np.bool_)
        ids, reasons = np.empty((n, 4), np.int64), np.zeros(3, np.int64)
        kept = kept_spans(spans, times, np.uint64(latest), rows, end_ns, duration_ms, errors,
                          ids, reasons)
        self.rejected = dict(zip(TIME_REJECTIONS, reasons.tolist(), strict=True))
        self.rows, self.end_ns = rows[:kept], end_ns[:kept]
        self.duration_ms, self.errors, self.ids = duration_ms[:kept], errors[:kept], ids[:kept]
        self.op_of = np.empty(kept, np.int64)
        first_row = np.empty(kept, np.int64)
        n_ops = operations(self.buffer, spans, self.rows, self.op_of, first_row)
        self.first_row = first_row[:n_ops]
        self.spans = spans

    def operation_labels(self, known: dict[tuple[int, bytes], Labels]) -> list[Labels]:
        """Each operation's attributes; raises ``UnicodeDecodeError`` on a name upb refused.

        ``known``: the labels of operations seen before, by kind and name bytes (a request
        names the same operations as the last one: no decoding or new tuples for them).
        """
        data = self.data
        first = self.spans[self.first_row]
        out = []
        for kind, lo, hi in zip(first[:, S_KIND].tolist(), first[:, S_NAME_LO].tolist(),
                                first[:, S_NAME_HI].tolist(), strict=True):
            name = data[lo:hi]
            labels = known.get((kind, name))
            if labels is None:
                if len(known) >= _KNOWN_OPERATIONS:  # bounded: names come from clients
                    known.clear()
                labels = known[kind, name] = operation_labels(kind, name.decode())
            out.append(labels)
        return out

    def exemplars(self) -> list[tuple[bytes, bytes]]:
        """Each kept span's ``(trace_id, span_id)``, as bytes."""
        data = self.data
        return [(data[a:b], data[c:d]) for a, b, c, d in self.ids.tolist()]


class SpanPath:
    """The compiled traces path of one engine (see the module doc).

    Parameters
    ----------
    extractor
        The engine's traces adapter: its windows, settings and what the walk shares.
    index
        The engine's series index (outlier slots are looked up, never created, here).
    """

    def __init__(self, extractor: TracesExtractor, index: SeriesIndex) -> None:
        self.extractor = extractor
        self.index = index
        self.handled = 0  # span outliers scored from slots, ever (a test reads it)
        self._spans = np.empty((0, SPAN_COLUMNS), np.int64)
        self._times = np.empty((0, 2), np.uint64)
        self._operations: dict[tuple[int, bytes], Labels] = {}  # ``_Scanned.operation_labels``
        # (service, operation) -> its outlier series' slot and key (``_outlier_slot``)
        self._outlier_slots_of: dict[tuple[Labels, Labels], tuple[int, SeriesKey]] = {}
        # A client sends the same operations request after request: their labels, and
        # with the services their outlier slots, by the request's ``operation_names``.
        self._names = np.empty(4096, np.uint8)
        self._request_labels: dict[bytes, list[Labels]] = {}
        self._request_slots: dict[tuple[bytes, tuple[Labels, ...]], NDArray[np.intp]] = {}
        self._request_groups: dict[tuple[bytes, int],
                                   tuple[Labels, list[tuple[Labels, Labels]]]] = {}
        self._slots_generation = index.generation  # the index's, when those slots were found

    def extract(
        self, request: ExportTraceServiceRequest, data: bytes, out: Observations,
        result: IngestResult, now: float, latest: int,
    ) -> bool:
        """Like ``TracesExtractor.extract``; False (nothing done) if the bytes need the walk.

        ``data`` must be the serialized ``request``.
        """
        scanned = self._scan(request, data, latest)
        if scanned is None:
            return False
        names = self._operation_names(scanned)
        labels = self._request_labels.get(names)
        if labels is None:
            try:
                labels = scanned.operation_labels(self._operations)
            except UnicodeDecodeError:  # not the bytes the message came from
                return False
            if len(names) <= _MAX_KEY_BYTES:
                if len(self._request_labels) >= _KNOWN_REQUESTS:
                    self._request_labels.clear()
                self._request_labels[names] = labels
        for reason, n in scanned.rejected.items():
            result.reject(reason, n)
        result.accepted += len(scanned.rows)
        operations = self._count(request, scanned, names, labels, out, result, now, latest)
        slots = (self._outlier_slots(scanned, names, operations, out)
                 if operations is not None else None)
        extractor = self.extractor
        extractor.closed_features(extractor.windows.close_ready(), out)
        if slots is not None:
            # The RED points ``out`` holds now come after every outlier, as in the walk.
            n = len(slots)
            self.handled += n
            out.slotted = SlottedRows(slots, scanned.end_ns, scanned.duration_ms,
                                      np.arange(n, dtype=np.int64), [0], [n], len(out),
                                      SpanIds(data, scanned.ids))
        return True

    def _scan(self, request: ExportTraceServiceRequest, data: bytes, latest: int,
              ) -> _Scanned | None:
        """The request's spans and operations; None if the walk must take it."""
        buffer = np.frombuffer(data, np.uint8)
        # Into the last request's tables: counting first (a walk of the bytes) only when
        # they are too small.
        status, n_spans, n_groups = scan(buffer, self._spans, self._times)
        if status == FULL:
            n = count_spans(buffer)
            if n < 0:
                return None
            self._spans = np.empty((n, SPAN_COLUMNS), np.int64)
            self._times = np.empty((n, 2), np.uint64)
            status, n_spans, n_groups = scan(buffer, self._spans, self._times)
        spans, times = self._spans[:n_spans], self._times[:n_spans]
        if len(self._spans) > _KEEP_ROWS:  # a large request's tables must not stay allocated
            self._spans, self._times = self._spans[:0].copy(), self._times[:0].copy()
        if status != OK or n_groups != len(request.resource_spans):
            return None
        per_group = np.bincount(spans[:, S_GROUP], minlength=n_groups)
        if per_group.tolist() != [sum(len(ss.spans) for ss in rs.scope_spans)
                                  for rs in request.resource_spans]:
            return None
        # Views of the kept tables: nothing derived from them outlives the request.
        return _Scanned(data, spans, times, latest)

    def _operation_names(self, scanned: _Scanned) -> bytes:
        """The request's operations as one key (``traces_wire.operation_names``)."""
        n = operation_names(scanned.buffer, scanned.spans, scanned.first_row, self._names)
        if n < 0:
            self._names = np.empty(max(-n, 2 * len(self._names)), np.uint8)
            n = operation_names(scanned.buffer, scanned.spans, scanned.first_row,
                                self._names)
        names = self._names[:n].tobytes()
        if len(self._names) > _MAX_KEY_BYTES:  # a large request's buffer is not kept
            self._names = np.empty(4096, np.uint8)
        return names

    def _window_groups(self, names: bytes, g: int, service: Labels, operations: list[Labels],
                       ) -> list[tuple[Labels, Labels]]:
        """Resource group ``g``'s window groups: an earlier request's list, if it had them.

        The same operations and service are the same list object, which the windows know
        (``_OpenWindow.numbers``).
        """
        known = self._request_groups.get((names, g))
        if known is not None and known[0] == service:
            return known[1]
        groups = self.extractor.window_groups(service, operations)
        if len(names) <= _MAX_KEY_BYTES:
            if len(self._request_groups) >= _KNOWN_REQUESTS:
                self._request_groups.clear()
            self._request_groups[names, g] = (service, groups)
        return groups

    def _count(
        self, request: ExportTraceServiceRequest, scanned: _Scanned, names: bytes,
        labels: list[Labels], out: Observations, result: IngestResult, now: float, latest: int,
    ) -> list[tuple[Labels, list[Labels]]] | None:
        """Count each resource's spans into windows, as the walk; its service and operations.

        ``names``: the request's operations (``_operation_names``). Returns None when span
        outliers are off.
        """
        extractor = self.extractor
        n_groups = len(request.resource_spans)
        bounds = np.searchsorted(scanned.groups, np.arange(n_groups + 1)).tolist()
        kept = np.searchsorted(scanned.groups[scanned.rows], np.arange(n_groups + 1)).tolist()
        op_groups = scanned.groups[scanned.first_row]
        op_bounds = np.searchsorted(op_groups, np.arange(n_groups + 1)).tolist()
        operations: list[tuple[Labels, list[Labels]]] = []
        for g, (_, resource, version) in enumerate(resource_groups(request.resource_spans)):
            if bounds[g] == bounds[g + 1]:
                continue
            service = service_labels(resource)
            lo, hi = kept[g], kept[g + 1]
            if lo < hi:
                first, last = op_bounds[g], op_bounds[g + 1]
                extractor.count_into_windows(
                    service, resource,
                    self._window_groups(names, g, service, labels[first:last]),
                    (scanned.op_of[lo:hi] - first).astype(np.intp), scanned.end_ns[lo:hi],
                    scanned.errors[lo:hi], scanned.duration_ms[lo:hi], result)
                if extractor.span_outliers:
                    operations.append((service, labels[first:last]))
            if extractor.span_coverage is not None:
                extractor.span_coverage.saw_spans([service], now)
            if version:
                note_version(out, service, version,
                             scanned.ends[bounds[g]:bounds[g + 1]].tolist(), latest)
        return operations if extractor.span_outliers else None

    def _outlier_slots(
        self, scanned: _Scanned, names: bytes, operations: list[tuple[Labels, list[Labels]]],
        out: Observations,
    ) -> NDArray[np.intp] | None:
        """Each kept span's outlier slot, when every operation's series exists.

        Otherwise the outliers go into ``out`` as keys, as the walk gives them (which
        creates the series), and None is returned. ``names``: the request's operations
        (``_operation_names``); with the services they are the key to the slots an
        earlier request found, kept until the index frees a slot.
        """
        if not len(scanned.rows):
            return None
        if self._slots_generation != self.index.generation:
            self._request_slots.clear()
            self._slots_generation = self.index.generation
        known = (names, tuple(service for service, _ in operations))
        per_operation = self._request_slots.get(known)
        if per_operation is None:
            slots = [self._outlier_slot(service, operation)
                     for service, ops in operations for operation in ops]
            if None in slots:
                keys = [key for service, ops in operations
                        for key in self.extractor.outlier_keys(service, ops)]
                out.extend([keys[o] for o in scanned.op_of.tolist()], scanned.end_ns.tolist(),
                           scanned.duration_ms.tolist(), scanned.exemplars())
                return None
            per_operation = np.asarray(slots, np.intp)
            if len(names) <= _MAX_KEY_BYTES:
                if len(self._request_slots) >= _KNOWN_REQUESTS:
                    self._request_slots.clear()
                self._request_slots[known] = per_operation
        found: NDArray[np.intp] = per_operation[scanned.op_of]
        return found

    def _outlier_slot(self, service: Labels, operation: Labels) -> int | None:
        """The slot of the operation's outlier series, if it has one.

        Kept between requests with the key the index holds: while the index still holds
        that very key in that slot, the slot is the series' (no key to build and hash).
        """
        known = self._outlier_slots_of.get((service, operation))
        if known is not None and self.index.holds(*known):
            return known[0]
        slot = self.index.slot(self.extractor.outlier_key(service, operation))
        if slot is not None:
            if len(self._outlier_slots_of) >= _KNOWN_OPERATIONS:  # bounded, as operations
                self._outlier_slots_of.clear()
            self._outlier_slots_of[service, operation] = (slot, self.index.key(slot))
        return slot
