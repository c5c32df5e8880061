"""Ingest throughput of `otel-anomaly run` over OTLP/gRPC, next to the decode floor.

Usage: .venv/bin/python benchmarks/ingest.py [--signal metrics|histograms|spans]
                                             [--series 10000]
                                             [--config FILE] [--transport grpc|http]
                                             [--operations 100] [--points-per-request 1000]
                                             [--seconds 20] [--in-flight 4]
                                             [--floor-requests 200]

Starts the real CLI in a subprocess on free loopback ports, sends pre-built requests (the
generated stubs, not the SDK: the SDK's exporter tops out far below the sidecar) for a
fixed time with N requests in flight (each of N threads sends the next request as soon as
its last one returned), and prints items/s from the sidecar's own counters, the CPU
seconds the sidecar used per million items (its child processes included), and the
request latency (p50, p99) the clients saw. A second table splits the sidecar's CPU by
thread (its threads carry kernel names: ``pipeline`` scores, ``io`` receives) and says how
busy the machine was: a sidecar near one core with a core idle is held by the GIL.

At e339913, 2 cores, ``--seconds 10``, alternated twice in one sitting
(``/work/dev_notes/s46/ingest_ab.txt``), with the default config and with
``receivers: {grpc: {separate_process: true}}`` through ``--config`` (the gRPC receiver in
a process of its own):

| signal | default | ratio | separate process | ratio |
|---|---|---|---|---|
| spans, 100 operations | 801,295-807,594 | 0.83-0.85 | 1,051,622-1,055,178 | 1.10 |
| metrics, 10,000 series | 534,417-536,985 | 1.09-1.10 | 636,179-639,198 | 1.28-1.30 |

Over OTLP/HTTP (``--transport http``, protobuf bodies, one kept-alive connection per
sender; ``receivers: {http: {separate_process: true}}``), at 893842c, one run each
(``/work/dev_notes/s46/ingest_http.txt``): spans 932,070 (0.97) and 1,050,633 (1.11),
metrics 560,982 (1.14) and 649,455 (1.30).

By default the sidecar used 1.04-1.12 cores with the machine 36-37 % idle: ``pipeline``
0.69-0.79 cores and ``io`` 0.30-0.31, taking turns under the GIL. With the separate
process it used 1.36-1.40 (``pipeline`` 0.83-0.90, the sidecar's ``forward`` thread 0.12,
the ``grpc-receiver`` process 0.35-0.39); CPU per item about the same (spans 1.29 s a
million either way, metrics 2.08 against 2.17-2.20). Before the senders kept N calls open
(rounds of N that waited for the slowest), the same head's default went at 782,626-793,506
spans/s and metrics at about 498,000 (d4e8985).

- ``--signal metrics`` (default): gauge requests, one point per series per round over
  ``--series`` series; items are data points, counted by ``otel_anomaly_points_scored``.
  At a991c9f (``--seconds 15``, three runs alternated with 3820a65): 512,462-517,394
  points/s, ratio 1.022-1.027 (3820a65: 484,189-489,138, ratio 0.955-0.991); at 20d8475
  510,377-526,526, ratio 1.024-1.070 (3820a65: 478,690-487,900, 0.962-0.975).
- ``--signal histograms``: as ``metrics``, of cumulative explicit-bucket histograms (the
  SDK's 15 default duration bounds, 20 observations a series and round); items are
  histogram points, counted as received minus dropped and rejected (each point is scored
  as five series: rate, mean, p50, p95, p99). At 03db0f5 (``--seconds 15``, 1,000 and
  10,000 series, ``/work/dev_notes/s52/ingest_hist*.txt``): 9,399 and 9,963 points/s, CPU
  117 and 110 s a million points, against a floor of 214,488 and 219,214 (ratio 0.044 and
  0.045): histograms take the Python walk (``processors/signals/metrics.py``), where a
  point's snapshot, cumulative delta, quantile pools and five scored rows cost about
  100 µs of the pipeline thread (py-spy: the snapshot's two array conversions 23 % of the
  walk, the quantiles 26 %). Before the quantiles were compiled (2d90c8d) a histogram point
  cost 155 to 205 µs through ``Engine.ingest`` alone, 57 to 75 after (alternated,
  ``/work/dev_notes/s52/hist_cost_ab.txt``), 46 to 47 once points shared their bounds
  array (dd2346e); there 10,000 series went at 11,978 points/s, CPU 90 s a million, floor
  221,969 (ratio 0.054).
- ``--signal spans``: trace requests of spans over ``--operations`` operations (span
  names) of one service, each request one second of event time later; items are spans,
  counted as received minus dropped and rejected (``otel_anomaly_points_*{signal="traces"}``).
  Spans are also scored as their operation's span-outlier series, one scoring round per
  scored span of an operation in a request; the built-in rule scores at most 4 of them and
  the slowest (``max_points_per_request``). ``--operations 1`` (every span of one endpoint)
  went at 248,080 spans/s and 100 operations (10 spans each) at 142,216 on a 2-core
  machine; 416,353 and 264,648 with ``traces: {span_outliers: false}`` through
  ``--config`` (before the cap, one operation went at 7,128). With the sampled spans'
  exemplars kept lazy and the sample compiled, 100 operations went at 225,000-251,000
  where the same run's build before them did 197,000-208,000 (one operation: 343,399
  against 329,724). At 74a374d (``--seconds 10``): one operation 592,770, 10 operations
  544,844, 100 operations 403,377; span outliers off 1,001,158 (one) and 667,470 (100).
  At 9e8e88b, with quiet span outliers scanned in one compiled call
  (``processors/alerting/ewma_scan.py``): one operation 793,428, 10 operations 713,679,
  100 operations 526,183 (ratio 0.55); off 1,007,788 and 710,574. At d4dd8c6 (columnar
  windows, a quicker span scan, busy windows' quantiles at once): one operation 845,334,
  10 operations 777,660, 100 operations 611,901 (ratio 0.65); off 1,108,657 and 852,359.
  At 20d8475 (time checks, labels and round plans compiled, outlier slots kept): one
  operation 960,390 (ratio 0.995), 10 operations 869,425, 100 operations 679,475 (0.71);
  off 1,256,360 and 971,290 (1.00). At d4e8985 (a request's operations, their labels,
  outlier slots and window groups known from an earlier request by one key; row sampling
  and scan planning compiled): one operation 1,031,002 (1.064), 10 operations 991,346
  (1.028), 100 operations 776,874-800,338 (0.82-0.84; 89373ce alternated with it:
  663,515-678,568, 0.70), CPU 1.22-1.26 s a million spans (1.44-1.47).

Every request returns only once the sidecar has scored it, so when the last call returns
every accepted item has been processed.

The same run then measures the decode floor, in this process on one core (CPU time), on
the bytes of the first ``--floor-requests`` requests sent: ``FromString`` of the
request type (opentelemetry-proto on its upb backend), then a walk of every data point
(or span) reading what any receiver needs: timestamps, the value (span name, kind and
status) and the attributes as a tuple of key and value. ``ratio`` is sidecar items/s over
floor items/s; ``cpu ratio`` compares CPU seconds per item (sidecar / floor), so it does
not depend on how many cores the sidecar got. A second table splits the floor: decode
only, plus the walk of the fields, plus the attributes.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from sidecar import (
    machine_cpu_seconds,
    process_cpu_seconds,
    running_sidecar,
    thread_cpu_seconds,
)

from otel_anomaly.processors.testing import (
    SECOND,
    gauge,
    histogram,
    metrics_request,
    span,
    traces_request,
)

START_S = 1_700_000_000
HTTP_PATHS = {"metrics": "/v1/metrics", "histograms": "/v1/metrics", "spans": "/v1/traces"}
METHODS = {
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "spans": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
}
METHODS["histograms"] = METHODS["metrics"]
# The explicit bounds of the SDK's default duration histogram (ms).
HISTOGRAM_BOUNDS = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
# Upper bounds of the items/s a run may reach, to pre-build enough fresh items: a repeated
# timestamp would be refused as out of order (or late) and flatter the figure.
BUDGET_PER_S = {"metrics": 700_000, "histograms": 100_000, "spans": 1_200_000}


def counter_total(metrics_port: int, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` whose labels include ``labels``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def build_metric_requests(series: int, per_request: int, rounds: int) -> list[bytes]:
    """Each round gives every series one new point; a request holds per_request points."""
    templates = [
        metrics_request(
            [gauge("bench.value", [(0, 0.0)], attributes={"series": str(i)})
             for i in range(start, min(start + per_request, series))],
            {"service.name": "bench"},
        )
        for start in range(0, series, per_request)
    ]
    out = []
    for r in range(rounds):
        ts = (START_S + r * 10) * SECOND
        for template in templates:
            for i, metric in enumerate(template.resource_metrics[0].scope_metrics[0].metrics):
                point = metric.gauge.data_points[0]
                point.time_unix_nano = ts
                point.as_double = float(100 + (i * 7 + r) % 13)
            out.append(template.SerializeToString())
    return out


def build_histogram_requests(series: int, per_request: int, rounds: int) -> list[bytes]:
    """As ``build_metric_requests``, of cumulative latency histograms (15 bounds).

    Each round adds 20 observations to every series' buckets (each a share of 20 spread
    over the buckets 10 to 100 ms, shifted by the round), so every point closes an interval
    with enough observations for the p50 (pooled ones for p95 and p99).
    """
    templates = [
        metrics_request(
            [histogram("bench.duration", [(0, [])], HISTOGRAM_BOUNDS,
                       attributes={"series": str(i)})
             for i in range(start, min(start + per_request, series))],
            {"service.name": "bench"},
        )
        for start in range(0, series, per_request)
    ]
    counts = np.zeros((series, len(HISTOGRAM_BOUNDS) + 1), np.int64)
    out = []
    for r in range(rounds):
        ts = (START_S + r * 10) * SECOND
        counts[:, 2 + r % 3] += 8
        counts[:, 3 + r % 2] += 12
        for t, template in enumerate(templates):
            for i, metric in enumerate(template.resource_metrics[0].scope_metrics[0].metrics):
                point = metric.histogram.data_points[0]
                row = counts[t * per_request + i]
                point.time_unix_nano = ts
                point.count = int(row.sum())
                point.sum = 40.0 * point.count
                point.bucket_counts[:] = row.tolist()
            out.append(template.SerializeToString())
    return out


def build_span_requests(operations: int, per_request: int, count: int) -> list[bytes]:
    """``count`` requests of ``per_request`` spans over ``operations`` operations.

    Request ``r`` covers event time ``[r, r + 1)`` s, its spans spread evenly inside it, so
    the sidecar's 10-second windows close as the run goes on; durations vary a little.
    """
    template = traces_request(
        [span(f"GET /op/{i % operations}", 0, 10.0, span_id=i.to_bytes(8, "big"))
         for i in range(per_request)],
        {"service.name": "bench"},
    )
    spans = template.resource_spans[0].scope_spans[0].spans
    step = SECOND // per_request
    out = []
    for r in range(count):
        base = (START_S + r) * SECOND
        for i, s in enumerate(spans):
            s.start_time_unix_nano = base + i * step
            s.end_time_unix_nano = base + i * step + (10 + (i * 7 + r) % 13) * 1_000_000
        out.append(template.SerializeToString())
    return out


def walk_points(request: Any, attributes: bool) -> int:
    """Read every data point's time, value (and attributes); return how many."""
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for p in getattr(metric, kind).data_points:
                    _ = ((p.time_unix_nano, p.as_double) if kind in ("gauge", "sum") else
                         (p.time_unix_nano, p.count, p.sum, tuple(p.bucket_counts),
                          tuple(p.explicit_bounds)))
                    if attributes:
                        _ = tuple((kv.key, kv.value.string_value) for kv in p.attributes)
                    n += 1
    return n


