"""Logs to per-service record rates (by severity) and error-record ratios."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, cast

import numpy as np
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_anomaly.processors.settings import EVENTS_SCOPE_NAME
from otel_anomaly.processors.signals.adapter import AdapterContext, Signal
from otel_anomaly.processors.signals.otlp_resources import (
    note_version,
    resource_groups,
    service_labels,
)
from otel_anomaly.processors.signals.windows import ClosedCell, WindowAggregator
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey

RATE_METRIC = "logs_records_total:rate"
ERROR_RATIO_METRIC = "logs_error:ratio"
_ERROR_FROM = SeverityNumber.SEVERITY_NUMBER_ERROR
_HIGHEST_SEVERITY = SeverityNumber.SEVERITY_NUMBER_FATAL4
_SEVERITY_CLASSES = ("UNSPECIFIED", "TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
_TEXT_SEVERITY = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
    "CRITICAL": 21, "FATAL": 21,
}


def severity_name(record: LogRecord) -> tuple[str, int]:
    """Severity class (TRACE, DEBUG, INFO, WARN, ERROR, FATAL or UNSPECIFIED) and number.

    The number wins; a record with only a text severity is classified by that text.
    """
    number = severity_number(record)
    return _SEVERITY_CLASSES[severity_class(number)], number


def severity_number(record: LogRecord) -> int:
    """The record's severity number, from its text when it has none; 0 if unknown.

    A number outside the data model's 1 to 24 is no number: the text decides (a -3 with
    "ERROR" is an error, a 99 alone is unspecified, not FATAL).
    """
    number = int(record.severity_number)
    if not 1 <= number <= _HIGHEST_SEVERITY:
        number = _TEXT_SEVERITY.get(record.severity_text.upper(), 0) if record.severity_text else 0
    return number


def severity_class(number: int) -> int:
    """Index in ``_SEVERITY_CLASSES`` of a severity number (0: UNSPECIFIED)."""
    return min((number - 1) // 4, 5) + 1 if number > 0 else 0


class LogsExtractor:
    """The logs adapter: records into (service, severity) and per-service windows."""

    signal: ClassVar[Signal] = "logs"
    request_type: ClassVar[type[ExportLogsServiceRequest]] = ExportLogsServiceRequest

    def __init__(self, by_severity: WindowAggregator, by_service: WindowAggregator) -> None:
        self.by_severity = by_severity
        self.by_service = by_service
        self.window_s = by_severity.window_ns / 1e9

    @classmethod
    def create(cls, context: AdapterContext) -> LogsExtractor:
        """The engine's logs adapter: windows of ``logs_window_s``."""
        settings = context.settings
        window_ns, lateness_ns = int(settings.logs_window_s * 1e9), int(settings.lateness_s * 1e9)
        by_severity = WindowAggregator(window_ns, lateness_ns)
        return cls(by_severity, WindowAggregator(window_ns, lateness_ns))

    @staticmethod
    def count(request: ExportLogsServiceRequest) -> int:
        """Log records in the request."""
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)

    @staticmethod
    def resources(request: ExportLogsServiceRequest) -> Iterator[Resource]:
        """The resources that sent the request's records."""
        return (rl.resource for rl in request.resource_logs)

    def extract(
        self, request: ExportLogsServiceRequest, out: Observations, result: IngestResult,
        now: float, latest: int,
    ) -> None:
        """Count every record; append the features of windows that closed to ``out``.

        Records stamped after ``latest`` (ns) are rejected, as spans are (``now`` is not
        used: windows run on event time).
        """
        for rl, resource, version in resource_groups(request.resource_logs):
            service = service_labels(resource)
            records = []
            for sl in rl.scope_logs:
                if sl.scope.name == EVENTS_SCOPE_NAME:  # our own events, sent back to us
                    result.accepted += len(sl.log_records)
                    result.skip("own_events", len(sl.log_records))
                    continue
                records += sl.log_records
            if records:
                times = self._records(service, resource, records, result, latest)
                note_version(out, service, version, times, latest)
        for cell in self.by_severity.close_ready():
            service, severity = cast(tuple[Labels, Labels], cell.group)
            out.add(SeriesKey(RATE_METRIC, service, severity), cell.end_unix_nano,
                    cell.count / self.window_s, self.window_s)
        self._ratios(self.by_service.close_ready(), out)

    def state_dict(self) -> dict[str, Any]:
        """The open windows, by severity and by service."""
        return {"by_severity": self.by_severity.state_dict(),
                "by_service": self.by_service.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the open windows."""
        self.by_severity.load_state_dict(state["by_severity"])
        self.by_service.load_state_dict(state["by_service"])

    def _records(
        self, service: Labels, resource: Labels, records: list[LogRecord],
        result: IngestResult, latest: int,
    ) -> list[int]:
        """Count one resource's records into their windows; their event times.

        Field reads are one pass each; checks and windows work on arrays.
        """
        # Event time is when it happened; a record without it is placed at when it was seen.
        times: list[int] = [r.time_unix_nano or r.observed_time_unix_nano for r in records]
        ts = np.array(times, np.uint64)
        missing = ts == 0
        bad = missing | (ts > np.uint64(latest))
        result.reject("missing_timestamp", int(np.count_nonzero(missing)))
        result.reject("future_timestamp", int(np.count_nonzero(bad & ~missing)))
        rows = np.flatnonzero(~bad)
        result.accepted += len(rows)
        if not len(rows):
            return times
        kept = [records[i] for i in rows.tolist()]
        numbers = np.fromiter(map(severity_number, kept), np.int64, len(kept))
        classes = np.where(numbers > 0, np.minimum((numbers - 1) // 4, 5) + 1, 0)
        groups = [(service, (("severity", name),)) for name in _SEVERITY_CLASSES]
        event_ns = ts[rows].astype(np.int64)
        counted = self.by_severity.add_many(groups, classes, event_ns, source=service,
                                            sender=resource)
        counted &= self.by_service.add_many([service], np.zeros(len(kept), np.intp), event_ns,
                                            source=service, sender=resource,
                                            errors=numbers >= _ERROR_FROM)
        result.skip("late", len(counted) - int(np.count_nonzero(counted)))
        return times

    @staticmethod
    def _ratios(cells: list[ClosedCell], out: Observations) -> None:
        for cell in cells:
            if cell.count:
                service = cast(Labels, cell.group)  # by_service groups by service labels
                out.add(SeriesKey(ERROR_RATIO_METRIC, service, ()),
                        cell.end_unix_nano, cell.errors / cell.count, cell.count)
