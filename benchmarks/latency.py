"""Alert latency of `otel-anomaly run`: from an anomalous point sent to the flag and the event.

Usage: .venv/bin/python benchmarks/latency.py [--repeats 20] [--warmup-points 100]
                                              [--poll-ms 5] [--timeout 15]

Starts an in-process OTLP sink (``exporter/commands/otlp_sink.py``, stamping each record
with the time it arrived) and the real CLI in a subprocess on free loopback ports, its
anomaly events sent to the sink (``--events-endpoint``), default detectors otherwise.
Warms ``--repeats`` gauge series up with normal points (10 s apart in event time, ending
now) until none is warming any more, then, one series at a time, sends one request
carrying an anomalous point (100 times the series' level, stamped now) and measures from
just before the call:

- the time the Export call took to return (the sidecar has scored the point by then);
- the time until ``/metrics`` shows ``otel_anomaly_flag`` at 1 for that series, polled
  every ``--poll-ms`` (the resolution: the poll interval plus one scrape, both printed);
- the time until the ``anomaly.open`` log record of that series arrives at the sink (exact
  to the sink's receipt; the events output batches records for up to 500 ms).

Prints p50, p95 and max of each over the repeats. Nothing is asserted: this is a
measurement, run by ``make bench``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable

import grpc
import numpy as np
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from sidecar import running_sidecar

from otel_anomaly.exporter.commands.otlp_sink import OtlpSink
from otel_anomaly.processors.testing import SECOND, gauge, metrics_request

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LEVEL = 100.0


class TimedSink(OtlpSink):
    """An ``OtlpSink`` that also notes when each ``anomaly.open`` arrived, by series."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:0")
        self.opened: dict[str, float] = {}
        self._opened_lock = threading.Lock()

    def add(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        arrived = time.perf_counter()
        super().add(request)
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    if record.event_name != "anomaly.open":
                        continue
                    for kv in record.attributes:
                        if kv.key == "series":
                            with self._opened_lock:
                                self.opened.setdefault(kv.value.string_value, arrived)

    def opened_at(self, series: str) -> float | None:
        with self._opened_lock:
            return self.opened.get(series)


def scrape(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def gauge_values(text: str, name: str) -> dict[str, float]:
    """``series`` label -> value of the samples of gauge ``name`` (the per-series gauges)."""
    out = {}
    prefix = name + "{"
    for line in text.splitlines():
        if line.startswith(prefix) and 'series="' in line:
            series = line.split('series="', 1)[1].split('"', 1)[0]
            out[series] = float(line.rsplit(" ", 1)[1])
    return out


def request(points: dict[int, list[tuple[int, float]]]) -> bytes:
    """One gauge request: ``bench.latency`` points by series number."""
    return metrics_request(
        [gauge("bench.latency", pts, attributes={"series": str(i)}) for i, pts in points.items()],
        {"service.name": "latency-bench"},
    ).SerializeToString()


def percentiles(values: list[float]) -> str:
    if not values:
        return f"{0:4d} {'-':>8s} {'-':>8s} {'-':>8s}"
    ms = 1e3 * np.asarray(values)
    return (f"{len(ms):4d} {np.percentile(ms, 50):8.1f} {np.percentile(ms, 95):8.1f} "
            f"{ms.max():8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="anomalies, one series each")
    parser.add_argument("--warmup-points", type=int, default=100)
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=15.0, help="per anomaly, seconds")
    args = parser.parse_args()
    sink = TimedSink()
    sink.start()
    try:
        with running_sidecar("--events-endpoint", sink.endpoint) as sidecar:
            return run(args, sidecar.proc, sink, sidecar.grpc_port, sidecar.metrics_port)
    finally:
        sink.shutdown()


def wait_until(condition: Callable[[], bool], timeout: float, poll_s: float) -> bool:
    """Poll ``condition()`` every ``poll_s`` until true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], sink: TimedSink,
        grpc_port: int, metrics_port: int) -> int:
    def ready() -> bool:
        try:
            scrape(metrics_port)
        except OSError:
            return proc.poll() is not None
        return True

    if not wait_until(ready, 30, 0.05) or proc.poll() is not None:
        sys.stderr.write("sidecar did not start\n")
        return 1
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    export = channel.unary_unary(EXPORT, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    now = time.time_ns()
    rng = np.random.default_rng(0)
    warm = {i: [(now - (args.warmup_points - k) * 10 * SECOND,
                 LEVEL * (1 + 0.01 * float(rng.normal()))) for k in range(args.warmup_points)]
            for i in range(args.repeats)}
    export(request(warm), timeout=60)

    def warmed() -> bool:
        warming = gauge_values(scrape(metrics_port), "otel_anomaly_warming")
        return len(warming) == args.repeats and not any(warming.values())

    if not wait_until(warmed, 30, 0.1):
        sys.stderr.write(f"series still warming after {args.warmup_points} points; "
                         "raise --warmup-points\n")
        return 1
    poll_s = args.poll_ms / 1e3
    acks: list[float] = []
    flags: list[float] = []
    events: list[float] = []
    scrapes: list[float] = []
    missed = 0
    for i in range(args.repeats):
        series = str(i)
        body = request({i: [(time.time_ns(), LEVEL * 100)]})
        t0 = time.perf_counter()
        export(body, timeout=30)
        acks.append(time.perf_counter() - t0)
        flag_at: list[float] = []

        def flagged(series: str = series, flag_at: list[float] = flag_at) -> bool:
            if not flag_at:
                started = time.perf_counter()
                text = scrape(metrics_port)
                scrapes.append(time.perf_counter() - started)
                if gauge_values(text, "otel_anomaly_flag").get(series) == 1.0:
                    flag_at.append(time.perf_counter())
            return bool(flag_at) and sink.opened_at(series) is not None

        if not wait_until(flagged, args.timeout, poll_s):
            missed += 1
        if flag_at:
            flags.append(flag_at[0] - t0)
        opened = sink.opened_at(series)
        if opened is not None:
            events.append(opened - t0)
    channel.close()
    print(f"{args.repeats} anomalies, one series each, after {args.warmup_points} normal "
          f"points; {missed} not seen in full within {args.timeout:g}s")
    print(f"{'from sending the anomalous point to':38s} {'n':>4s} {'p50 ms':>8s} "
          f"{'p95 ms':>8s} {'max ms':>8s}")
    print(f"{'Export call returned':38s} {percentiles(acks)}")
    print(f"{'/metrics shows otel_anomaly_flag 1':38s} {percentiles(flags)}")
    print(f"{'anomaly.open received by the sink':38s} {percentiles(events)}")
    print(f"resolution: /metrics polled every {args.poll_ms:g} ms, one scrape took "
          f"{1e3 * float(np.median(scrapes)):.1f} ms (median): flag times are late by up to "
          f"{args.poll_ms + 1e3 * float(np.median(scrapes)):.1f} ms; sink times are stamped "
          f"on receipt")
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