def walk_spans(request: Any, attributes: bool) -> int:
    """Read every span's name, kind, times, status (and attributes); return how many."""
    n = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                _ = (s.name, s.kind, s.start_time_unix_nano, s.end_time_unix_nano,
                     s.status.code)
                if attributes:
                    _ = tuple((kv.key, kv.value.string_value) for kv in s.attributes)
                n += 1
    return n


def floor_rates(signal_name: str, requests: list[bytes], repeat: int = 3
                ) -> list[tuple[str, float]]:
    """Items per CPU second of decode, decode + fields, decode + fields + attributes."""
    metrics = signal_name != "spans"
    parse: Callable[[bytes], Any] = (ExportMetricsServiceRequest.FromString if metrics
                                     else ExportTraceServiceRequest.FromString)
    walk = walk_points if metrics else walk_spans
    items = sum(walk(parse(b), attributes=False) for b in requests)
    steps: list[tuple[str, Callable[[bytes], object]]] = [
        ("decode (FromString)", parse),
        ("decode + walk fields", lambda b: walk(parse(b), attributes=False)),
        ("decode + walk fields + attributes", lambda b: walk(parse(b), attributes=True)),
    ]
    out = []
    for name, step in steps:
        best = float("inf")
        for _ in range(repeat):
            started = time.process_time()
            for b in requests:
                step(b)
            best = min(best, time.process_time() - started)
        out.append((name, items / max(best, 1e-9)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signal", choices=("metrics", "histograms", "spans"),
                        default="metrics")
    parser.add_argument("--series", type=int, default=10_000,
                        help="metrics, histograms: series (of gauges, of histograms)")
    parser.add_argument("--operations", type=int, default=100, help="spans: operations")
    parser.add_argument("--points-per-request", type=int, default=1000,
                        help="data points (or spans) per request")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--config", help="the sidecar's YAML config (default: embedded)")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--transport", choices=("grpc", "http"), default="grpc",
                        help="OTLP/gRPC, or OTLP/HTTP with protobuf bodies")
    parser.add_argument("--floor-requests", type=int, default=200,
                        help="requests decoded for the floor")
    args = parser.parse_args()
    with running_sidecar(*(["--config", args.config] if args.config else [])) as sidecar:
        if not sidecar.wait_ready():
            sys.stderr.write("sidecar did not start\n")
            return 1
        return run(args, sidecar.proc, sidecar.grpc_port, sidecar.metrics_port,
                   sidecar.http_port)


