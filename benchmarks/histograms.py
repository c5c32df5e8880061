"""Latency histograms with few requests per export: false opens per series-day, per feature.

Usage: .venv/bin/python benchmarks/histograms.py [--series 20] [--days 5] [--warmup-days 2]
       [--no-budget]

Each of ``--series`` services exports one cumulative explicit-bucket histogram
(``http.server.request.duration``, ms) every 30 s of event time, through
``Engine.ingest("metrics", ...)`` (OTLP requests built with opentelemetry-proto, no sleeps). Its
request count per interval follows a daily cycle from about 2 to about 60, and latencies are
log-normal around the service's own median. Nothing is wrong with any of them, so every
``anomaly.open`` after the warm-up days is a false alarm. Printed: opens per series-day for
each derived feature (quantiles, mean, rate). ``--no-budget`` runs the same traffic with the
latency rules' ``false_alarm_budget`` set to 0 (3.5 sigmas everywhere), for comparison.
Seeded: the same arguments print the same table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace

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
STEP_S = 30
START_S = 1_700_000_000
BOUNDS = [5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--days", type=float, default=5.0)
    parser.add_argument("--warmup-days", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-budget", action="store_true")
    args = parser.parse_args()
    rules = DEFAULT_RULES
    if args.no_budget:
        rules = tuple(replace(r, alert=replace(r.alert, false_alarm_budget=0.0)) for r in rules)
    engine = Engine(EngineSettings(clock=lambda: 0.0, rules=rules))
    rng = np.random.default_rng(args.seed)
    medians = rng.uniform(30.0, 200.0, args.series)
    phases = rng.uniform(0.0, 2 * np.pi, args.series)
    edges = np.asarray(BOUNDS)
    counts = np.zeros((args.series, len(BOUNDS) + 1), np.int64)
    sums = np.zeros(args.series)
    steps = int(args.days * DAY_S / STEP_S)
    warm_ns = (START_S + args.warmup_days * DAY_S) * SECOND
    opens: Counter[str] = Counter()
    started = time.perf_counter()
    for step in range(steps):
        ts = (START_S + step * STEP_S) * SECOND
        day = 2 * np.pi * step * STEP_S / DAY_S
        # One request per export round, one resource per service, as a Collector batches.
        request = ExportMetricsServiceRequest()
        for i in range(args.series):
            expected = 2.0 + 58.0 * (0.5 + 0.5 * np.sin(day + phases[i]))
            samples = rng.lognormal(np.log(medians[i]), 0.5, rng.poisson(expected))
            counts[i] += np.bincount(np.searchsorted(edges, samples), minlength=len(BOUNDS) + 1)
            sums[i] += samples.sum()
            metric = Metric(name="http.server.request.duration", unit="ms")
            metric.histogram.aggregation_temporality = (
                AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE)
            metric.histogram.data_points.add(
                start_time_unix_nano=START_S * SECOND, time_unix_nano=ts,
                count=int(counts[i].sum()), sum=float(sums[i]), explicit_bounds=BOUNDS,
                bucket_counts=counts[i].tolist())
            request.resource_metrics.extend(
                metrics_request([metric], {"service.name": f"svc{i}"}).resource_metrics)
        for event in engine.ingest("metrics", request).events:
            if event.kind == "open" and event.ts_unix_nano >= warm_ns:
                opens[event.key.metric.partition(":")[2] or event.key.metric] += 1
    elapsed = time.perf_counter() - started
    series_days = args.series * (args.days - args.warmup_days)
    out = sys.stdout
    budget = "off (3.5 sigmas)" if args.no_budget else "built-in latency rules"
    out.write(f"{args.series} histograms, {steps} exports each in {elapsed:.0f}s; "
              f"budget: {budget}\n")
    out.write(f"{'feature':10s} {'opens':>6s} {'per series-day':>15s}  "
              f"({series_days:g} series-days)\n")
    for feature in ("p50", "p90", "p95", "p99", "mean", "rate"):
        out.write(f"{feature:10s} {opens[feature]:>6d} {opens[feature] / series_days:>15.3f}\n")
    others = sum(v for k, v in opens.items()
                 if k not in ("p50", "p90", "p95", "p99", "mean", "rate"))
    out.write(f"{'other':10s} {others:>6d} {others / series_days:>15.3f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
