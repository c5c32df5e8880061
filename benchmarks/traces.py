"""Simulated trace traffic through the Engine: false opens per operation-day, incident delays.

Usage: .venv/bin/python benchmarks/traces.py [--days 4] [--warmup-days 1] [--seed 0]
                                             [--span-outliers]

Four services of three operations each send spans (OTLP trace requests built with
opentelemetry-proto, one per service every 10 s of event time, no sleeps). Each operation's
call rate follows a daily cycle from about 0.5 to about 20 calls/s (its own peak and
phase), 0.5 % of calls fail, and durations are log-normal around the operation's median.
Incidents are injected into the three operations of ``checkout`` only (error bursts of
20-40 % for 2 minutes, latency regressions), at low and at high traffic; the nine
operations of the other services stay quiet.

Printed: anomaly opens per operation-day on the quiet operations, per metric, after the
warm-up days (each is a false alarm); multivariate opens per quiet service-day; and, per
incident, the delay from its onset to the first open on the operation's error ratio
(bursts) or any of its latency quantiles (regressions), and how much of the incident an
anomaly covered: on those series ("held"), and on the service's multivariate score
("service"). Span outliers are off unless
``--span-outliers``: then each request's spans of an operation are also scored as its
span-duration series (4 and the slowest, the built-in rule), and their opens on the quiet
operations count as false alarms too (``traces_span_duration_milliseconds``). Seeded: the
same arguments print the same tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TextIO

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.types import AnomalyEvent, SeriesKey

SECOND = 1_000_000_000
DAY_S = 86_400
WINDOW_S = 10
SERVICES = ("checkout", "cart", "search", "users")
OPERATIONS = ("GET /items", "POST /orders", "GET /health")
ERROR_RATE = 0.005
RATE_LOW, RATE_HIGH = 0.5, 20.0
START_S = 1_700_000_000  # event time of the first span


@dataclass(frozen=True, slots=True)
class Incident:
    """``kind`` on ``operation`` of ``checkout`` from ``start_s`` (after day 0) for ``length_s``."""

    kind: str  # "error_burst" (``size``: error ratio) or "latency" (``size``: factor)
    operation: str
    start_s: float
    length_s: float
    size: float


def incidents(days: float, warmup_days: float) -> list[Incident]:
    """Eight incidents per simulated day after the warm-up, at low and at high traffic.

    (With seed 0 the bursts hit the operations at about 0.5, 0.5, 1.2, 11 and 11 calls/s.)
    """
    out = []
    for day in range(int(warmup_days), int(days)):
        base = day * DAY_S
        out += [
            Incident("error_burst", "POST /orders", base + 0.8 * 3600, 120, 0.2),
            Incident("error_burst", "GET /items", base + 3.5 * 3600, 120, 0.3),
            Incident("error_burst", "POST /orders", base + 9.2 * 3600, 120, 0.2),
            Incident("error_burst", "GET /health", base + 15.7 * 3600, 120, 0.4),
            Incident("error_burst", "GET /items", base + 20.6 * 3600, 120, 0.3),
            Incident("latency", "GET /items", base + 12.1 * 3600, 1800, 3.0),
            Incident("latency", "POST /orders", base + 20.4 * 3600, 3600, 2.0),
            Incident("latency", "GET /health", base + 6.3 * 3600, 1800, 1.6),
        ]
    return out


class Traffic:
    """Seeded spans of every operation, window by window."""

    def __init__(self, seed: int, active: list[Incident]) -> None:
        self.rng = np.random.default_rng(seed)
        n_ops = len(SERVICES) * len(OPERATIONS)
        self.peak = self.rng.uniform(0.6, 1.0, n_ops) * RATE_HIGH
        self.phase = self.rng.uniform(0.0, 1.0, n_ops)
        self.median_ms = self.rng.uniform(20.0, 200.0, n_ops)
        self.active = active
        self.resources = [Resource(attributes=[KeyValue(
            key="service.name", value=AnyValue(string_value=name))]) for name in SERVICES]

    def rate(self, op: int, t_s: float) -> float:
        """Calls per second of operation ``op`` at ``t_s`` seconds into the run."""
        cycle = 0.5 - 0.5 * np.cos(2 * np.pi * (t_s / DAY_S - self.phase[op]))
        return float(RATE_LOW + (self.peak[op] - RATE_LOW) * cycle)

    def _incident(self, service: int, operation: str, t_s: float) -> tuple[float, float]:
        error, slow = ERROR_RATE, 1.0
        if service != 0:
            return error, slow
        for inc in self.active:
            if inc.operation == operation and inc.start_s <= t_s < inc.start_s + inc.length_s:
                if inc.kind == "error_burst":
                    error = inc.size
                else:
                    slow = inc.size
        return error, slow

    def request(self, service: int, t_s: float) -> ExportTraceServiceRequest:
        """The spans ``service`` ended in ``[t_s, t_s + WINDOW_S)``."""
        spans = []
        for j, operation in enumerate(OPERATIONS):
            op = service * len(OPERATIONS) + j
            n = int(self.rng.poisson(self.rate(op, t_s) * WINDOW_S))
            if not n:
                continue
            error, slow = self._incident(service, operation, t_s + WINDOW_S / 2)
            ends = np.sort(self.rng.uniform(0, WINDOW_S, n)) + START_S + t_s
            failed = self.rng.random(n) < error
            durations = self.median_ms[op] * slow * np.exp(0.4 * self.rng.standard_normal(n))
            for end, bad, ms in zip(ends.tolist(), failed.tolist(), durations.tolist(),
                                    strict=True):
                end_ns = int(end * SECOND)
                span = Span(name=operation, kind=Span.SPAN_KIND_SERVER,
                            start_time_unix_nano=end_ns - int(ms * 1e6), end_time_unix_nano=end_ns)
                if bad:
                    span.status.code = Status.STATUS_CODE_ERROR
                spans.append(span)
        return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=self.resources[service], scope_spans=[ScopeSpans(spans=spans)])])


def run(days: float, warmup_days: float, seed: int, span_outliers: bool = False,
        ) -> tuple[list[AnomalyEvent], int]:
    """Every window of every service through a fresh engine; the events and spans sent."""
    engine = Engine(EngineSettings(clock=lambda: 0.0, span_outliers=span_outliers,
                                   series_ttl_s=10 * DAY_S))
    traffic = Traffic(seed, incidents(days, warmup_days))
    events: list[AnomalyEvent] = []
    spans = 0
    for t in range(0, int(days * DAY_S), WINDOW_S):
        for service in range(len(SERVICES)):
            request = traffic.request(service, float(t))
            spans += len(request.resource_spans[0].scope_spans[0].spans)
            events += engine.ingest("traces", request).events
    return events, spans


def _label(key: SeriesKey, name: str) -> str:
    return dict(key.resource).get(name, "") or dict(key.attributes).get(name, "")


def _is_checkout(key: SeriesKey, operation: str, wanted: tuple[str, ...]) -> bool:
    """A series of checkout's ``operation`` ("": the service's own) named like ``wanted``."""
    return (_label(key, "service.name") == "checkout"
            and _label(key, "span.name") == operation and any(w in key.metric for w in wanted))


def _attr(event: AnomalyEvent, name: str) -> str:
    return _label(event.key, name)


def _open_spans(events: list[AnomalyEvent], end_ns: int) -> dict[tuple[SeriesKey, int], int]:
    """Each anomaly's open time to its close time (``end_ns`` if still open), by series."""
    spans: dict[tuple[SeriesKey, int], int] = {}
    opened: dict[SeriesKey, int] = {}
    for event in events:
        if event.kind == "open":
            opened[event.key] = event.ts_unix_nano
        elif event.kind == "close" and event.key in opened:
            spans[(event.key, opened.pop(event.key))] = event.ts_unix_nano
    spans.update({(key, at): end_ns for key, at in opened.items()})
    return spans


