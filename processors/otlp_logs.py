"""Logs to per-service record rates (by severity) and error-record ratios."""

from __future__ import annotations

from typing import cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from otel_anomaly.processors.deploys import split_version
from otel_anomaly.processors.otlp_common import labels_of, service_labels, time_problem
from otel_anomaly.processors.types import IngestResult, Labels, Observations, SeriesKey
from otel_anomaly.processors.windows import ClosedCell, WindowAggregator

RATE_METRIC = "logs_records_total:rate"
ERROR_RATIO_METRIC = "logs_error:ratio"
_ERROR_FROM = SeverityNumber.SEVERITY_NUMBER_ERROR
_TEXT_SEVERITY = {
    "TRACE": 1, "DEBUG": 5, "INFO": 9, "NOTICE": 10, "WARN": 13, "WARNING": 13, "ERROR": 17,
    "CRITICAL": 21, "FATAL": 21,
}


def severity_name(record: LogRecord) -> tuple[str, int]:
    """Severity class (TRACE, DEBUG, INFO, WARN, ERROR, FATAL or UNSPECIFIED) and number.

    The number wins; a record with only a text severity is classified by that text.
    """
    number = int(record.severity_number)
    if number == 0 and record.severity_text:
        number = _TEXT_SEVERITY.get(record.severity_text.upper(), 0)
    if number <= 0:
        return "UNSPECIFIED", 0
    names = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    return names[min((number - 1) // 4, 5)], number


class LogsExtractor:
    """Counts records into (service, severity) and per-service windows."""

    def __init__(self, by_severity: WindowAggregator, by_service: WindowAggregator) -> None:
        self.by_severity = by_severity
        self.by_service = by_service
        self.window_s = by_severity.window_ns / 1e9

    def extract(
        self, request: ExportLogsServiceRequest, out: Observations, result: IngestResult,
        latest: int,
    ) -> None:
        """Count every record; append the features of windows that closed to ``out``.

        Records stamped after ``latest`` (ns) are rejected, as spans are.
        """
        for rl in request.resource_logs:
            resource, version = split_version(labels_of(rl.resource.attributes))
            service = service_labels(resource)
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    self._record(service, record, result, latest, resource)
            if version:
                times = [r.time_unix_nano or r.observed_time_unix_nano
                         for sl in rl.scope_logs for r in sl.log_records]
                usable = [t for t in times if 0 < t <= latest]
                if usable:
                    out.versions.append((service, version, min(usable)))
        for cell in self.by_severity.close_ready():
            service, severity = cast(tuple[Labels, Labels], cell.group)
            out.add(SeriesKey(RATE_METRIC, service, severity), cell.end_unix_nano,
                    cell.count / self.window_s)
        self._ratios(self.by_service.close_ready(), out)

    def _record(
        self, service: Labels, record: LogRecord, result: IngestResult, latest: int,
        resource: Labels,
    ) -> None:
        # Event time is when it happened; a record without it is placed at when it was seen.
        ts = record.time_unix_nano or record.observed_time_unix_nano
        problem = time_problem(ts, latest)
        if problem:
            result.reject(problem)
            return
        result.accepted += 1
        name, number = severity_name(record)
        error = number >= _ERROR_FROM
        group = (service, (("severity", name),))
        late = not self.by_severity.add(group, ts, source=service, sender=resource)
        late |= not self.by_service.add(service, ts, source=service, sender=resource,
                                        error=error)
        if late:
            result.skip("late")

    @staticmethod
    def _ratios(cells: list[ClosedCell], out: Observations) -> None:
        for cell in cells:
            if cell.count:
                out.add(SeriesKey(ERROR_RATIO_METRIC, cell.group, ()),  # type: ignore[arg-type]
                        cell.end_unix_nano, cell.errors / cell.count, cell.count)
