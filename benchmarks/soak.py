"""Soak: `otel-anomaly run` for minutes under churning series; does its memory level off?

Usage: .venv/bin/python benchmarks/soak.py [--minutes 10] [--steady 5000] [--churn 5000]
                                           [--interval 1] [--churn-seconds S] [--ttl S]

Starts the real CLI in a subprocess on free loopback ports with a config file that sets
``series.ttl`` short (default: a third of the churn period, 20 s at the default 60 s) and
``series.max_series`` to ``steady + 3 * churn`` (room for the live set, the set going
idle and one more, so eviction, not the cap, is what keeps the count down). Every
``--interval`` seconds it sends one gauge point, stamped now, for each of ``--steady``
series that live all run and each of ``--churn`` series of the current generation; every
``--churn-seconds`` (default: 60, or a quarter of the run when that is shorter, so
``--minutes 1`` churns too) the generation is replaced by new series, and the old ones go
idle until the TTL evicts them.

Every 10 s it samples the sidecar's RSS (``VmRSS`` of ``/proc/<pid>/status``), its live
series (``otel_anomaly_series_active``) and evictions (``otel_anomaly_series_evicted``).
It prints one row per minute (the last sample of that minute, the RSS range and the most
live series over its samples; CPU % of one core since the previous row), then the RSS
slope after warm-up (MiB per minute, a least-squares line through the samples of the
second half of the run) and the ratio of the last sample's RSS to the first one of the
second half. Nothing is asserted: this is a measurement, run by
``make bench``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from sidecar import process_cpu_seconds, running_sidecar

from otel_anomaly.processors.testing import gauge, metrics_request

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
PER_REQUEST = 1000
SAMPLE_S = 10.0


@dataclass
class Sample:
    """One 10-second sample of the sidecar."""

    seconds: float
    rss_mib: float
    live: float
    evicted: float
    cpu_s: float


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def self_metrics(metrics_port: int) -> dict[str, float]:
    """The sidecar's unlabelled self-metrics samples (and labelled ones summed), by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("otel_anomaly_") and not line.startswith(
                ("otel_anomaly_score", "otel_anomaly_value", "otel_anomaly_expected",
                 "otel_anomaly_lower", "otel_anomaly_upper", "otel_anomaly_flag",
                 "otel_anomaly_warming")):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def templates(prefix: str, count: int) -> list[ExportMetricsServiceRequest]:
    """Requests of ``PER_REQUEST`` gauge series named ``<prefix><n>``, points to fill in."""
    return [
        metrics_request(
            [gauge("soak.value", [(0, 0.0)], attributes={"series": f"{prefix}{i}"})
             for i in range(start, min(start + PER_REQUEST, count))],
            {"service.name": "soak"},
        )
        for start in range(0, count, PER_REQUEST)
    ]


def stamp(template: ExportMetricsServiceRequest, ts: int, rng: np.random.Generator) -> bytes:
    metrics = template.resource_metrics[0].scope_metrics[0].metrics
    values = 100.0 + rng.normal(0.0, 1.0, len(metrics))
    for metric, value in zip(metrics, values.tolist(), strict=True):
        point = metric.gauge.data_points[0]
        point.time_unix_nano = ts
        point.as_double = value
    return template.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steady", type=int, default=5000, help="series alive all run")
    parser.add_argument("--churn", type=int, default=5000, help="series per generation")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between points")
    parser.add_argument("--churn-seconds", type=float, default=None)
    parser.add_argument("--ttl", type=float, default=None, help="series.ttl, seconds")
    args = parser.parse_args()
    if args.churn_seconds is None:
        args.churn_seconds = min(60.0, args.minutes * 60 / 4)
    if args.ttl is None:
        args.ttl = max(2 * args.interval, args.churn_seconds / 3)
    with tempfile.TemporaryDirectory(prefix="otel-anomaly-soak-") as folder:
        config = Path(folder) / "soak.yaml"
        config.write_text(
            "series:\n"
            f"  ttl: {args.ttl:g}s\n"
            f"  max_series: {args.steady + 3 * args.churn}\n")
        with running_sidecar("--config", str(config), stop_timeout=120) as sidecar:
            if not sidecar.wait_ready():
                sys.stderr.write("sidecar did not start\n")
                return 1
            return run(args, sidecar.proc, sidecar.grpc_port, sidecar.metrics_port)