def processed_items(signal_name: str, metrics_port: int) -> tuple[float, float, float]:
    """Items the sidecar processed, rejected and skipped (accepted, no score), so far."""
    label = "traces" if signal_name == "spans" else "metrics"
    rejected = counter_total(metrics_port, "otel_anomaly_points_rejected_total", signal=label)
    skipped = counter_total(metrics_port, "otel_anomaly_points_skipped_total", signal=label)
    if signal_name == "metrics":
        return counter_total(metrics_port, "otel_anomaly_points_scored_total"), rejected, skipped
    received = counter_total(metrics_port, "otel_anomaly_points_received_total", signal=label)
    dropped = counter_total(metrics_port, "otel_anomaly_points_dropped_total", signal=label)
    return received - dropped - rejected, rejected, skipped


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], grpc_port: int,
        metrics_port: int, http_port: int) -> int:
    per_request = args.points_per_request
    budget = int(BUDGET_PER_S[args.signal] * args.seconds / per_request) + args.in_flight
    built = time.monotonic()
    if args.signal != "spans":
        rounds = max(2, budget * per_request // args.series + 1)
        build = build_metric_requests if args.signal == "metrics" else build_histogram_requests
        requests = build(args.series, per_request, rounds)
        what = f"series={args.series}"
    else:
        requests = build_span_requests(args.operations, per_request, max(2, budget))
        what = f"operations={args.operations}"
    export = (grpc_export(grpc_port, args.signal) if args.transport == "grpc"
              else http_export(http_port, args.signal))
    sys.stdout.write(f"built {len(requests)} requests in {time.monotonic() - built:.0f}s; "
                     f"sending for {args.seconds:.0f}s\n")
    sys.stdout.flush()
    before = processed_items(args.signal, metrics_port)
    readings = [cpu_readings(proc.pid)]

    def send(i: int) -> float | None:
        started = time.perf_counter()
        return time.perf_counter() - started if export(requests[i]) else None

    started = time.monotonic()
    outcomes = send_for(args.seconds, args.in_flight, len(requests), send)
    elapsed = time.monotonic() - started
    sent = len(outcomes)
    latencies = [latency for latency in outcomes if latency is not None]
    errors = sent - len(latencies)
    readings.append(cpu_readings(proc.pid))
    cpu = readings[1].process - readings[0].process
    if elapsed < args.seconds:
        sys.stdout.write(f"the pre-built requests ran out after {elapsed:.1f}s (raise "
                         f"BUDGET_PER_S); the rates below cover that time\n")
    after = processed_items(args.signal, metrics_port)
    items, rejected, skipped = (a - b for a, b in zip(after, before, strict=True))
    floored = requests[:args.floor_requests]  # the first requests, the ones sent first
    floor = floor_rates(args.signal, floored)
    unit = "spans" if args.signal == "spans" else "points"
    rate = items / elapsed
    cpu_per_m = 1e6 * cpu / max(items, 1)
    floor_rate = floor[-1][1]
    p50, p99 = (1e3 * np.percentile(latencies, q) if latencies else float("nan")
                for q in (50, 99))
    print(f"{what} {unit}/request={per_request} transport={args.transport} "
          f"in_flight={args.in_flight} "
          f"seconds={elapsed:.1f} requests={sent} failed={errors} "
          f"rejected={rejected:,.0f} skipped={skipped:,.0f}")
    print(f"{'signal':8s} {unit:>10s} {unit + '/s':>10s} {'CPU s/M':>8s} {'cores':>6s} "
          f"{'p50 ms':>7s} {'p99 ms':>7s} {'floor/s':>10s} {'ratio':>6s} {'cpu ratio':>9s}")
    print(f"{args.signal:8s} {items:10,.0f} {rate:10,.0f} {cpu_per_m:8.2f} "
          f"{cpu / elapsed:6.2f} {p50:7.1f} {p99:7.1f} {floor_rate:10,.0f} "
          f"{rate / floor_rate:6.3f} {cpu_per_m / (1e6 / floor_rate):9.1f}")
    print_threads(*readings, items, elapsed, unit)
    print_floor(len(floored), floor, unit)
    return 0


def print_floor(requests: int, floor: list[tuple[str, float]], unit: str) -> None:
    """The decode floor's table: each step's items/s and CPU seconds per million."""
    print(f"\ndecode floor, one core, the first {requests} requests (best of 3):")
    print(f"{'step':34s} {unit + '/s':>11s} {'CPU s/M':>8s}")
    for name, per_s in floor:
        print(f"{name:34s} {per_s:11,.0f} {1e6 / per_s:8.2f}")


def grpc_export(port: int, signal_name: str) -> Callable[[bytes], bool]:
    """A sender of serialized requests over OTLP/gRPC: whether each call succeeded."""
    call = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)],
    ).unary_unary(METHODS[signal_name], request_serializer=lambda b: b,
                  response_deserializer=lambda b: b)

    def export(body: bytes) -> bool:
        try:
            call(body, timeout=30)
        except grpc.RpcError:
            return False
        return True

    return export


