"""Score, then learn: detector -> calibrated band and score -> hysteresis -> events.

Rows are routed to the first detector rule whose glob matches the series' metric name.
Rows of one series are processed in arrival order (rounds), so a batch gives exactly the
scores that feeding its rows one at a time would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.calibration import Calibrated, Calibrator, clip_to_band
from otel_anomaly.processors.detectors import DETECTORS, Detector, occurrence_rounds
from otel_anomaly.processors.explain import explain
from otel_anomaly.processors.naming import prometheus_labels
from otel_anomaly.processors.series import grown
from otel_anomaly.processors.settings import AlertPolicy, DetectorRule
from otel_anomaly.processors.thresholds import Hysteresis, Transitions
from otel_anomaly.processors.types import (
    AnomalyEvent,
    EventKind,
    Labels,
    ScoreBatch,
    SeriesBatch,
    SeriesKey,
)

_FIELDS = ("expected", "lower", "upper", "score")


class Scorer:
    """Per-slot routing, detector state and alert state for every scored series."""

    def __init__(self, rules: Sequence[DetectorRule], promote: tuple[str, ...] = ()) -> None:
        if not rules:
            msg = "at least one detector rule is required"
            raise ValueError(msg)
        self.rules = tuple(rules)
        self.promote = promote
        self.detectors: list[Detector] = [
            DETECTORS[rule.detector](**dict(rule.params)) for rule in self.rules
        ]
        self.calibrators = [Calibrator(rule.alert) for rule in self.rules]
        self.hysteresis = Hysteresis()
        self._rule_of = np.zeros(0, np.intp)
        self._direction = np.zeros(0, np.int8)  # +1 / -1: the side an open anomaly is on
        self._labels: list[Labels] = []
        self.points_scored = 0

    def rule_for(self, metric: str) -> int:
        """Index of the first rule matching ``metric`` (the last rule if none does)."""
        for i, rule in enumerate(self.rules):
            if any(fnmatchcase(metric, pattern) for pattern in rule.match):
                return i
        return len(self.rules) - 1

    def assign(self, slot: int, key: SeriesKey) -> None:
        """Set up a new (or reused) slot for ``key``: route it and clear its state."""
        rule = self.rule_for(key.metric)
        self._rule_of = grown(self._rule_of, slot + 1, 0)  # type: ignore[assignment]
        self._direction = grown(self._direction, slot + 1, 0)  # type: ignore[assignment]
        self._rule_of[slot] = rule
        self._direction[slot] = 0
        while len(self._labels) <= slot:
            self._labels.append(())
        self._labels[slot] = prometheus_labels(key, self.rules[rule].detector, self.promote)
        one = np.array([slot], np.intp)
        self.forget(one)

    def forget(self, slots: NDArray[np.intp]) -> None:
        """Drop the state of evicted slots."""
        for detector, calibrator in zip(self.detectors, self.calibrators, strict=True):
            detector.reset(slots)
            calibrator.reset(slots)
        self.hysteresis.reset(slots)

    def labels(self, slot: int) -> Labels:
        """Prometheus labels of a slot, computed once when the slot was assigned."""
        return self._labels[slot]

    def count_warming(self, slots: NDArray[np.intp]) -> int:
        """How many of ``slots`` are still warming up."""
        total = 0
        rules = self._rule_of[slots] if len(slots) else slots
        for i, detector in enumerate(self.detectors):
            mine = slots[rules == i]
            if len(mine):
                total += int(detector.warming(mine).sum())
        return total

    def run(
        self,
        batch: SeriesBatch,
        key_of: Callable[[int], SeriesKey],
        exemplars: dict[int, tuple[bytes, bytes]],
    ) -> tuple[ScoreBatch, list[AnomalyEvent]]:
        """Score then learn every row; return per-row outputs and the events raised."""
        n = len(batch)
        out = {name: np.full(n, np.nan) for name in _FIELDS}
        flag = np.zeros(n, np.bool_)
        events: list[AnomalyEvent] = []
        rules = self._rule_of[batch.slots]
        for rule_index in np.unique(rules).tolist():
            rule_rows = np.flatnonzero(rules == rule_index)
            for sub in occurrence_rounds(batch.slots[rule_rows]):
                rows = rule_rows[sub]
                part = batch.take(rows)
                calibrated, moves = self._step(rule_index, part)
                for name in _FIELDS:
                    out[name][rows] = getattr(calibrated, name)
                flag[rows] = moves.flag
                events += self._events(rule_index, part, rows, calibrated, moves, key_of,
                                       exemplars)
        self.points_scored += n
        scores = ScoreBatch(batch.slots, batch.ts_unix_nano, batch.values, out["expected"],
                            out["lower"], out["upper"], out["score"], flag)
        return scores, events

    def _step(self, rule_index: int, part: SeriesBatch) -> tuple[Calibrated, Transitions]:
        """One round of distinct slots: predict, calibrate, alert, then learn."""
        rule = self.rules[rule_index]
        detector = self.detectors[rule_index]
        calibrator = self.calibrators[rule_index]
        calibrated = calibrator.step(detector, part)
        was_open = self.hysteresis.is_open(part.slots)
        moves = self.hysteresis.step(part.slots, calibrated.score, part.ts_unix_nano, rule.alert)
        settled = (
            self.hysteresis.open_for(part.slots) > rule.alert.relearn_after
            if rule.alert.relearn_after > 0 else np.zeros(len(part), np.bool_)
        )
        # Learn gating (one policy, also for the calibration): an open anomaly does not
        # teach the models, until it outlasts ``relearn_after``.
        gating = rule.alert.learn_gating != "off"
        calibrator.learn(detector, part, calibrated, ~was_open | settled if gating else None)
        detector.learn(_gated(part, calibrated, rule.alert, settled))
        return calibrated, moves

    def _events(
        self, rule_index: int, part: SeriesBatch, rows: NDArray[np.intp], cal: Calibrated,
        moves: Transitions, key_of: Callable[[int], SeriesKey],
        exemplars: dict[int, tuple[bytes, bytes]],
    ) -> list[AnomalyEvent]:
        evented = np.flatnonzero(moves.opened | moves.updated | moves.closed)
        detector = self.rules[rule_index].detector
        events = []
        for i in evented.tolist():
            slot = int(part.slots[i])
            kind: EventKind = (
                "open" if moves.opened[i] else "close" if moves.closed[i] else "update"
            )
            value, expected = float(part.values[i]), float(cal.expected[i])
            if kind == "open":
                self._direction[slot] = 1 if value >= expected else -1
            up = self._direction[slot] >= 0
            key = key_of(slot)
            fields = {
                "value": value, "expected": expected, "lower": float(cal.lower[i]),
                "upper": float(cal.upper[i]), "score": float(cal.score[i]),
            }
            trace_id, span_id = exemplars.get(int(rows[i]), (b"", b""))
            events.append(AnomalyEvent(
                kind=kind, slot=slot, key=key, ts_unix_nano=int(part.ts_unix_nano[i]),
                direction="up" if up else "down", detector=detector,
                explanation=explain(kind, key, detector=detector, **fields),
                trace_id=trace_id, span_id=span_id, **fields,
            ))
        return events


def _gated(
    part: SeriesBatch, cal: Calibrated, policy: AlertPolicy,
    settled: NDArray[np.bool_] | None = None,
) -> SeriesBatch:
    """What the detector learns: anomalous points clipped, skipped or as they are.

    Rows marked ``settled`` (their anomaly outlasted ``relearn_after``) are learned as they
    are, so a lasting shift becomes the new normal.
    """
    if policy.learn_gating == "off":
        return part
    anomalous = cal.score >= policy.open_threshold
    if settled is not None:
        anomalous &= ~settled
    if not anomalous.any():
        return part
    if policy.learn_gating == "skip":
        return part.take(np.flatnonzero(~anomalous))
    return SeriesBatch(part.slots, part.ts_unix_nano, clip_to_band(part.values, cal))
