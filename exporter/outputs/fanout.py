"""OutputFanout: hands every scoring round to every output, and runs their lifecycle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from otel_anomaly.exporter.errors import StartupError
from otel_anomaly.exporter.outputs.base import Output, ScoringRound
from otel_anomaly.exporter.outputs.worker import FailureLog, OutputWorker
from otel_anomaly.exporter.telemetry import Telemetry

logger = logging.getLogger(__name__)


class OutputFanout:
    """Publishes each round to every output; a slow or failing output holds up nothing else.

    ``publish`` runs on the pipeline thread and never blocks: an ``inline`` output is called
    there directly (its ``publish`` is cheap by contract), any other output gets an
    ``OutputWorker`` (bounded queue, drop-oldest, own thread). A failed publish is counted
    and logged, never raised.

    Parameters
    ----------
    outputs
        In start order (shut down in reverse); names must be unique.
    telemetry
        Counts dropped rounds and failed publishes per output.
    queue_size
        Rounds that may wait for each queued output.
    """

    def __init__(self, outputs: Sequence[Output], telemetry: Telemetry, queue_size: int) -> None:
        names = [output.name for output in outputs]
        if len(set(names)) != len(names):
            msg = f"output names must be unique; got {names}"
            raise ValueError(msg)
        self.outputs = tuple(outputs)
        self._failures = {output.name: FailureLog(output.name, telemetry) for output in outputs}
        self._inline = [output for output in outputs if output.inline]
        self._workers = {
            output.name: OutputWorker(output, telemetry, self._failures[output.name], queue_size)
            for output in outputs
            if not output.inline
        }
        self._lock = threading.Lock()
        self._running = False
        self._closed = False

    def start(self) -> None:
        """Start every output, then the workers; on failure stop the started ones and raise.

        Raises
        ------
        StartupError
            Naming the output that failed.
        """
        with self._lock:
            if self._running or self._closed:
                return
            for output in self.outputs:
                try:
                    output.start()
                except Exception as exc:
                    self._closed = True
                    self._shutdown_all(time.monotonic() + 5.0)
                    msg = f"output {output.name} failed to start: {type(exc).__name__}: {exc}"
                    raise StartupError(msg) from exc
            for worker in self._workers.values():
                worker.start()
            self._running = True

    def publish(self, scoring_round: ScoringRound) -> None:
        """Hand ``scoring_round`` to every output; never blocks, never raises."""
        # Inline outputs first: their publish is bounded, and the queued ones only enqueue.
        for output in self._inline:
            try:
                output.publish(scoring_round)
            except Exception as exc:  # noqa: BLE001 - an output's failure stays its own
                self._failures[output.name].failed(exc)
        for worker in self._workers.values():
            worker.offer(scoring_round)

    @property
    def needs_resources(self) -> bool:
        """Whether some output reads the resource attributes of the slots it is sent."""
        return any(getattr(output, "needs_resources", False) for output in self.outputs)

    def queued(self, name: str) -> int:
        """Rounds waiting for the queued output ``name`` (0 for an inline one)."""
        worker = self._workers.get(name)
        return worker.queued if worker is not None else 0

    def shutdown(self, timeout: float = 10.0) -> None:
        """Let each output publish its queued rounds and flush, all within ``timeout``.

        The queued outputs drain and shut down in parallel, each on its own thread, so one
        stuck output does not use up the others' time; what it still holds at the deadline
        is counted as dropped when (if) it returns.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._shutdown_all(deadline)

    def _shutdown_all(self, deadline: float) -> None:
        # Every output, started or not: shutdown is safe before start.
        for worker in self._workers.values():
            worker.close(deadline)
        for output in reversed(self.outputs):
            # A started worker shuts its output down itself, once its queue is drained.
            queued = self._workers.get(output.name)
            if queued is not None and queued.started:
                if not queued.join(max(0.0, deadline - time.monotonic())):
                    logger.warning("output %s did not finish within the shutdown timeout",
                                   output.name)
                continue
            try:
                output.shutdown(max(0.0, deadline - time.monotonic()))
            except Exception:
                # Keep stopping the rest: a failed stop must not leak threads or sockets.
                logger.exception("shutdown of output %s failed", output.name)