def http_export(port: int, signal_name: str) -> Callable[[bytes], bool]:
    """A sender over OTLP/HTTP (protobuf), one kept-alive connection per sending thread."""
    path = HTTP_PATHS[signal_name]
    local = threading.local()

    def export(body: bytes) -> bool:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection("127.0.0.1", port,
                                                                       timeout=30)
        try:
            connection.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            local.connection = None
            return False
        return response.status == 200

    return export


def send_for(seconds: float, in_flight: int, requests: int,
             send: Callable[[int], float | None]) -> list[float | None]:
    """``send`` requests 0, 1, ... with ``in_flight`` calls always open, for ``seconds``.

    Each of ``in_flight`` threads sends the next request as soon as its last one returned
    (not in rounds that wait for the slowest). Returns each call's latency (None: failed).
    """
    numbers = itertools.count()
    outcomes: list[float | None] = []
    deadline = time.monotonic() + seconds

    def slot() -> None:
        while time.monotonic() < deadline:
            i = next(numbers)
            if i >= requests:
                return
            outcomes.append(send(i))

    with ThreadPoolExecutor(in_flight) as pool:
        for running in [pool.submit(slot) for _ in range(in_flight)]:
            running.result()
    return outcomes


@dataclass(frozen=True, slots=True)
class CpuReadings:
    """CPU seconds so far: the sidecar's, its threads' by name, the machine's busy and idle."""

    process: float
    threads: dict[str, float]
    machine: tuple[float, float]


