"""``MetricsServer``: ``/metrics`` (the sidecar's registry), ``/healthz`` and ``/readyz``.

The registry holds the self-metrics; the Prometheus output's score families come first,
from its own pre-rendered text (``scores``), sent in pieces and gzipped when asked.
``exposition.tls`` serves it over HTTPS; ``exposition.auth`` makes ``/metrics`` require a
bearer token (Prometheus: ``authorization: {credentials_file: ...}``), while the
probes stay open: kubelets send no token. Extra ``routes`` (alert review) need the token
of ``routes_auth`` (the receivers') when one is set, else the ``/metrics`` one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from aiohttp import web
from isal import isal_zlib
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from otel_anomaly.exporter.config import BearerAuthConfig, TlsServerConfig
from otel_anomaly.exporter.loop import IoLoop
from otel_anomaly.exporter.net import listen_sockets
from otel_anomaly.exporter.security import (
    CHALLENGE,
    REFUSED_MESSAGE,
    BearerTokens,
    http_middleware,
    listening_context,
    load_server_tls,
)
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.exporter.web import start_app, stop_app

SCRAPE_THREAD_PREFIX = "otel-anomaly-scrape"
_SHUTDOWN_GRACE_S = 2.0
_WHAT = "metrics endpoint"
_PROBES = frozenset({"/healthz", "/readyz"})


class TextSource(Protocol):
    """Families rendered as exposition text outside the registry (the score gauges)."""

    def render_chunks(self, openmetrics: bool = False) -> list[bytes]:
        """The families' text (text format 0.0.4 or OpenMetrics, no ``# EOF``) in pieces."""
        ...

    def collect(self) -> Iterable[Metric]:
        """The same families as metric objects, for the escapings ``render`` does not do."""
        ...


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
    tls
        ``exposition.tls``.
    auth
        ``exposition.auth``: the bearer token ``/metrics`` requires, if set.
    routes, routes_auth
        Extra routes (alert review) and the token they need.
    scores
        Families served before the registry's, from their own text (the Prometheus
        output: ``generate_latest`` cannot take pre-rendered text); not registered.
    """

    def __init__(
        self, endpoint: str, registry: CollectorRegistry, io: IoLoop, ready: Callable[[], bool],
        tls: TlsServerConfig | None = None, auth: BearerAuthConfig | None = None,
        routes: Sequence[web.RouteDef] = (), routes_auth: BearerAuthConfig | None = None,
        scores: TextSource | None = None,
    ) -> None:
        self._scores = scores
        self._endpoint = endpoint
        self._tls = tls or TlsServerConfig()
        self._auth = auth or BearerAuthConfig()
        self._routes = tuple(routes)
        self._routes_auth = routes_auth or BearerAuthConfig()
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
        ssl_context = listening_context(load_server_tls(
            self._tls, f"{_WHAT} (exposition.tls)")) if self._tls.enabled else None
        middlewares = []
        extra = frozenset(route.path for route in self._routes)
        own_token = extra if self._routes_auth.enabled else frozenset()
        if self._routes_auth.enabled and extra:
            review = BearerTokens(self._routes_auth,
                                  f"{_WHAT} (receivers.auth.bearer_token_file)")
            everything_else = _AllBut(extra)
            middlewares.append(http_middleware(review, _refuse, open_paths=everything_else))
        if self._auth.enabled:
            tokens = BearerTokens(self._auth, f"{_WHAT} (exposition.auth.bearer_token_file)")
            middlewares.append(http_middleware(tokens, _refuse, open_paths=_PROBES | own_token))
        sockets = listen_sockets(self._endpoint, f"{_WHAT} (exposition.endpoint)")
        self._port = sockets[0].getsockname()[1]
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=SCRAPE_THREAD_PREFIX,
                                            initializer=name_this_thread)
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_routes(self._routes)
        self._runner = start_app(self._io, app, sockets, self._executor, ssl_context,
                                 shutdown_timeout=_SHUTDOWN_GRACE_S)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        use_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        scores = self._scores
        # Pre-rendered text holds names as they are (already valid legacy names); a
        # scraper asking for another escaping (dots, values) gets the library's.
        escaping = content_type.partition("escaping=")[2]
        as_text = escaping in _TEXT_ESCAPINGS

        def render() -> list[bytes]:
            if scores is None:
                chunks = [encoder(self._registry)]
            elif as_text:
                # The score families first: an OpenMetrics body ends with the registry's
                # # EOF.
                chunks = [*scores.render_chunks(openmetrics), encoder(self._registry)]
            else:
                chunks = [encoder(_Both(scores, self._registry))]
            return [gzip_body(chunks)] if use_gzip else chunks

        chunks = await asyncio.get_running_loop().run_in_executor(self._executor, render)
        headers = {"Content-Type": content_type}
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        if len(chunks) == 1:
            return web.Response(body=chunks[0], headers=headers)
        # Sent piece by piece: never one copy of a body that can reach a gigabyte.
        response = web.StreamResponse(headers=headers)
        response.content_length = sum(len(chunk) for chunk in chunks)
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

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


_TEXT_ESCAPINGS = frozenset({"", "underscores", "allow-utf-8"})


GZIP_LEVEL = 1
"""ISA-L's level 1 (of 0 to 3). On a 100k-series body (123 MB) it took 0.13 s and gave
12.4 MB, where zlib's level 1 took 0.62 s for 13.9 MB (``benchmarks/exposition.py``):
Prometheus always asks for gzip, so this is most of a large scrape's cost after rendering."""


def gzip_body(chunks: Iterable[bytes]) -> bytes:
    """One gzip member over the chunks, compressed one chunk at a time (ISA-L, level 1)."""
    stream = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 16 + isal_zlib.MAX_WBITS)
    out = [stream.compress(chunk) for chunk in chunks]
    out.append(stream.flush())
    return b"".join(out)


class _Both:
    """Two collectors as one, for ``generate_latest``."""

    def __init__(self, first: TextSource, registry: CollectorRegistry) -> None:
        self._first = first
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        yield from self._first.collect()
        yield from self._registry.collect()


class _AllBut(frozenset[str]):
    """Every path but the given ones (``in`` answers for paths not listed)."""

    def __contains__(self, path: object) -> bool:
        return not super().__contains__(path)


def _refuse(_: web.Request) -> web.Response:
    return web.Response(status=401, text=REFUSED_MESSAGE + "\n", headers=CHALLENGE)
