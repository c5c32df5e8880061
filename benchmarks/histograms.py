"""Latency histograms with few requests per export: false opens per series-day, per feature.

Usage: .venv/bin/python benchmarks/histograms.py [--series 20] [--days 5] [--warmup-days 2]
       [--no-budget] [--step 30] [--requests 2 60] [--weekend 1.0] [--load-latency 0]
       [--slow-share 0] [--slow-factor 8] [--delta]

Each of ``--series`` services exports one cumulative explicit-bucket histogram
(``http.server.request.duration``, ms) every 30 s of event time, through
``Engine.ingest("metrics", ...)`` (OTLP requests built with opentelemetry-proto, no sleeps). Its
request count per interval follows a daily cycle from about 2 to about 60, and latencies are
log-normal around the service's own median. Nothing is wrong with any of them, so every
``anomaly.open`` after the warm-up days is a false alarm. Printed: opens per series-day for
each derived feature (quantiles, mean, rate). ``--no-budget`` runs the same traffic with the
latency rules' ``false_alarm_budget`` set to 0 (3.5 sigmas everywhere), for comparison.
Seeded: the same arguments print the same table.

Variants of the traffic (the defaults give the table above):

- ``--step``: seconds between exports;
- ``--requests LOW HIGH``: requests per export at the daily trough and peak;
- ``--weekend``: Saturday's and Sunday's (UTC) share of the weekday traffic (0.5: half);
- ``--load-latency``: the median latency is ``x (1 + this * load)``, load 0 at the trough
  and 1 at the peak (busier is slower);
- ``--slow-share``, ``--slow-factor``: that share of requests is that many times slower
  (a slow dependency, GC pauses);
- ``--delta``: delta instead of cumulative temporality.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace
from typing import TextIO

import numpy as np
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Metric,
)

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import DEFAULT_RULES, EngineSettings
from otel_anomaly.processors.testing import metrics_request

SECOND = 1_000_000_000
DAY_S = 86_400
START_S = 1_700_000_000
BOUNDS = [5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0]
FEATURES = ("p50", "p90", "p95", "p99", "mean", "rate")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--days", type=float, default=5.0)
    parser.add_argument("--warmup-days", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-budget", action="store_true")
    parser.add_argument("--step", type=int, default=30)
    parser.add_argument("--requests", type=float, nargs=2, default=(2.0, 60.0),
                        metavar=("LOW", "HIGH"))
    parser.add_argument("--weekend", type=float, default=1.0)
    parser.add_argument("--load-latency", type=float, default=0.0)
    parser.add_argument("--slow-share", type=float, default=0.0)
    parser.add_argument("--slow-factor", type=float, default=8.0)
    parser.add_argument("--delta", action="store_true")
    return parser.parse_args()


class Service:
    """One service's histogram: its traffic, latency and running (cumulative) buckets."""

    def __init__(self, args: argparse.Namespace, median: float, phase: float) -> None:
        self.args, self.median, self.phase = args, median, phase
        self.counts = np.zeros(len(BOUNDS) + 1, np.int64)
        self.sum = 0.0

    def export(self, rng: np.random.Generator, step: int) -> Metric:
        """The histogram data point of export ``step``."""
        args = self.args
        now_s = START_S + step * args.step
        load = 0.5 + 0.5 * np.sin(2 * np.pi * step * args.step / DAY_S + self.phase)
        low, high = args.requests
        expected = low + (high - low) * load
        if (now_s // DAY_S) % 7 in (2, 3):  # Saturday or Sunday: Unix day 0 was a Thursday
            expected *= args.weekend
        median = self.median * (1.0 + args.load_latency * load)
        samples = rng.lognormal(np.log(median), 0.5, rng.poisson(expected))
        if args.slow_share > 0:
            samples[rng.random(len(samples)) < args.slow_share] *= args.slow_factor
        window = np.bincount(np.searchsorted(BOUNDS, samples), minlength=len(BOUNDS) + 1)
        self.counts += window
        self.sum += samples.sum()
        metric = Metric(name="http.server.request.duration", unit="ms")
        ts = now_s * SECOND
        if args.delta:
            metric.histogram.aggregation_temporality = (
                AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA)
            metric.histogram.data_points.add(
                start_time_unix_nano=ts - args.step * SECOND, time_unix_nano=ts,
                count=int(window.sum()), sum=float(samples.sum()), explicit_bounds=BOUNDS,
                bucket_counts=window.tolist())
        else:
            metric.histogram.aggregation_temporality = (
                AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE)
            metric.histogram.data_points.add(
                start_time_unix_nano=START_S * SECOND, time_unix_nano=ts,
                count=int(self.counts.sum()), sum=float(self.sum), explicit_bounds=BOUNDS,
                bucket_counts=self.counts.tolist())
        return metric


def main() -> int:
    args = arguments()
    rules = DEFAULT_RULES
    if args.no_budget:
        rules = tuple(replace(r, alert=replace(r.alert, false_alarm_budget=0.0)) for r in rules)
    engine = Engine(EngineSettings(clock=lambda: 0.0, rules=rules))
    rng = np.random.default_rng(args.seed)
    medians = rng.uniform(30.0, 200.0, args.series)
    phases = rng.uniform(0.0, 2 * np.pi, args.series)
    services = [Service(args, m, p) for m, p in zip(medians, phases, strict=True)]
    steps = int(args.days * DAY_S / args.step)
    warm_ns = (START_S + args.warmup_days * DAY_S) * SECOND
    opens: Counter[str] = Counter()
    started = time.perf_counter()
    for step in range(steps):
        # One request per export round, one resource per service, as a Collector batches.
        request = ExportMetricsServiceRequest()
        for i, service in enumerate(services):
            request.resource_metrics.extend(metrics_request(
                [service.export(rng, step)], {"service.name": f"svc{i}"}).resource_metrics)
        for event in engine.ingest("metrics", request).events:
            if event.kind == "open" and event.ts_unix_nano >= warm_ns:
                opens[event.key.metric.partition(":")[2] or event.key.metric] += 1
    elapsed = time.perf_counter() - started
    write_table(sys.stdout, args, steps, elapsed, opens)
    return 0


def write_table(out: TextIO, args: argparse.Namespace, steps: int, elapsed: float,
                opens: Counter[str]) -> None:
    series_days = args.series * (args.days - args.warmup_days)
    budget = "off (3.5 sigmas)" if args.no_budget else "built-in latency rules"
    out.write(f"{args.series} histograms, {steps} exports each in {elapsed:.0f}s; "
              f"budget: {budget}\n")
    low, high = args.requests
    traffic = [f"{name}={value}" for name, value, default in (
        ("step", args.step, 30), ("requests", f"{low:g}-{high:g}", "2-60"),
        ("weekend", args.weekend, 1.0), ("load_latency", args.load_latency, 0.0),
        ("slow_share", args.slow_share, 0.0), ("delta", args.delta, False))
        if value != default]
    if traffic:
        out.write(f"traffic: {', '.join(traffic)}\n")
    out.write(f"{'feature':10s} {'opens':>6s} {'per series-day':>15s}  "
              f"({series_days:g} series-days)\n")
    for feature in FEATURES:
        out.write(f"{feature:10s} {opens[feature]:>6d} {opens[feature] / series_days:>15.3f}\n")
    others = sum(v for k, v in opens.items() if k not in FEATURES)
    out.write(f"{'other':10s} {others:>6d} {others / series_days:>15.3f}\n")


if __name__ == "__main__":
    raise SystemExit(main())