def run(args: argparse.Namespace, proc: subprocess.Popen[bytes], grpc_port: int,
        metrics_port: int) -> int:
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    export = channel.unary_unary(EXPORT, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    rng = np.random.default_rng(0)
    steady = templates("s", args.steady)
    generation, churn = 0, templates("g0-", args.churn)
    print(f"{args.minutes:g} min: {args.steady:,} steady series + {args.churn:,} replaced "
          f"every {args.churn_seconds:g}s, a point each every {args.interval:g}s; "
          f"series.ttl {args.ttl:g}s, series.max_series {args.steady + 3 * args.churn:,}",
          flush=True)
    samples: list[Sample] = []
    failed = late = 0
    started = time.monotonic()
    cpu0 = process_cpu_seconds(proc.pid)
    end = started + 60 * args.minutes
    next_send = next_sample = started
    while True:
        now = time.monotonic()
        if now >= next_sample:
            counts = self_metrics(metrics_port)
            samples.append(Sample(now - started, rss_mib(proc.pid),
                                  counts.get("otel_anomaly_series_active", float("nan")),
                                  counts.get("otel_anomaly_series_evicted_total", 0.0),
                                  process_cpu_seconds(proc.pid) - cpu0))
            next_sample += SAMPLE_S
        if now >= end:
            break
        if now >= next_send:
            wanted = int((now - started) // args.churn_seconds)
            if wanted != generation:
                generation, churn = wanted, templates(f"g{wanted}-", args.churn)
            ts = time.time_ns()
            for template in (*steady, *churn):
                try:
                    export(stamp(template, ts, rng), timeout=30)
                except grpc.RpcError:
                    failed += 1
            next_send += args.interval
            if time.monotonic() > next_send:  # fell behind: skip, do not burst
                late += 1
                next_send = time.monotonic() + args.interval
        # Pacing the load, not waiting for a result: sleep until the next send or sample.
        time.sleep(max(0.0, min(next_send, next_sample, end) - time.monotonic()))
    channel.close()
    counts = self_metrics(metrics_port)
    report(args, samples, counts, failed, late)
    return 0


def report(args: argparse.Namespace, samples: list[Sample], counts: dict[str, float],
           failed: int, late: int) -> None:
    print(f"{'minute':>6s} {'RSS MiB':>8s} {'min':>7s} {'max':>7s} {'live series':>11s} "
          f"{'max live':>9s} {'evicted':>9s} {'CPU %':>6s}")
    minutes = int(np.ceil(args.minutes))
    previous = samples[0]
    for m in range(minutes + 1):
        inside = [s for s in samples if m * 60 <= s.seconds < (m + 1) * 60 or (
            m == minutes and s.seconds >= m * 60)]
        if not inside:
            continue
        last = inside[-1]
        rss = [s.rss_mib for s in inside]
        span = last.seconds - previous.seconds
        cpu = f"{100 * (last.cpu_s - previous.cpu_s) / span:6.0f}" if span > 0 else "-"
        print(f"{m:6d} {last.rss_mib:8.1f} {min(rss):7.1f} {max(rss):7.1f} {last.live:11,.0f} "
              f"{max(s.live for s in inside):9,.0f} {last.evicted:9,.0f} {cpu:>6s}")
        previous = last
    half = 30 * args.minutes
    after = [s for s in samples if s.seconds >= half]
    rejected = counts.get("otel_anomaly_points_rejected_total", 0.0)
    print(f"samples every {SAMPLE_S:g}s: {len(samples)}; failed requests {failed}; "
          f"late rounds {late}; points rejected {rejected:,.0f}; "
          f"points scored {counts.get('otel_anomaly_points_scored_total', 0.0):,.0f}")
    if len(after) >= 2:
        x = np.array([s.seconds / 60 for s in after])
        y = np.array([s.rss_mib for s in after])
        slope = float(np.polyfit(x, y, 1)[0])
        print(f"after warm-up (t >= {half / 60:g} min, {len(after)} samples): RSS slope "
              f"{slope:+.2f} MiB/min; last/first {after[-1].rss_mib / after[0].rss_mib:.3f} "
              f"({after[0].rss_mib:.1f} -> {after[-1].rss_mib:.1f} MiB)")
    else:
        print("too few samples after warm-up for a slope")


if __name__ == "__main__":
    raise SystemExit(main())
