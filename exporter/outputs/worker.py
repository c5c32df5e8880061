"""One output's bounded queue of rounds and the named thread that publishes them."""

from __future__ import annotations

import collections
import logging
import threading
import time

from otel_anomaly.exporter.outputs.base import Output, ScoringRound
from otel_anomaly.exporter.telemetry import Telemetry
from otel_anomaly.exporter.thread_names import name_this_thread

logger = logging.getLogger(__name__)

THREAD_PREFIX = "otel-anomaly-output-"
_LOG_EVERY_S = 60.0


class FailureLog:
    """Counts an output's failed publishes; logs the first, then at most once a minute.

    An endpoint that is down fails every round: one line a minute says so without flooding
    the log, and ``otel_anomaly_output_errors_total`` has the exact count.
    """

    def __init__(self, output: str, telemetry: Telemetry) -> None:
        self._output = output
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._next_log = -float("inf")
        self._unlogged = 0

    def failed(self, exc: Exception) -> None:
        """Count ``exc`` and log it unless another failure was logged in the last minute."""
        error = type(exc).__name__
        self._telemetry.output_failed(self._output, error)
        now = time.monotonic()
        with self._lock:
            if now < self._next_log:
                self._unlogged += 1
                return
            self._next_log = now + _LOG_EVERY_S
            unlogged, self._unlogged = self._unlogged, 0
        logger.error(
            "output %s: publish raised %s (%d more failures since the last such line; see "
            "otel_anomaly_output_errors_total)",
            self._output, error, unlogged, exc_info=exc,
        )


class OutputWorker:
    """Feeds one output from a bounded queue on its own thread, so it can hold up nothing else.

    ``offer`` never blocks: when the queue is full the oldest round is dropped (newer scores
    supersede it) and counted; its evictions move to the next round. ``close`` lets the
    thread publish what is queued until a deadline, then shut the output down.

    Parameters
    ----------
    output
        The output fed by this worker (never ``inline``).
    telemetry
        Counts dropped rounds.
    failures
        Counts and logs failed publishes.
    capacity
        Rounds that may wait.
    """

    def __init__(
        self, output: Output, telemetry: Telemetry, failures: FailureLog, capacity: int
    ) -> None:
        self._output = output
        self._telemetry = telemetry
        self._failures = failures
        self._capacity = capacity
        self._rounds: collections.deque[ScoringRound] = collections.deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._deadline = float("inf")  # monotonic; set by close

    def start(self) -> None:
        """Start the thread ``otel-anomaly-output-<name>``."""
        with self._ready:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name=THREAD_PREFIX + self._output.name, daemon=True
            )
            self._thread.start()

    @property
    def queued(self) -> int:
        """Rounds waiting for the output."""
        with self._ready:
            return len(self._rounds)

    def offer(self, scoring_round: ScoringRound) -> None:
        """Queue a round; never blocks. A full queue drops (and counts) its oldest round."""
        with self._ready:
            if self._closed:
                self._dropped("shutting_down", [scoring_round])
                return
            if len(self._rounds) >= self._capacity:
                oldest = self._rounds.popleft()
                if self._rounds:
                    self._rounds[0] = self._rounds[0].after_evictions(oldest.evicted)
                else:
                    scoring_round = scoring_round.after_evictions(oldest.evicted)
                self._dropped("queue_full", [oldest])
            self._rounds.append(scoring_round)
            self._ready.notify()

    def close(self, deadline: float) -> None:
        """Take no more rounds; publish the queued ones until ``deadline`` (monotonic)."""
        with self._ready:
            self._closed = True
            self._deadline = deadline
            self._ready.notify()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to finish; False if it is still busy (a stuck output)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def started(self) -> bool:
        """Whether ``start`` ran (else nobody will shut the output down but the caller)."""
        return self._thread is not None

    def _run(self) -> None:
        name_this_thread()
        while True:
            with self._ready:
                while not self._rounds and not self._closed:
                    self._ready.wait()
                if self._closed and (not self._rounds or time.monotonic() >= self._deadline):
                    left = list(self._rounds)
                    self._rounds.clear()
                    break
                scoring_round = self._rounds.popleft()
            try:
                self._output.publish(scoring_round)
            except Exception as exc:  # noqa: BLE001 - an output's failure stays its own
                self._failures.failed(exc)
        if left:
            self._dropped("shutdown_timeout", left)
        try:
            self._output.shutdown(max(0.0, self._deadline - time.monotonic()))
        except Exception:
            logger.exception("shutdown of output %s failed", self._output.name)

    def _dropped(self, reason: str, rounds: list[ScoringRound]) -> None:
        self._telemetry.output_dropped(self._output.name, reason, len(rounds))
        # An output that counts what rounds carry (the events output: events) hears of
        # each round it never got, so those are counted as dropped now, not at shutdown.
        on_dropped = getattr(self._output, "dropped", None)
        if on_dropped is not None:
            for scoring_round in rounds:
                on_dropped(scoring_round, reason)
