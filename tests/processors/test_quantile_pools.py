"""Latency quantiles come only from enough calls: quiet windows are pooled, never guessed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.signals.histogram_quantiles import explicit_bucket_quantiles
from otel_anomaly.processors.signals.quantile_pools import QuantilePools, observations_needed
from otel_anomaly.processors.testing import (
    SECOND,
    FakeClock,
    histogram,
    metrics_request,
    span,
    traces_request,
)
from otel_anomaly.processors.types import IngestResult

P99 = "traces_span_metrics_duration_milliseconds:p99"
P95 = "traces_span_metrics_duration_milliseconds:p95"
P50 = "traces_span_metrics_duration_milliseconds:p50"


def _engine() -> Engine:
    return Engine(EngineSettings(clock=FakeClock(), traces_window_s=10, logs_window_s=10,
                                 lateness_s=0, span_outliers=False))


def _points(result: IngestResult, engine: Engine) -> list[tuple[str, int, float]]:
    return [(engine.series_key(slot).metric, ts, value) for slot, ts, value in zip(
        result.scores.slots.tolist(), result.scores.ts_unix_nano.tolist(),
        result.scores.values.tolist(), strict=True)]


def _send_windows(engine: Engine, calls_per_window: list[int],
                  seed: int = 0) -> tuple[list[tuple[str, int, float]], list[np.ndarray]]:
    """One request per 10 s window; returns every emitted point and each window's durations.

    A service's first window is never whole (it may have started mid-window), so one call
    goes first, in a window of its own that is not scored.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, int, float]] = []
    durations: list[np.ndarray] = []
    for w, calls in enumerate([1, *calls_per_window, 1]):  # the last only closes a window
        start = (100 + 10 * w) * SECOND
        d = rng.lognormal(np.log(50.0), 0.6, calls)
        durations.append(d)
        spans = [span("GET /", start + k * SECOND // max(calls, 1), float(x))
                 for k, x in enumerate(d)]
        out += _points(engine.ingest("traces", traces_request(spans)), engine)
    return out, durations[1:-1]


def test_each_quantile_waits_for_one_expected_call_above_it() -> None:
    assert [observations_needed(q) for q in (0.5, 0.9, 0.95, 0.99, 0.999)] == [
        2, 10, 20, 100, 1000]
    with pytest.raises(ValueError, match="quantile must be in"):
        observations_needed(1.0)


def test_a_busy_operation_gets_every_quantile_every_window() -> None:
    engine = _engine()
    points, durations = _send_windows(engine, [150] * 4)
    for metric in (P50, P95, P99):
        assert len([p for p in points if p[0] == metric]) == 4, metric
    p99 = [value for metric, _, value in points if metric == P99]
    assert p99 == pytest.approx([float(np.quantile(d, 0.99)) for d in durations])


def test_a_quiet_operation_pools_windows_until_its_p99_has_100_calls() -> None:
    engine = _engine()
    points, durations = _send_windows(engine, [5] * 25)  # 125 calls in 250 s
    p50 = [p for p in points if p[0] == P50]
    p95 = [p for p in points if p[0] == P95]
    p99 = [p for p in points if p[0] == P99]
    assert len(p50) == 25  # 5 calls: enough for a median every window
    assert len(p95) == 6  # every 4th window: 20 calls
    assert len(p99) == 1  # once: the 20th window completes 100 calls
    pooled = np.concatenate(durations[:20])
    assert p99[0][2] == pytest.approx(float(np.quantile(pooled, 0.99)))
    assert p99[0][1] == p50[19][1]  # stamped with the window that completed it


def test_calls_older_than_five_minutes_do_not_make_a_p99() -> None:
    engine = _engine()
    points, _ = _send_windows(engine, [3] * 60)  # 180 calls, but at most 90 in 5 minutes
    assert not [p for p in points if p[0] == P99]
    assert len([p for p in points if p[0] == P95]) > 0


def test_pooled_windows_survive_a_checkpoint() -> None:
    pools: QuantilePools[str] = QuantilePools((0.99,), max_span_ns=300)
    assert pools.add("op", 10, 60, "a") == []
    restored: QuantilePools[str] = QuantilePools((0.99,), max_span_ns=300)
    restored.load_state_dict(pools.state_dict())
    assert restored.add("op", 20, 40, "b") == [(0, ["a", "b"])]
    assert len(restored) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 200), st.integers(0, 150)),
                max_size=30))
def test_a_busy_window_of_an_empty_pool_takes_the_short_way_to_the_same_result(
        windows: list[tuple[str, int, int]]) -> None:
    """Busy windows skip the pool when it is empty; the general path gives the same."""
    short: QuantilePools[int] = QuantilePools((0.5, 0.95, 0.99), max_span_ns=300)
    general: QuantilePools[int] = QuantilePools((0.5, 0.95, 0.99), max_span_ns=300)
    general._most_needed = 10**9  # noqa: SLF001 - the short way never taken
    ts = 0
    for i, (key, step, count) in enumerate(windows):
        ts += step
        assert short.add(key, ts, count, i) == general.add(key, ts, count, i)
        assert short.state_dict() == general.state_dict()


def test_a_series_that_stops_reporting_does_not_keep_its_pool() -> None:
    pools: QuantilePools[str] = QuantilePools((0.99,), max_span_ns=300)
    for i in range(50):
        pools.add(f"op{i}", 10, 1, "x")
    assert len(pools) == 50
    pools.add("other", 1000, 1, "y")  # five minutes later: the 50 are stale
    assert len(pools) == 1


def test_histogram_intervals_with_few_requests_are_pooled_for_the_p99() -> None:
    rng = np.random.default_rng(3)
    bounds = np.geomspace(5, 5000, 40)
    batches = [rng.lognormal(np.log(100.0), 0.5, 30) for _ in range(9)]
    points = [((i + 1) * 30 * SECOND, b) for i, b in enumerate(batches)]
    engine = _engine()
    result = engine.ingest("metrics", metrics_request([histogram("lat", points, bounds)]))
    p99 = [(ts, v) for metric, ts, v in _points(result, engine)
           if metric == "lat_milliseconds:p99"]
    # The first point is the cumulative baseline; then 30 requests an interval: the
    # 4th interval completes 120 requests, the 8th the next 120.
    assert [ts for ts, _ in p99] == [5 * 30 * SECOND, 9 * 30 * SECOND]
    counts = sum(np.bincount(np.searchsorted(bounds, b, side="left"), minlength=len(bounds) + 1)
                 for b in batches[1:5]).astype(np.float64)
    want = explicit_bucket_quantiles(bounds, counts, np.array([0.99]))[0]
    assert p99[0][1] == pytest.approx(want)
