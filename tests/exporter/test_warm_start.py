"""Warm start: history from the real Prometheus primes the detectors before live data."""

from __future__ import annotations

import io
import time
from pathlib import Path

import cramjam
import numpy as np
from helpers.promtool import prometheus_with_history
from helpers.sidecars import http_post, loopback_config, running, sample_value, scrape

from otel_anomaly.exporter.warm_start import WarmStartSource, prime
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.remote_write_proto import WriteRequest
from otel_anomaly.processors.state import checkpoint
from otel_anomaly.processors.testing import FakeClock

STEP = 60
POINTS = 3 * 1440  # three days of one-minute points: enough for the daily profile


def openmetrics(start: int) -> str:
    rng = np.random.default_rng(5)
    minutes = np.arange(POINTS)
    depth = 40 + 10 * np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 1, POINTS)
    served = np.cumsum(rng.poisson(50, POINTS))
    lines = ["# TYPE queue_depth gauge"]
    lines += [f'queue_depth{{job="worker",instance="w-1"}} {v:.3f} {start + i * STEP}'
              for i, v in enumerate(depth)]
    lines += ["# TYPE jobs counter"]
    lines += [f'jobs_total{{job="worker",instance="w-1"}} {v} {start + i * STEP}'
              for i, v in enumerate(served)]
    return "\n".join([*lines, "# EOF", ""])


def live_point(ts_s: int) -> WriteRequest:
    """The next scrape, as Prometheus would remote-write it."""
    request = WriteRequest()
    series = request.timeseries.add()
    for name, value in (("__name__", "queue_depth"), ("job", "worker"), ("instance", "w-1")):
        series.labels.add(name=name, value=value)
    series.samples.add(timestamp=ts_s * 1000, value=41.0)
    return request


def test_history_primes_the_detectors_and_is_never_learned_twice(tmp_path: Path) -> None:
    now = int(time.time()) // STEP * STEP
    start = now - POINTS * STEP
    with prometheus_with_history(tmp_path, openmetrics(start)) as port:
        source = WarmStartSource(f"http://127.0.0.1:{port}",
                                 ['{job="worker"}'], lookback_s=POINTS * STEP, step_s=STEP)
        primed = Engine(EngineSettings(clock=FakeClock()))
        summary = prime(primed, source, clock=lambda: float(now))
        assert summary.series == 2
        assert summary.learned == summary.samples > 2 * (POINTS - 10)
        # After a restart from a checkpoint, priming again learns nothing twice.
        saved = io.BytesIO()
        checkpoint.dump(primed, saved)
        saved.seek(0)
        primed = checkpoint.load(saved, EngineSettings(clock=FakeClock()))
        again = prime(primed, source, clock=lambda: float(now))
        assert (again.learned, again.already_known) == (0, again.samples)
    # A scrape taken just before start-up but remote-written after it continues the history.
    late = primed.ingest("prometheus", live_point(now - STEP // 2))
    assert (late.accepted, late.rejected) == (1, {}), (late.accepted, late.rejected)
    cold = Engine(EngineSettings(clock=FakeClock()))
    first_cold = cold.ingest("prometheus", live_point(now + STEP)).scores
    first_warm = primed.ingest("prometheus", live_point(now + STEP)).scores
    # Without history the first live point has no band yet; with it, it is scored at once.
    assert np.isnan(first_cold.lower).all()
    assert np.isfinite(first_warm.lower).all() and np.isfinite(first_warm.score).all()
    assert first_warm.lower[0] < 41.0 < first_warm.upper[0]
    assert primed.stats().series_warming == 0, primed.stats()


def test_a_sidecar_configured_with_warm_start_scores_its_first_remote_written_point(
    tmp_path: Path,
) -> None:
    now = int(time.time()) // STEP * STEP
    start = now - POINTS * STEP
    with prometheus_with_history(tmp_path, openmetrics(start)) as port:
        config = loopback_config({"warm_start.prometheus": f"http://127.0.0.1:{port}",
                                  "warm_start.selectors": ['queue_depth{job="worker"}'],
                                  "warm_start.lookback": float(POINTS * STEP)})
        with running(config) as sidecar:
            # Prometheus stamps query_range points with evaluation times up to the moment the
            # sidecar primed, so the first live scrape is one taken after it became ready.
            first_scrape = int(time.time()) + 1
            body = bytes(cramjam.snappy.compress_raw(live_point(first_scrape).SerializeToString()))
            status, _, text = http_post(sidecar.http_port, "/api/v1/write", body, {
                "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
            assert status == 204, text
            families = scrape(sidecar.metrics_port)
            labels = {"metric": "queue_depth", "job": "worker", "instance": "w-1"}
            assert sample_value(families, "otel_anomaly_value", **labels) == 41.0
            lower = sample_value(families, "otel_anomaly_lower", **labels)
            upper = sample_value(families, "otel_anomaly_upper", **labels)
            assert lower < 41.0 < upper, (lower, upper)  # a band at the first live point
