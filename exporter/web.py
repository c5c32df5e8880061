"""Starting an aiohttp application on pre-bound sockets, on the shared I/O loop.

Both HTTP servers (OTLP/HTTP and the metrics endpoint) bind their sockets first, so a taken
port fails start-up with the endpoint's name, then serve from the loop, in TLS when given
an ``ssl.SSLContext``. A failed start closes what it opened.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from otel_anomaly.exporter.loop import IoLoop

_START_TIMEOUT_S = 10.0


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, with a client's malformed request as one WARNING line.

    aiohttp answers a request whose head it cannot parse (a 9 KB header line, too many
    headers, bad framing) with 400 and logs it through ``exception``: an ERROR and a
    traceback per such client, though nothing here failed. Those become a WARNING naming
    the client and the fault; any other exception stays an ERROR with its traceback.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        """Log ``msg``: one WARNING line for a malformed request, else as ``Logger``."""
        error = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(error, HttpProcessingError):
            # Formatted by logging, lazily, as aiohttp's own message would have been.
            self.warning(f"{msg}: %s (answered %s)", *args,
                         error.message or type(error).__name__, error.code)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


SERVER_LOG = ServerLog(logging.getLogger("aiohttp.server"), {})


def start_app(
    io: IoLoop, app: web.Application, sockets: list[socket.socket],
    executor: ThreadPoolExecutor, ssl_context: ssl.SSLContext | None = None,
    **runner_options: Any,
) -> web.AppRunner:
    """Serve ``app`` on ``sockets``; on failure close them and ``executor``, then re-raise."""

    async def start() -> web.AppRunner:
        runner = web.AppRunner(app, handle_signals=False, access_log=None, logger=SERVER_LOG,
                               **runner_options)
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
