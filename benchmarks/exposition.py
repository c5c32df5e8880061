"""Cost of a ``/metrics`` scrape of the score gauges, by number of exported series.

Usage: .venv/bin/python benchmarks/exposition.py [--series 10000 100000] [--repeat 3]
                                                 [--gauges score flag]

Fills the Prometheus output (``PrometheusOutput``: score table, open anomalies) the way the
pipeline does, through ``ScoringRound``s of 10,000 rows with labels like the metrics
adapter's, then renders the body ``/metrics`` serves, in the text format and in
OpenMetrics, after a round that updated 10% of the series (the steady state). Prints, per
size: the render time (best of ``--repeat``), the longest time a scrape held the score
table's lock, the body size, the gzip size and time (the server's own ``gzip_body``:
Prometheus always asks for gzip), ``scrape s`` (render plus gzip: what a Prometheus scrape
costs the sidecar), the cost of
``publish`` per row while filling (new series), and the longest ``publish`` of a 1,000-row
round that a concurrent thread (the pipeline's stand-in) saw during one more scrape, with
how many rounds it published meanwhile. Nothing is asserted: this is a measurement, run by
``make bench``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from otel_anomaly.exporter.metrics_server import gzip_body
from otel_anomaly.exporter.outputs.base import ScoringRound
from otel_anomaly.exporter.outputs.prometheus import PrometheusOutput
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.processors.types import Labels, ScoreBatch

ROUND_ROWS = 10_000


def labels_of(slot: int) -> Labels:
    return (
        ("metric", f"http_server_request_duration_seconds_p{slot % 3 * 45 + 5}"),
        ("detector", "ensemble"),
        ("job", f"shop/svc-{slot % 97}"),
        ("instance", f"pod-{slot % 1013}"),
        ("http_route", f"/api/v1/items/{slot}"),
    )


def scoring_round(slots: np.ndarray, step: int, rng: np.random.Generator) -> ScoringRound:
    n = len(slots)
    value = rng.gamma(2.0, 0.05, n)
    expected = value * rng.uniform(0.9, 1.1, n)
    lower, upper = expected * 0.5, expected * 1.8
    # A few series are still warming (no band) and a few are flagged, as in a live sidecar.
    lower[slots % 50 == 0] = np.nan
    upper[slots % 50 == 0] = np.nan
    score = np.abs(value - expected) / (upper - expected)
    flag = (slots % 997 == 0) & (step > 0)
    batch = ScoreBatch(slots.astype(np.intp), np.full(n, step * 10**9, np.int64), value,
                       expected, lower, upper, score, flag)
    return ScoringRound(scores=batch, labels={int(s): labels_of(int(s)) for s in slots})


def fill(output: PrometheusOutput, series: int, rng: np.random.Generator) -> float:
    """Publish every series once, then 10% of them again; return the publish seconds/row."""
    started = time.perf_counter()
    for start in range(0, series, ROUND_ROWS):
        output.publish(scoring_round(np.arange(start, min(start + ROUND_ROWS, series)), 0, rng))
    spent = time.perf_counter() - started
    some = rng.choice(series, max(1, series // 10), replace=False)
    for start in range(0, len(some), ROUND_ROWS):
        output.publish(scoring_round(np.sort(some[start:start + ROUND_ROWS]), 1, rng))
    return spent / series


def renderer(output: PrometheusOutput, registry: CollectorRegistry,
             openmetrics: bool) -> Callable[[], list[bytes]]:
    """What ``/metrics`` renders: the output's own text if it has it, then the registry's."""
    render_chunks = getattr(output.collector, "render_chunks", None)
    encode = generate_openmetrics if openmetrics else generate_latest
    if render_chunks is None:
        return lambda: [encode(registry)]
    return lambda: [*render_chunks(openmetrics), encode(registry)]


class LockTimer:
    """Wraps the score table's lock and records the longest hold by the scraping thread."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._since = 0.0
        self.longest = 0.0

    def __enter__(self) -> bool:
        got = self._lock.__enter__()
        self._since = time.perf_counter()
        return got

    def __exit__(self, *exc: object) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._since)
        self._lock.__exit__(*exc)  # type: ignore[arg-type]


def publish_stall(output: PrometheusOutput, render: Callable[[], list[bytes]], series: int,
                  rng: np.random.Generator) -> tuple[float, int]:
    """Longest ``publish`` of a 1,000-row round while one scrape renders, and rounds done.

    The pipeline thread publishes inline: what it waits for here (the table's lock, the
    GIL) is what a scrape costs scoring.
    """
    rounds = [scoring_round(np.sort(rng.choice(series, min(series, 1000), replace=False)), 2,
                            rng) for _ in range(8)]
    done = threading.Event()
    longest, count = 0.0, 0

    def publisher() -> None:
        nonlocal longest, count
        while not done.is_set():
            started = time.perf_counter()
            output.publish(rounds[count % len(rounds)])
            longest = max(longest, time.perf_counter() - started)
            count += 1

    thread = threading.Thread(target=publisher, name="bench-publisher")
    thread.start()
    try:
        render()
    finally:
        done.set()
        thread.join()
    return longest, count


def measure(series: int, repeat: int, gauges: list[str] | None) -> list[str]:
    rng = np.random.default_rng(7)
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    output = (PrometheusOutput(series, telemetry, gauges) if gauges
              else PrometheusOutput(series, telemetry))
    if not hasattr(output, "render"):  # served through the registry, as before the change
        registry.register(output.collector)
    publish_us = fill(output, series, rng) * 1e6
    rows = []
    for openmetrics in (False, True):
        render = renderer(output, registry, openmetrics)
        timer = LockTimer(output.table._lock)  # noqa: SLF001 - measurement only
        output.table._lock = timer  # type: ignore[assignment]  # noqa: SLF001
        best, chunks = float("inf"), []
        for _ in range(repeat):
            chunks = []  # the previous body is freed before the next render, as in a server
            started = time.perf_counter()
            chunks = render()
            best = min(best, time.perf_counter() - started)
        body = b"".join(chunks)
        del chunks
        output.table._lock = timer._lock  # noqa: SLF001
        stall, published = publish_stall(output, render, series, rng)
        started = time.perf_counter()
        zipped = gzip_body([body])
        gzip_s = time.perf_counter() - started
        fmt = "openmetrics" if openmetrics else "text 0.0.4"
        rows.append(f"| {series:>9,} | {fmt:<11} | {best:8.3f} | {timer.longest * 1e3:8.1f} | "
                    f"{len(body) / 1e6:8.1f} | {len(zipped) / 1e6:7.2f} | {gzip_s:6.3f} | "
                    f"{best + gzip_s:8.3f} | "
                    f"{publish_us:7.2f} | {stall * 1e3:8.1f} | {published:6} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gauges", nargs="+", help="exposition.gauges (default: all)")
    args = parser.parse_args()
    out = sys.stdout.write
    out("| series    | format      | render s | lock ms  | body MB  | gzip MB | gzip s | "
        "scrape s | publish µs/row | publish max ms | rounds |\n")
    out("|----------:|-------------|---------:|---------:|---------:|--------:|-------:|"
        "---------:|--------:|---------:|-------:|\n")
    for series in args.series:
        for row in measure(series, args.repeat, args.gauges):
            out(row + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
