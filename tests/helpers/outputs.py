"""Test outputs for the fan-out: one that records, one that blocks, one that always raises."""

from __future__ import annotations

import threading

from otel_anomaly.exporter.outputs import ScoringRound


class RecordingOutput:
    """Keeps every round it is given (thread-safe); ``inline`` as asked."""

    def __init__(self, name: str = "recording", *, inline: bool = False) -> None:
        self.name = name
        self.inline = inline
        self._lock = threading.Lock()
        self._rounds: list[ScoringRound] = []
        self.started = False
        self.stopped = False

    @property
    def rounds(self) -> list[ScoringRound]:
        with self._lock:
            return list(self._rounds)

    def start(self) -> None:
        self.started = True

    def publish(self, scoring_round: ScoringRound) -> None:
        with self._lock:
            self._rounds.append(scoring_round)

    def shutdown(self, timeout: float = 0.0) -> None:
        self.stopped = True


class BlockingOutput(RecordingOutput):
    """Blocks in every publish until ``gate`` is set; ``entered`` is set on the first call.

    Tests must set ``gate`` before they end, so that its thread can finish.
    """

    def __init__(self, name: str = "blocking") -> None:
        super().__init__(name)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def publish(self, scoring_round: ScoringRound) -> None:
        self.entered.set()
        self.gate.wait(30)
        super().publish(scoring_round)


class FailingOutput(RecordingOutput):
    """Raises from every publish (after recording the round)."""

    def publish(self, scoring_round: ScoringRound) -> None:
        super().publish(scoring_round)
        msg = f"{self.name}: the webhook answered 500"
        raise RuntimeError(msg)
