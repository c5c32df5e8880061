"""``MetricsServer``: ``/metrics`` (the sidecar's registry), ``/healthz`` and ``/readyz``.

The registry holds the self-metrics and the Prometheus output's ``ScoreCollector``.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.net import listen_sockets
from otel_anomaly.exporter.web import start_app, stop_app

SCRAPE_THREAD_PREFIX = "otel-anomaly-scrape"
_SHUTDOWN_GRACE_S = 2.0


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
