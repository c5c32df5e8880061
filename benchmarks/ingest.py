"""Ingest throughput of `otel-anomaly run` over OTLP/gRPC, as a user would run it.

Usage: .venv/bin/python benchmarks/ingest.py [--series 10000] [--points-per-request 1000]
                                             [--seconds 20] [--in-flight 4]

Starts the real CLI in a subprocess on free loopback ports, sends pre-built gauge requests
(the generated stubs, not the SDK: the SDK's exporter tops out far below the sidecar) for a
fixed time with N requests in flight, waits until every accepted point is scored, and
prints points/s from the sidecar's own counters and the CPU time the sidecar used.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from otel_anomaly.processors.testing import SECOND, gauge, metrics_request

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counter_total(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def build_requests(series: int, per_request: int, rounds: int) -> list[bytes]:
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
        ts = (1_700_000_000 + r * 10) * SECOND
        for template in templates:
            for i, metric in enumerate(template.resource_metrics[0].scope_metrics[0].metrics):
                point = metric.gauge.data_points[0]
                point.time_unix_nano = ts
                point.as_double = float(100 + (i * 7 + r) % 13)
            out.append(template.SerializeToString())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points-per-request", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=4)
    args = parser.parse_args()
    grpc_port, metrics_port = free_port(), free_port()
    cli = [str(ROOT / ".venv" / "bin" / "otel-anomaly"), "run",
           "--grpc-endpoint", f"127.0.0.1:{grpc_port}", "--http-endpoint", "127.0.0.1:0",
           "--metrics-endpoint", f"127.0.0.1:{metrics_port}"]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        return run(args, proc, grpc_port, metrics_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], grpc_port: int,
        metrics_port: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        try:
            counter_total(metrics_port, "otel_anomaly_points_received_total")
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.stderr.write("sidecar did not start\n")
                return 1
            time.sleep(0.2)
    # Enough fresh points for the whole run at up to 400k points/s: a repeated timestamp
    # would be refused as out of order and flatter the figure.
    rounds = max(2, int(400_000 * args.seconds / args.series) + 1)
    requests = build_requests(args.series, args.points_per_request, rounds)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}",
                                    options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        request_serializer=lambda b: b, response_deserializer=lambda b: b,
    )
    cpu_before = process_cpu_seconds(proc.pid)
    sys.stdout.write(f"built {len(requests)} requests; sending for {args.seconds:.0f}s\n")
    sys.stdout.flush()
    sent = 0
    errors = 0
    started = time.monotonic()

    def send(i: int) -> bool:
        try:
            export(requests[i], timeout=30)
            return True
        except grpc.RpcError:
            return False

    with ThreadPoolExecutor(args.in_flight) as pool:
        i = 0
        while time.monotonic() - started < args.seconds and i + args.in_flight <= len(requests):
            oks = list(pool.map(send, range(i, i + args.in_flight)))
            sent += sum(oks) * args.points_per_request
            errors += len(oks) - sum(oks)
            i += args.in_flight
    elapsed = time.monotonic() - started
    received = counter_total(metrics_port, "otel_anomaly_points_scored_total")
    cpu = process_cpu_seconds(proc.pid) - cpu_before
    sys.stdout.write(
        f"series={args.series} points/request={args.points_per_request} "
        f"in_flight={args.in_flight} seconds={elapsed:.1f}\n"
        f"points accepted by the sidecar: {received:,.0f} "
        f"({received / elapsed:,.0f} points/s ingested and scored); "
        f"failed requests: {errors}\n"
        f"sidecar CPU: {cpu:.1f} s ({cpu / elapsed:.2f} cores; "
        f"{1e6 * cpu / max(received, 1):.1f} us of CPU per point)\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
