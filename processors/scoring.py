"""Score, then learn: detector -> calibrated band and score -> hysteresis -> events.

Rows are routed to the first detector rule whose glob matches the series' metric name.
Rows of one series are processed in arrival order (rounds), so a batch gives exactly the
scores that feeding its rows one at a time would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.calibration import Calibrated, Calibrator, clip_to_band
from otel_anomaly.processors.deploys import LevelOffsets
from otel_anomaly.processors.detectors import DETECTORS, Detector
from otel_anomaly.processors.explain import explain
from otel_anomaly.processors.held_band import HeldBands
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
YOUNG_POINTS = 100
"""A series' first scored points alert only on larger deviations, fading to normal over
this many points: its spreads and tails are still estimated from little data."""
_ROUTE_CACHE_SIZE = 4096


class Scorer:
    """Per-slot routing, detector state and alert state for every scored series.

    Each rule's detector and calibrator index their state by a dense slot of their own
    (``_local``), allocated when a series is routed to the rule and freed when it is
    evicted: a detector's arrays then hold only the series it scores, not every series of
    the sidecar. Alert state (hysteresis, held bands, deploy offsets) is indexed by the
    engine's slot.
    """

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
        self.offsets = LevelOffsets()
        self.held = HeldBands()
        self._rule_of = np.zeros(0, np.intp)
        self._local = np.zeros(0, np.intp)  # the slot's index in its rule's state, -1: none
        self._next_local = [0] * len(self.rules)
        self._free_local: list[list[int]] = [[] for _ in self.rules]
        self._direction = np.zeros(0, np.int8)  # +1 / -1: the side an open anomaly is on
        self._age = np.zeros(0, np.int64)  # points scored since the slot was assigned
        self._agree: dict[int, tuple[str, ...]] = {}  # the last round's event rows
        self._baseline: NDArray[np.bool_] | None = None  # the last round's closes that
        # accepted a new level (the value still outside the band it opened against)
        self._labels: list[Labels] = []
        self._route_cache: dict[str, int] = {}
        self.points_scored = 0

    def __getstate__(self) -> dict[str, object]:
        # Rules come from the settings a checkpoint is restored under (see ``retune``).
        return {**self.__dict__, "rules": ()}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_baseline", None)
        if "_local" not in state:
            # Checkpoints from before rule-local state indexed every detector by the
            # engine's slot: keep that layout for the series they hold.
            n = len(self._rule_of)
            self._local = np.arange(n, dtype=np.intp)
            self._next_local = [n] * len(self.detectors)
            self._free_local = [[] for _ in self.detectors]

    def retune(self, rules: Sequence[DetectorRule]) -> None:
        """Adopt new alert policies for the same detectors and routing (after a restore)."""
        same = [(r.name, r.match, r.detector) for r in rules] == [
            (r.name, r.match, r.detector) for r in self.rules]
        if self.rules and not same:
            msg = "retune: rules must keep their names, matches and detectors"
            raise ValueError(msg)
        self.rules = tuple(rules)
        for calibrator, rule in zip(self.calibrators, self.rules, strict=True):
            calibrator.policy = rule.alert

    def rule_for(self, metric: str) -> int:
        """Index of the first rule matching ``metric`` (the last rule if none does)."""
        for i, rule in enumerate(self.rules):
            if any(fnmatchcase(metric, pattern) for pattern in rule.match):
                return i
        return len(self.rules) - 1

    def assign(self, slot: int, key: SeriesKey) -> None:
        """Set up a new (or reused) slot for ``key``: route it and clear its state."""
        self.assign_many(np.array([slot], np.intp), [key])

    def assign_many(self, slots: NDArray[np.intp], keys: Sequence[SeriesKey]) -> None:
        """Set up new (or reused) distinct ``slots`` for ``keys``: route them, clear state."""
        if not len(slots):
            return
        self.forget(slots)
        needed = int(slots.max()) + 1
        self._rule_of = grown(self._rule_of, needed, 0)  # type: ignore[assignment]
        self._local = grown(self._local, needed, -1)  # type: ignore[assignment]
        self._direction = grown(self._direction, needed, 0)  # type: ignore[assignment]
        self._age = grown(self._age, needed, 0)  # type: ignore[assignment]
        rules = [self._route(key.metric) for key in keys]
        self._rule_of[slots] = rules
        self._local[slots] = [self._allocate(rule) for rule in rules]
        self._direction[slots] = 0
        self._age[slots] = 0
        if len(self._labels) < needed:
            self._labels += [()] * (needed - len(self._labels))
        for slot, key, rule in zip(slots.tolist(), keys, rules, strict=True):
            self._labels[slot] = prometheus_labels(key, self.rules[rule].detector, self.promote)
        ruled = np.asarray(rules)
        for i, (detector, calibrator) in enumerate(
                zip(self.detectors, self.calibrators, strict=True)):
            local = self._local[slots[ruled == i]]
            if len(local):
                detector.reset(local)
                calibrator.reset(local, detector)

    def _allocate(self, rule: int) -> int:
        free = self._free_local[rule]
        if free:
            return free.pop()
        self._next_local[rule] += 1
        return self._next_local[rule] - 1

    def _route(self, metric: str) -> int:
        # Many series share a metric name: glob matching runs once per name. The cache is
        # bounded because names come from clients.
        rule = self._route_cache.get(metric)
        if rule is None:
            if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            rule = self._route_cache[metric] = self.rule_for(metric)
        return rule

    def forget(self, slots: NDArray[np.intp]) -> None:
        """Drop the state of evicted slots (their rule-local state is freed for reuse)."""
        known = slots[slots < len(self._local)]
        for slot in known[self._local[known] >= 0].tolist():
            self._free_local[int(self._rule_of[slot])].append(int(self._local[slot]))
        self._local[known] = -1
        self.hysteresis.reset(slots)
        self.offsets.reset(slots)
        self.held.reset(slots)

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
                total += int(detector.warming(self._local[mine]).sum())
        return total

    def run(
        self,
        batch: SeriesBatch,
        key_of: Callable[[int], SeriesKey],
        exemplars: dict[int, tuple[bytes, bytes]],
        grace: NDArray[np.bool_] | None = None,
    ) -> tuple[ScoreBatch, list[AnomalyEvent]]:
        """Score then learn every row; return per-row outputs and the events raised.

        Rows marked in ``grace`` (their service was just deployed) open no anomaly; their
        gap to the expected value moves the series' level offset instead of teaching the
        detector (``processors.deploys``).
        """
        n = len(batch)
        # Rows are reordered once so that every round is a contiguous slice (views, no
        # per-round gathers or scatters); outputs are put back in row order at the end.
        perm, bounds, round_rules = _rounds(self._rule_of[batch.slots], batch.slots)
        ordered = batch if perm is None else batch.take(perm)
        if grace is not None and perm is not None:
            grace = grace[perm]
        slots, ts, values = ordered.slots, ordered.ts_unix_nano, ordered.values
        out = np.empty((len(_FIELDS), n))
        flag = np.empty(n, np.bool_)
        events: list[AnomalyEvent] = []
        for rule_index, a, b in zip(round_rules, bounds[:-1], bounds[1:], strict=True):
            part = SeriesBatch(slots[a:b], ts[a:b], values[a:b],
                               None if ordered.counts is None else ordered.counts[a:b])
            calibrated, held, moves = self._step(
                rule_index, part, None if grace is None else grace[a:b])
            for i, name in enumerate(_FIELDS):
                out[i, a:b] = getattr(calibrated, name)
            flag[a:b] = moves.flag
            evented = moves.opened | moves.updated | moves.closed
            if evented.any():
                rows = np.arange(a, b) if perm is None else perm[a:b]
                events += self._events(rule_index, part, rows, held, moves, evented,
                                       key_of, exemplars)
        if perm is not None:
            out[:, perm], flag[perm] = out.copy(), flag.copy()
        self.points_scored += n
        expected, lower, upper, score = out
        scores = ScoreBatch(batch.slots, batch.ts_unix_nano, batch.values, expected, lower,
                            upper, score, flag)
        return scores, events

    def _step(
        self, rule_index: int, part: SeriesBatch, grace: NDArray[np.bool_] | None = None,
    ) -> tuple[Calibrated, Calibrated, Transitions]:
        """One round of distinct slots: predict, calibrate, alert, then learn.

        Returns the exported band and score, the ones the alert followed, and the moves.
        """
        rule = self.rules[rule_index]
        policy = rule.alert
        detector = self.detectors[rule_index]
        calibrator = self.calibrators[rule_index]
        shift = self.offsets.of(part.slots) if self.offsets.active else None
        # What the detector and calibrator see: their own slots, the deploy offset removed.
        seen = SeriesBatch(self._local[part.slots], part.ts_unix_nano,
                           part.values if shift is None else part.values - shift, part.counts)
        spacing = self.hysteresis.spacing_s(part.slots)
        calibrated = calibrator.step(detector, seen, spacing)
        shown = calibrated if shift is None else Calibrated(
            calibrated.expected + shift, calibrated.lower + shift, calibrated.upper + shift,
            calibrated.score)
        gating = policy.learn_gating != "off"
        was_open = self.hysteresis.is_open(part.slots) if gating or self.held.active else None
        # The flag and the events follow the band the anomaly opened against; the exported
        # score and band stay the detector's own (see ``processors.held_band``).
        held = shown
        if self.held.active and was_open is not None:
            held = self.held.apply(part.slots, part.values, shown, was_open,
                                   part.ts_unix_nano, policy.hold_s)
        alerting = held.score if grace is None else np.where(grace, 0.0, held.score)
        alerting = self._young_damped(part.slots, alerting, ~np.isnan(calibrated.upper))
        moves = self.hysteresis.step(part.slots, alerting, part.ts_unix_nano, policy)
        if moves.opened.any():
            rows = np.flatnonzero(moves.opened)
            self.held.remember(part.slots[rows], _take(held, rows), part.ts_unix_nano[rows])
        self._agree = self._agreeing(detector, seen, moves.opened | moves.updated, policy)
        self._baseline = (
            moves.closed & self.held.outside(part.slots, part.values)
            if self.held.active and moves.closed.any() else None)
        if self.held.active and moves.closed.any():
            held = self.held.closing(part.slots, held, moves.closed)
        # An anomaly's first point teaches the rarity tail (capped, see ``rarity.LEARN_CAP``);
        # the rest of a lasting one does not, or the next incident would look ordinary.
        quiet = ~moves.flag | moves.opened
        if not gating:
            was_open = None
        settled = (
            self.hysteresis.open_for(part.slots) > policy.relearn_after
            if policy.relearn_after > 0 else None
        )
        # Learn gating (one policy, also for the calibration): an open anomaly does not
        # teach the models, until it outlasts ``relearn_after``.
        if was_open is None:
            mask = None
        else:
            mask = ~was_open if settled is None else ~was_open | settled
        if held is not shown and not gating:
            # A held anomaly teaches the detector only up to the band it opened against,
            # so an outage does not swell the spreads and tails for the next day.
            holding = held.expected != shown.expected
            lo, hi = held.lower - (0.0 if shift is None else shift), held.upper - (
                0.0 if shift is None else shift)
            seen = seen.with_values(np.where(
                holding, np.clip(seen.values, lo, hi), seen.values))
        if grace is None:
            calibrator.learn(detector, seen, calibrated, mask, spacing, quiet)
            detector.learn(_gated(seen, calibrated, policy, settled))
        else:
            # A deploy's level change goes into the offset; the detector keeps its shape.
            self.offsets.absorb(part.slots[grace], (seen.values - calibrated.expected)[grace])
            keep = np.flatnonzero(~grace)
            kept = _take(calibrated, keep)
            calibrator.learn(detector, seen.take(keep), kept,
                             None if mask is None else mask[keep], spacing[keep], quiet[keep])
            detector.learn(_gated(seen.take(keep), kept, policy,
                                  None if settled is None else settled[keep]))
        return shown, held, moves

    @staticmethod
    def _agreeing(
        detector: Detector, seen: SeriesBatch, rows: NDArray[np.bool_], policy: AlertPolicy,
    ) -> dict[int, tuple[str, ...]]:
        """Which members see the rows that raise an event as out of band (before learning)."""
        agreeing = getattr(detector, "agreeing", None)
        if agreeing is None or not rows.any():
            return {}
        at = np.flatnonzero(rows)
        found = agreeing(seen.take(at), policy.band)
        return dict(zip(at.tolist(), found, strict=True))

    def _young_damped(
        self, slots: NDArray[np.intp], score: NDArray[np.float64], ready: NDArray[np.bool_],
    ) -> NDArray[np.float64]:
        """Scores of young series divided by up to 2, fading out over ``YOUNG_POINTS``."""
        age = self._age[slots]
        self._age[slots] = age + ready
        young = age < YOUNG_POINTS
        if not young.any():
            return score
        return score / (1.0 + np.maximum(0.0, 1.0 - age / YOUNG_POINTS))

    def _events(
        self, rule_index: int, part: SeriesBatch, rows: NDArray[np.intp], cal: Calibrated,
        moves: Transitions, evented: NDArray[np.bool_], key_of: Callable[[int], SeriesKey],
        exemplars: dict[int, tuple[bytes, bytes]],
    ) -> list[AnomalyEvent]:
        detector = self.rules[rule_index].detector
        events = []
        for i in np.flatnonzero(evented).tolist():
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
                explanation=explain(kind, key, detector=detector,
                                    agreeing=self._agree.get(i, ()),
                                    baseline=self._baseline is not None and bool(
                                        self._baseline[i]),
                                    count=math.nan if part.counts is None else float(
                                        part.counts[i]), **fields),
                trace_id=trace_id, span_id=span_id, **fields,
            ))
        return events


def _rounds(
    rules: NDArray[np.intp], slots: NDArray[np.intp]
) -> tuple[NDArray[np.intp] | None, list[int], list[int]]:
    """Plan a batch's rounds: a row order, round boundaries in it, and each round's rule.

    Rounds go by rule, then by occurrence rank (a slot's ``r``-th row is in its rule's
    ``r``-th round), rows in each round in batch order: the order ``occurrence_rounds``
    gives per rule. The row order is ``None`` when it is the batch's own (one rule, no
    repeated slot: a live request).

    Examples
    --------
    >>> perm, bounds, rules = _rounds(np.array([1, 0, 1, 1, 0]), np.array([3, 1, 3, 3, 2]))
    >>> [(rule, perm[a:b].tolist()) for rule, a, b in zip(rules, bounds, bounds[1:])]
    [(0, [1, 4]), (1, [0]), (1, [2]), (1, [3])]
    >>> _rounds(np.array([0, 0]), np.array([5, 2]))
    (None, [0, 2], [0])
    """
    n = len(slots)
    if n == 0:
        return None, [0], []
    order = np.argsort(slots, kind="stable")
    ordered = slots[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first_rule = int(rules[0])
    one_rule = bool((rules == first_rule).all())
    if len(starts) == n and one_rule:
        return None, [0, n], [first_rule]
    rank = np.empty(n, np.intp)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    key = rank if one_rule else rules * (int(rank.max()) + 1) + rank
    perm = np.argsort(key, kind="stable")
    ordered_key = key[perm]
    cuts = np.flatnonzero(ordered_key[1:] != ordered_key[:-1]) + 1
    bounds = [0, *cuts.tolist(), n]
    round_rules = rules[perm[bounds[:-1]]].tolist()
    return perm, bounds, round_rules


def _take(cal: Calibrated, rows: NDArray[np.intp]) -> Calibrated:
    return Calibrated(cal.expected[rows], cal.lower[rows], cal.upper[rows], cal.score[rows])


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
    return part.with_values(clip_to_band(part.values, cal))
