"""Scores as Prometheus gauges: ``ScoreCollector`` and the ``/metrics`` endpoint.

The collector is a custom collector on the sidecar's own registry: no ``Gauge`` child per
series, no ``labels()`` calls. A scrape copies a snapshot of the score table (under its
lock) and formats it; it never scores.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.net import listen_sockets
from otel_anomaly.exporter.scores import ScoreTable
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.exporter.web import start_app, stop_app

OUTPUTS: tuple[tuple[str, str, str], ...] = (
    ("otel_anomaly_score", "score",
     "Band-normalised anomaly score: 0 at the expected value, 1 at the band edge."),
    ("otel_anomaly_value", "value", "Latest value of the scored series, in its own unit."),
    ("otel_anomaly_expected", "expected", "Value the detector expected."),
    ("otel_anomaly_lower", "lower", "Lower edge of the normal band."),
    ("otel_anomaly_upper", "upper", "Upper edge of the normal band."),
    ("otel_anomaly_flag", "flag", "1 while the series is in an open anomaly, else 0."),
    ("otel_anomaly_warming", "warming",
     "1 while the series is still learning its baseline (no band yet, no flag), else 0."),
)
"""``(metric name, snapshot column, help)`` of every exported gauge."""

SCRAPE_THREAD_PREFIX = "otel-anomaly-scrape"
_SHUTDOWN_GRACE_S = 2.0


class ScoreCollector(Collector):
    """Yields one gauge family per output, one sample per scored series.

    Label sets differ between series (each has its own attributes), so samples are added
    with their precomputed label dicts rather than through a fixed label-name list.

    Parameters
    ----------
    scores
        The table to snapshot.
    max_series
        At most this many series per scrape (open anomalies first).
    telemetry
        Records each collection's duration and how many series were left out.
    """

    def __init__(self, scores: ScoreTable, max_series: int, telemetry: Telemetry) -> None:
        self._scores = scores
        self._max_series = max_series
        self._telemetry = telemetry

    def describe(self) -> Iterable[Metric]:
        """Nothing: names are not known ahead, and registering must not collect."""
        return []

    def collect(self) -> Iterable[Metric]:
        """Snapshot the table and build the gauge families."""
        started = time.perf_counter()
        snapshot = self._scores.snapshot(self._max_series)
        families = []
        for name, column, documentation in OUTPUTS:
            family = GaugeMetricFamily(name, documentation)
            values = getattr(snapshot, column).astype(float).tolist()
            family.samples = [
                Sample(name, labels, value)
                for labels, value in zip(snapshot.labels, values, strict=True)
            ]
            families.append(family)
        self._telemetry.scraped(
            time.perf_counter() - started, len(snapshot), snapshot.total, snapshot.duplicates
        )
        return families


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on the shared ``IoLoop``.

    Exposition runs in a one-thread executor so a large scrape never stalls the loop
    (and with it the receivers).

    Parameters
    ----------
    endpoint
        ``HOST:PORT`` to listen on.
    registry
        The sidecar's registry.
    io
        The event loop the server runs on.
    ready
        Whether the sidecar is ready (receivers listening, pipeline running).
    """

    def __init__(
        self, endpoint: str, registry: CollectorRegistry, io: IoLoop, ready: Callable[[], bool]
    ) -> None:
        self._endpoint = endpoint
        self._registry = registry
        self._io = io
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._port: int | None = None
        self._stopped = False

    @property
    def port(self) -> int | None:
        """The bound port once started (useful with port 0)."""
        return self._port

    def start(self) -> None:
        """Bind and start serving; raises ``StartupError`` naming the endpoint."""
        if self._runner is not None or self._stopped:
            return
        sockets = listen_sockets(self._endpoint, "metrics endpoint (exposition.endpoint)")
        self._port = sockets[0].getsockname()[1]
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=SCRAPE_THREAD_PREFIX)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = start_app(self._io, app, sockets, self._executor,
                                 shutdown_timeout=_SHUTDOWN_GRACE_S)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        use_gzip = "gzip" in request.headers.get("Accept-Encoding", "")

        def render() -> bytes:
            body = encoder(self._registry)
            return gzip.compress(body, compresslevel=1) if use_gzip else body

        body = await asyncio.get_running_loop().run_in_executor(self._executor, render)
        headers = {"Content-Type": content_type}
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving and shut the exposition executor down."""
        runner, self._runner = self._runner, None
        executor, self._executor = self._executor, None
        self._stopped = True
        stop_app(self._io, runner, executor, timeout)
