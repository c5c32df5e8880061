"""The start-up warm-up loads every kernel live data reaches first, the receivers' too."""

from __future__ import annotations

import subprocess
import sys

# After the sidecar's warm-up, counting a metrics request's points as the receivers do (on
# the event loop: compiled there at the first export it held the loop for 0.76 s with an
# empty cache) and scoring the incidents benchmark's series (anomalies that open, are held,
# close; deploys; ratios) together and one of them alone (the row scan), span outliers
# (the ewma scan, and a slow span judged as its request's slowest) and histograms (their
# quantiles), must compile nothing more: each kernel compiled there would stall the
# sidecar once.
LIVE_PROBE = """
import sys
import numba
from otel_anomaly.exporter.config import load_config
from otel_anomaly.processors.backtest import RecordedSeries, backtest
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.kernel_warm_up import warm_up
from otel_anomaly.processors.signals.metrics_wire_count import count_points
from otel_anomaly.processors.testing import (
    gauge, histogram, incident_cases, metrics_request, replay_incidents, span, traces_request)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from otel_anomaly.processors.types import SeriesKey

def compiled():
    return {f"{d.py_func.__module__}.{d.py_func.__qualname__}": len(d.signatures)
            for name, module in list(sys.modules.items())
            if name.startswith("otel_anomaly.processors")
            for d in vars(module).values() if isinstance(d, numba.core.registry.CPUDispatcher)}

settings = load_config(None, environ={}).engine_settings(clock=lambda: 0.0)
warm_up(settings)
before = compiled()
assert count_points(metrics_request([gauge("cpu", [(1, 0.5)])]).SerializeToString()) == 1
cases = incident_cases(1, days=16.0, step_s=300.0)
replay_incidents(Engine(settings), cases)
spans_engine = Engine(settings)
for r in range(40):  # span outliers of three operations (``ewma_scan``), windows closing
    spans = [span(f"op{i % 3}", 1_700_000_000 * 10**9 + r * 10**9 + i, 40.0 + i % 7)
             for i in range(30)]
    request = traces_request(spans)
    spans_engine.ingest("traces", request, request.SerializeToString())
# A slow span, the slowest of its operation's 10 in a busy request: judged on a wider band.
spans = [span(f"op{i % 3}", 1_700_000_041 * 10**9 + i, 4000.0 if i == 3 else 40.0 + i % 7)
         for i in range(30)]
request = traces_request(spans)
opened = spans_engine.ingest("traces", request, request.SerializeToString()).events
assert any(e.kind == "open" and e.value == 4000.0 for e in opened), opened
# Histograms, explicit and exponential: their quantiles from the second point on.
times = [1_700_000_000 * 10**9 + r * 10**10 for r in range(3)]
explicit = histogram("latency", [(ts, [5.0, 20.0, 30.0] * 40) for ts in times],
                     [10.0, 25.0, 50.0])
exponential = Metric(name="size", unit="By")
exponential.exponential_histogram.aggregation_temporality = 2  # cumulative
for r, ts in enumerate(times):
    point = exponential.exponential_histogram.data_points.add(
        start_time_unix_nano=1, time_unix_nano=ts, count=120 * (r + 1), sum=900.0 * (r + 1),
        scale=2, zero_count=0)
    point.positive.offset = 10
    point.positive.bucket_counts.extend([40 * (r + 1)] * 3)
metrics_engine = Engine(settings)
request = metrics_request([explicit, exponential])
metrics_engine.ingest("metrics", request, request.SerializeToString())
index = metrics_engine.index
names = {index.key(int(slot)).metric for slot in index.live_slots()}
assert {"latency_milliseconds:p99", "size_bytes:p99"} <= names, sorted(names)
spike = next(case for case in cases if case.kind == "spike")
backtest(Engine(settings), [RecordedSeries(SeriesKey("queue_depth", (), ()),
                                           spike.ts_unix_nano, spike.values)])
after = compiled()
print(len(before), sorted(name for name, n in after.items() if n > before.get(name, 0)))
"""


def test_after_the_warm_up_live_scoring_compiles_no_kernel() -> None:
    # A fresh process, so the kernels compiled are the warm-up's and the workload's only.
    out = subprocess.run([sys.executable, "-c", LIVE_PROBE], capture_output=True, text=True,
                         check=True, timeout=600)
    kernels, compiled_later = out.stdout.strip().split(" ", 1)
    assert int(kernels) > 100, out.stdout  # the probe saw the package's kernels
    assert compiled_later == "[]", f"compiled after the warm-up: {compiled_later}"
