"""IoLoop: the one asyncio event loop, in its own named thread, that every server runs on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from otel_anomaly.exporter.thread_names import name_this_thread

THREAD_NAME = "otel-anomaly-io"

_T = TypeVar("_T")


class IoLoop:
    """An event loop running in the ``otel-anomaly-io`` thread.

    Components on the loop (gRPC and HTTP servers) start and stop through ``run``, which
    executes a coroutine there and waits for its result from the calling thread.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (``RuntimeError`` before ``start``)."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            msg = "the I/O event loop is not running"
            raise RuntimeError(msg)
        return self._loop

    def start(self) -> None:
        """Create the loop and start its thread; returns once the loop runs."""
        with self._lock:
            if self._thread is not None:
                return
            loop = asyncio.new_event_loop()
            running = threading.Event()
            loop.call_soon(running.set)
            self._loop = loop
            self._thread = threading.Thread(
                target=self._run, args=(loop,), name=THREAD_NAME, daemon=True
            )
            self._thread.start()
        running.wait()

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        """Run ``coro`` on the loop and return its result (raises what it raised)."""
        try:
            loop = self.loop
        except RuntimeError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel what still runs on the loop, stop it and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        name_this_thread()
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
