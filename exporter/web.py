"""Starting an aiohttp application on pre-bound sockets, on the shared I/O loop.

Both HTTP servers (OTLP/HTTP and the metrics endpoint) bind their sockets first, so a taken
port fails start-up with the endpoint's name, then serve from the loop, in TLS when given
an ``ssl.SSLContext``. A failed start closes what it opened.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from otel_anomaly.exporter.loop import IoLoop

_START_TIMEOUT_S = 10.0


def start_app(
    io: IoLoop, app: web.Application, sockets: list[socket.socket],
    executor: ThreadPoolExecutor, ssl_context: ssl.SSLContext | None = None,
    **runner_options: Any,
) -> web.AppRunner:
    """Serve ``app`` on ``sockets``; on failure close them and ``executor``, then re-raise."""

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, **runner_options)
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        return runner

    try:
        return io.run(start(), _START_TIMEOUT_S)
    except BaseException:
        for sock in sockets:
            sock.close()
        executor.shutdown(wait=False)
        raise


def stop_app(
    io: IoLoop, runner: web.AppRunner | None, executor: ThreadPoolExecutor | None,
    timeout: float,
) -> None:
    """Close ``runner``'s connections (within ``timeout``) and shut ``executor`` down."""
    if runner is not None:
        with contextlib.suppress(TimeoutError):  # the loop's shutdown cancels the rest
            io.run(runner.cleanup(), timeout)
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