def cpu_readings(pid: int) -> CpuReadings:
    """``CpuReadings`` of the sidecar ``pid`` now."""
    return CpuReadings(process_cpu_seconds(pid), thread_cpu_seconds(pid), machine_cpu_seconds())


def print_threads(before: CpuReadings, after: CpuReadings, items: float, elapsed: float,
                  unit: str) -> None:
    """The sidecar's CPU by thread while sending, and how busy the whole machine was.

    A sidecar near one core while the machine has idle cores is held by Python's GIL: its
    threads take turns (the pipeline scoring, the io thread receiving), not cores.
    """
    cpu = after.process - before.process
    used = {name: seconds - before.threads.get(name, 0.0)
            for name, seconds in after.threads.items()}
    print(f"\nsidecar threads while sending ({items:,.0f} {unit} in {elapsed:.1f}s):")
    print(f"{'thread':27s} {'CPU s/M':>8s} {'cores':>6s}")
    for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
        if seconds > 0.005 * cpu:  # threads that did something
            print(f"{name:27s} {1e6 * seconds / max(items, 1):8.2f} {seconds / elapsed:6.2f}")
    busy = after.machine[0] - before.machine[0]
    idle = after.machine[1] - before.machine[1]
    print(f"machine: {os.cpu_count() or 1} cores, {busy / elapsed:.2f} of them busy (the "
          f"sidecar {cpu / elapsed:.2f}, the rest mostly this client), "
          f"{100 * idle / max(busy + idle, 1e-9):.0f} % idle")


if __name__ == "__main__":
    raise SystemExit(main())