def _covered(spans: dict[tuple[SeriesKey, int], int], keep: Callable[[SeriesKey], bool],
             start: float, end: float) -> float:
    """Share of ``[start, end)`` inside an anomaly of a series that ``keep`` selects."""
    marks = sorted((max(at, start), min(until, end)) for (key, at), until in spans.items()
                   if keep(key) and at < end and until > start)
    covered, reach = 0.0, start
    for lo, hi in marks:
        covered += max(0, hi - max(lo, reach))
        reach = max(reach, hi)
    return covered / (end - start)


def report(events: list[AnomalyEvent], days: float, warmup_days: float, out: TextIO) -> None:
    """False opens per quiet operation-day by metric; incident detection delays."""
    scored_from = (START_S + warmup_days * DAY_S) * SECOND
    quiet_days = (days - warmup_days) * (len(SERVICES) - 1)
    opens = [e for e in events if e.kind == "open" and e.ts_unix_nano >= scored_from]
    quiet = [e for e in opens if _attr(e, "service.name") != "checkout"]
    per_metric = Counter(e.key.metric for e in quiet)
    op_days = quiet_days * len(OPERATIONS)
    out.write(f"false opens on quiet operations ({op_days:g} operation-days, "
              f"{quiet_days:g} service-days):\n")
    for metric in sorted(per_metric):
        unit = "service-day" if metric.startswith("service_") else "operation-day"
        per = quiet_days if metric.startswith("service_") else op_days
        out.write(f"  {metric:50s} {per_metric[metric]:5d}  {per_metric[metric] / per:7.3f} "
                  f"per {unit}\n")
    univariate = sum(n for m, n in per_metric.items() if not m.startswith("service_"))
    out.write(f"  {'all operation series':50s} {univariate:5d}  {univariate / op_days:7.3f} "
              "per operation-day\n")
    out.write("incidents on checkout (delay from onset to the first open; share of the "
              "incident covered by an anomaly on those series and on the service's "
              "multivariate score):\n")
    spans = _open_spans(events, int((START_S + days * DAY_S) * SECOND))
    for inc in incidents(days, warmup_days):
        start = (START_S + inc.start_s) * SECOND
        wanted = ("error:ratio",) if inc.kind == "error_burst" else ("milliseconds:p",)
        hits = [e for e in opens if _attr(e, "service.name") == "checkout"
                and _attr(e, "span.name") == inc.operation
                and any(w in e.key.metric for w in wanted)
                and start <= e.ts_unix_nano <= start + (inc.length_s + 600) * SECOND]
        first = min(hits, key=lambda e: e.ts_unix_nano, default=None)
        found = ("missed" if first is None else
                 f"{(first.ts_unix_nano - start) / SECOND:6.0f} s  {first.key.metric}")
        end = start + int(inc.length_s * SECOND)
        held = _covered(spans, partial(_is_checkout, operation=inc.operation, wanted=wanted),
                        start, end)
        service = _covered(spans, partial(_is_checkout, operation="", wanted=("service_",)),
                           start, end)
        out.write(f"  {inc.kind:12s} x{inc.size:<4g} {inc.operation:13s} at "
                  f"{inc.start_s / 3600 % 24:5.1f} h for {inc.length_s:5.0f} s: "
                  f"held {held:4.0%} service {service:4.0%}  {found}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, default=4.0)
    parser.add_argument("--warmup-days", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--span-outliers", action="store_true",
                        help="also score span durations (the built-in span_outliers rule)")
    args = parser.parse_args()
    began = time.perf_counter()
    events, spans = run(args.days, args.warmup_days, args.seed, args.span_outliers)
    elapsed = time.perf_counter() - began
    sys.stdout.write(f"{args.days:g} days, {spans} spans in {elapsed:.0f} s\n")
    report(events, args.days, args.warmup_days, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
