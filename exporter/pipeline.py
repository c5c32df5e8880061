"""The bounded intake queue and the one worker thread that owns the engine.

Receivers (on the event loop) ``submit`` decoded requests and await the returned future;
the worker ingests each request, hands its scores, evictions and events to the outputs as
one ``ScoringRound``, and resolves the future with the ``IngestResult`` (or the exception
processing raised).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from otel_anomaly.exporter.errors import ExporterError
from otel_anomaly.exporter.outputs.base import RoundLabels, ScoringRound
from otel_anomaly.exporter.receivers.signals import Signal
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.exporter.thread_names import name_this_thread
from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.types import IngestResult, Labels, ScoreBatch

logger = logging.getLogger(__name__)
T = TypeVar("T")

THREAD_NAME = "otel-anomaly-pipeline"
_IDLE_WAIT_S = 1.0
_STATS_EVERY_S = 1.0
_SILENCE_EVERY_S = 1.0


class PipelineClosedError(ExporterError):
    """The pipeline stopped before it processed a request."""


@dataclass(slots=True)
class _Item:
    signal: Signal
    request: Message
    count: int
    future: Future[IngestResult]
    data: bytes | None = None


@dataclass(slots=True)
class _Call:
    """Work on the engine that is not a request (alert review): run between requests."""

    fn: Callable[[Engine], Any]
    future: Future[Any]


_STOP = object()


class Pipeline:
    """Bounded queue + worker: ``submit`` never blocks; a full queue returns ``None``.

    Parameters
    ----------
    engine
        Used only by the worker thread once started.
    telemetry
        Self-metrics.
    publish_round
        Hands each round (a request's result; a timer's evictions or silence events) to
        the outputs (``OutputFanout.publish``); must not block.
    queue_size
        Requests that may wait for the worker.
    clock
        Ingest-time clock (the engine's), for the eviction schedule.
    evict_interval_s
        How often (by ``clock``) idle series are evicted.
    checkpoint
        Saves the engine's state (on the worker thread, which owns the engine): every
        ``checkpoint_interval_s`` by ``clock`` and once more when the worker stops.
    wall_clock
        Seconds since the epoch: stamps the events of services that stopped reporting,
        which the worker checks about once a second (by ``clock``) while it runs.
    with_resources
        Rounds also carry each scored slot's resource attributes (an output asked for
        them: ``OutputFanout.needs_resources``).
    """

    def __init__(
        self,
        engine: Engine,
        telemetry: Telemetry,
        publish_round: Callable[[ScoringRound], None],
        *,
        queue_size: int,
        clock: Callable[[], float],
        evict_interval_s: float,
        checkpoint: Callable[[Engine], None] | None = None,
        checkpoint_interval_s: float = 300.0,
        wall_clock: Callable[[], float] = time.time,
        with_resources: bool = False,
    ) -> None:
        self._engine = engine
        self._telemetry = telemetry
        self._publish_round = publish_round
        self._queue: queue.Queue[_Item | object] = queue.Queue(maxsize=queue_size)
        self._clock = clock
        self._evict_interval_s = evict_interval_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._logged_errors: set[str] = set()
        self._last_evict = 0.0
        self._checkpoint = checkpoint
        self._checkpoint_interval_s = checkpoint_interval_s
        self._last_checkpoint = 0.0
        self._last_stats = -float("inf")
        self._wall_clock = wall_clock
        self._last_silence_check = 0.0
        self._with_resources = with_resources
        telemetry.track_queue(lambda: self.queued, queue_size)

    @property
    def running(self) -> bool:
        """True between ``start`` and ``shutdown`` while the worker is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._closed

    def start(self) -> None:
        """Start the worker thread."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._last_evict = self._last_checkpoint = self._last_silence_check = self._clock()
            self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def submit(
        self, signal: Signal, request: Message, count: int, data: bytes | None = None,
    ) -> Future[IngestResult] | None:
        """Queue a request of ``count`` items; ``None`` if the queue is full or closed.

        ``data``: the bytes ``request`` was decoded from (``Engine.ingest`` scans metrics).
        """
        future: Future[IngestResult] = Future()
        with self._lock:
            if self._closed or self._thread is None:
                return None
            try:
                self._queue.put_nowait(_Item(signal, request, count, future, data))
            except queue.Full:
                return None
        return future

    def call(self, fn: Callable[[Engine], T]) -> Future[T] | None:
        """Run ``fn(engine)`` on the worker thread, in queue order; ``None`` if full or closed.

        The engine has one owner: anything else that must read or change it (alert
        review) goes through the same queue as the requests.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed or self._thread is None:
                return None
            try:
                self._queue.put_nowait(_Call(fn, future))
            except queue.Full:
                return None
        return future

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        return self._queue.qsize()

    @property
    def accepting(self) -> bool:
        """False once shutdown began (a refused submit then means "shutting down")."""
        return not self._closed

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop intake, finish queued requests, join the worker (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass  # the worker is stuck; what is still queued is failed below
        thread.join(max(0.0, deadline - time.monotonic()))
        self._fail_pending()

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Item):
                self._telemetry.dropped(item.signal, "shutting_down", item.count)
            if isinstance(item, _Item | _Call):
                item.future.set_exception(PipelineClosedError("the pipeline has stopped"))
        # A worker still busy in the engine must find the stop marker when it gets back.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)

    def _run(self) -> None:
        name_this_thread()
        while True:
            try:
                item = self._queue.get(timeout=_IDLE_WAIT_S)
            except queue.Empty:
                item = None
            if item is _STOP:
                if self._checkpoint is not None:
                    self._checkpoint(self._engine)
                return
            if isinstance(item, _Item):
                self._process(item)
            elif isinstance(item, _Call):
                self._call(item)
            self._maybe_evict()
            self._maybe_checkpoint()
            self._maybe_check_silence()
            # Idle too (at most once a second): an idle sidecar's series counts stay current.
            self._refresh_stats()

    def _maybe_checkpoint(self) -> None:
        if self._checkpoint is None:
            return
        now = self._clock()
        if now - self._last_checkpoint >= self._checkpoint_interval_s:
            self._last_checkpoint = now
            self._checkpoint(self._engine)

    def _call(self, item: _Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            result = item.fn(self._engine)
        except Exception as exc:  # noqa: BLE001 - the caller gets it; the worker goes on
            item.future.set_exception(exc)
            return
        item.future.set_result(result)

    def _process(self, item: _Item) -> None:
        if not item.future.set_running_or_notify_cancel():
            self._telemetry.dropped(item.signal, "cancelled", item.count)
            return
        started = time.perf_counter()
        try:
            result = self._engine.ingest(item.signal, item.request, item.data)
            self._publish(item.signal, result, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - any engine failure answers this request only
            self._failed(item.signal, exc)
            self._telemetry.dropped(item.signal, "internal_error", item.count)
            item.future.set_exception(exc)
            return
        item.future.set_result(result)

    def _publish(self, signal: Signal, result: IngestResult, seconds: float) -> None:
        labels = self._labels(result.scores)
        self._publish_round(ScoringRound(
            scores=result.scores, labels=labels, resources=self._resources(labels),
            events=tuple(result.events), evicted=result.evicted,
        ))
        for event in result.events:
            self._telemetry.events(event.kind)
        self._telemetry.processed(signal, seconds, result)
        self._telemetry.evicted(len(result.evicted))
        self._refresh_stats()

    def _maybe_evict(self) -> None:
        now = self._clock()
        if now - self._last_evict < self._evict_interval_s:
            return
        self._last_evict = now
        try:
            evicted = self._engine.evict_expired()
            if len(evicted):
                self._publish_round(ScoringRound(evicted=evicted))
            self._telemetry.evicted(len(evicted))
            self._refresh_stats(force=True)
        except Exception as exc:  # noqa: BLE001 - eviction retries on the next interval
            self._failed("evict", exc)

    def _maybe_check_silence(self) -> None:
        # Not once shutdown began (a stopping sidecar must not report everyone silent), nor
        # with requests still queued (the sidecar's own backlog is not a service's silence).
        if self._closed or not self._queue.empty():
            return
        now = self._clock()
        if now - self._last_silence_check < _SILENCE_EVERY_S:
            return
        self._last_silence_check = now
        try:
            events = self._engine.check_silence(int(self._wall_clock() * 1e9))
        except Exception as exc:  # noqa: BLE001 - the check runs again on the next tick
            self._failed("silence", exc)
            return
        if events:
            for event in events:
                self._telemetry.events(event.kind)
            self._publish_round(ScoringRound(events=tuple(events)))
            self._refresh_stats(force=True)

    def _labels(self, scores: ScoreBatch) -> RoundLabels:
        # Labels travel with the round, so outputs never call back into the engine (which
        # only this thread may touch): one lookup for all the round's slots (a Python call
        # per slot was 13 % of this thread at 1,000 series per request), mapped by slot
        # only if an output reads them.
        slots = scores.slots[scores.slots >= 0]
        return RoundLabels(slots, self._engine.series_labels_of(slots))

    def _resources(self, labels: Mapping[int, Labels]) -> dict[int, Labels]:
        if not self._with_resources:
            return {}
        key = self._engine.series_key
        return {slot: key(slot).resource for slot in labels}

    def _refresh_stats(self, *, force: bool = False) -> None:
        # Series counts walk every live series: refreshed at most once a second, not per
        # request (a scrape every few seconds does not need more).
        now = time.monotonic()
        if force or now - self._last_stats >= _STATS_EVERY_S:
            self._last_stats = now
            self._telemetry.series(self._engine.stats())

    def _failed(self, stage: str, exc: Exception) -> None:
        error = type(exc).__name__
        self._telemetry.failed(stage, error)
        if error not in self._logged_errors:
            self._logged_errors.add(error)
            logger.error(
                "pipeline: %s processing raised %s (logged once per error type; see "
                "otel_anomaly_pipeline_errors_total)",
                stage, error, exc_info=exc,
            )
