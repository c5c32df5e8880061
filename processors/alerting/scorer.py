"""Score, then learn: detector -> calibrated band and score -> hysteresis -> events.

Rows are routed to the first detector rule whose glob matches the series' metric name.
Rows of one series are processed in arrival order (rounds), so a batch gives exactly the
scores that feeding its rows one at a time would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.anomaly_events import round_events
from otel_anomaly.processors.alerting.calibration import Calibrated, Calibrator, exposures
from otel_anomaly.processors.alerting.deploys import LevelOffsets
from otel_anomaly.processors.alerting.ewma_scan import (
    ewma_scan_args,
    ewma_scannable,
    scan_ewma_rows,
)
from otel_anomaly.processors.alerting.feedback import FeedbackBook
from otel_anomaly.processors.alerting.held_band import HeldBands
from otel_anomaly.processors.alerting.hysteresis import Hysteresis, Transitions
from otel_anomaly.processors.alerting.lessons import (
    ScoredRound,
    gated,
    held_lesson,
    held_rows,
    pending_rows,
)
from otel_anomaly.processors.alerting.round_plan import (
    EWMA_SCAN,
    NO_SCAN,
    ROW_SCAN,
    plan_rounds,
    scan_stretches,
)
from otel_anomaly.processors.alerting.row_sampling import BOTH, DOWN, UP, sample_rows
from otel_anomaly.processors.alerting.row_scan import (
    rounds_learned,
    scan_args,
    scan_rows,
    scannable,
)
from otel_anomaly.processors.alerting.young_series import YOUNG_POINTS, young_damped
from otel_anomaly.processors.detectors import DETECTORS, Detector
from otel_anomaly.processors.series.label_sets import LabelSets
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.settings import AlertPolicy, DetectorRule
from otel_anomaly.processors.types import (
    AnomalyEvent,
    Labels,
    ScoreBatch,
    SeriesBatch,
    SeriesKey,
)

_FIELDS = ("expected", "lower", "upper", "score")
SCAN_ROWS = 60
"""Rounds of at most this many rows are scanned (``row_scan``), larger ones run whole: a
round through ``_step`` costs about 90 us plus 0.7 us a row, a scanned quiet row about 2 us.
Backtests of N series together (40,000 synthetic points, points per CPU second), scanned
against not: 8 series 388,000 against 92,000 (when a scanned row cost 3 us); 48 series
397,000 against 341,000; 56 series 513,000-521,000 against 409,000-418,000; 64 series
382,000-387,000 against 397,000-400,000; 96 series 467,000 against 539,000."""
_ROUTE_CACHE_SIZE = 4096
_NO_COUNTS = np.zeros(0, np.float64)  # ``scan_stretches``: no row has an exposure
_NO_TEACHING = np.zeros(0, np.bool_)  # ``scan_ewma_rows``: every row teaches
_NO_DRAWS = np.zeros(0)  # ``scan_ewma_rows``: every row is one draw


class Scorer:
    """Per-slot routing, detector state and alert state for every scored series.

    Each rule's detector and calibrator index their state by a dense slot of their own
    (``_local``), allocated when a series is routed to the rule and freed when it is
    evicted: a detector's arrays then hold only the series it scores, not every series of
    the sidecar. Alert state (hysteresis, held bands, deploy offsets) is indexed by the
    engine's slot.
    """

    def __init__(
        self, rules: Sequence[DetectorRule], promote: tuple[str, ...] = (),
        key_of: Callable[[int], SeriesKey] | None = None,
    ) -> None:
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
        self.feedback: FeedbackBook | None = None  # alert review, set by the engine
        self._per_slot = SlotArrays(
            rule_of=Column(np.int16),
            local=Column(np.int32, -1),  # the slot's index in its rule's state, -1: none
            direction=Column(np.int8),  # +1 / -1: the side an open anomaly is on
            age=Column(np.uint8),  # points scored since assigned, up to YOUNG_POINTS
            opened_ns=Column(np.int64),  # the stamp of the open anomaly's open event
            stamped_ns=Column(np.int64),  # the stamp of its latest event
        )
        self._next_local = [0] * len(self.rules)
        self._free_local: list[list[int]] = [[] for _ in self.rules]
        self._agree: dict[int, tuple[str, ...]] = {}  # the last round's event rows
        self._baseline: NDArray[np.bool_] | None = None  # the last round's closes that
        # accepted a new level (the value still outside the band it opened against)
        # ``key_of``: the live slots' keys (the engine's series index), not kept twice.
        self._labels = LabelSets(promote, key_of)
        self._route_cache: dict[str, int] = {}
        self.points_scored = 0
        # Per rule: its cap on a series' points per request, and its alert's side.
        self._caps = np.array([rule.max_points_per_request for rule in self.rules], np.intp)
        self._sides = np.array([_SIDES[rule.alert.direction] for rule in self.rules], np.int8)
        self._capped = bool(self._caps.any())
        # Per rule: how its quiet rows may be scanned: ROW_SCAN (``row_scan``), EWMA_SCAN
        # (``ewma_scan``) or not at all (NO_SCAN).
        self._scan_kind = np.array([
            ROW_SCAN if scannable(detector, calibrator, rule.alert) else
            EWMA_SCAN if ewma_scannable(detector, calibrator, rule.alert) else NO_SCAN
            for detector, calibrator, rule in zip(self.detectors, self.calibrators, self.rules,
                                                  strict=True)], np.int8)

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
        per_slot = self._per_slot
        per_slot.reset(slots)
        rules = [self._route(key.metric) for key in keys]
        per_slot.rule_of[slots] = rules
        per_slot.local[slots] = [self._allocate(rule) for rule in rules]
        self._label(slots, keys)
        ruled = np.asarray(rules)
        for i, (detector, calibrator) in enumerate(
                zip(self.detectors, self.calibrators, strict=True)):
            local = per_slot.local[slots[ruled == i]]
            if len(local):
                detector.reset(local)
                calibrator.reset(local, detector)

    def _label(self, slots: NDArray[np.intp], keys: Sequence[SeriesKey]) -> None:
        """Give ``slots`` their Prometheus labels once, when they are assigned."""
        for slot, key in zip(slots.tolist(), keys, strict=True):
            rule = self.rules[int(self._per_slot.rule_of[slot])]
            self._labels.assign(slot, key, rule.detector)

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
        rule_of, local = self._per_slot.rule_of, self._per_slot.local
        known = slots[slots < len(self._per_slot)]
        for slot in known[local[known] >= 0].tolist():
            self._free_local[int(rule_of[slot])].append(int(local[slot]))
        local[known] = -1
        self.hysteresis.reset(slots)
        self.offsets.reset(slots)
        self.held.reset(slots)
        for slot in slots.tolist():
            self._labels.forget(slot)

    def state_dict(self) -> dict[str, Any]:
        """Routing, rule-local allocation, and every detector's, calibrator's and alert state.

        The routing cache is derived (``load_state_dict`` recomputes it); labels are saved,
        since which of two colliding series was told apart depends on their order.
        """
        return {
            "per_slot": self._per_slot.state_dict(),
            "next_local": list(self._next_local),
            "free_local": [list(free) for free in self._free_local],
            "points_scored": self.points_scored,
            "detectors": [detector.state_dict() for detector in self.detectors],
            "calibrators": [calibrator.state_dict() for calibrator in self.calibrators],
            "hysteresis": self.hysteresis.state_dict(),
            "offsets": self.offsets.state_dict(),
            "held": self.held.state_dict(),
            "labels": self._labels.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], live: dict[int, SeriesKey]) -> None:
        """Restore the state saved by ``state_dict``; ``live``: the key of each live slot."""
        if len(state["detectors"]) != len(self.detectors):
            msg = (f"scorer state has {len(state['detectors'])} detectors; the rules have "
                   f"{len(self.detectors)}")
            raise ValueError(msg)
        self._per_slot.load_state_dict(state["per_slot"])
        self._next_local = [int(n) for n in state["next_local"]]
        self._free_local = [[int(i) for i in free] for free in state["free_local"]]
        self._check_routing(np.fromiter(live, np.intp, len(live)))
        self.points_scored = int(state["points_scored"])
        for detector, saved in zip(self.detectors, state["detectors"], strict=True):
            detector.load_state_dict(saved)
        for calibrator, saved in zip(self.calibrators, state["calibrators"], strict=True):
            calibrator.load_state_dict(saved)
        self.hysteresis.load_state_dict(state["hysteresis"])
        self.offsets.load_state_dict(state["offsets"])
        self.held.load_state_dict(state["held"])
        if "labels" in state:
            self._labels.load_state_dict(state["labels"], live)
        else:  # saved before labels were kept: recompute them in slot order
            self._labels = LabelSets(self._labels.promote, self._labels.key_of)
            slots = sorted(live)
            if slots:
                self._label(np.asarray(slots, np.intp), [live[slot] for slot in slots])

    def _check_routing(self, live: NDArray[np.intp]) -> None:
        """Refuse a routing that would index outside the rules' state (``ValueError``).

        A checkpoint's parts are checked one by one as they load; these ties between them
        are not, and a live slot routed to rule -1 crashed the process in a kernel (an
        unchecked index), at every start, since the same file was restored again.
        """
        rules = len(self.rules)
        if len(self._next_local) != rules or len(self._free_local) != rules:
            msg = (f"scorer state allocates for {len(self._next_local)} and "
                   f"{len(self._free_local)} rules; the settings have {rules}")
            raise ValueError(msg)
        if len(live) and int(live.max()) >= len(self._per_slot):
            msg = (f"scorer state has {len(self._per_slot)} slots; the series index uses "
                   f"slot {int(live.max())}")
            raise ValueError(msg)
        rule = self._per_slot.rule_of[live].astype(np.int64)
        local = self._per_slot.local[live].astype(np.int64)
        ends = np.array(self._next_local, np.int64)
        bad = (rule < 0) | (rule >= rules)
        bad |= ~bad & ((local < 0) | (local >= ends[np.clip(rule, 0, rules - 1)]))
        if bad.any():
            slot = int(live[np.argmax(bad)])
            msg = (f"scorer state routes slot {slot} to rule {int(rule[np.argmax(bad)])}, "
                   f"row {int(local[np.argmax(bad)])}, outside the rules' state")
            raise ValueError(msg)
        if len(np.unique(rule * (2**32) + local)) != len(live):
            msg = "scorer state gives two live series one detector row"
            raise ValueError(msg)
        for index, free in enumerate(self._free_local):
            if any(not 0 <= row < ends[index] for row in free):
                msg = f"scorer state frees rows outside rule {index}'s state"
                raise ValueError(msg)

    def labels(self, slot: int) -> Labels:
        """Prometheus labels of a slot, given once when the slot was assigned."""
        return self._labels.of(slot)

    def labels_of(self, slots: NDArray[np.intp]) -> NDArray[np.object_]:
        """``labels`` of each of ``slots`` (None: never assigned), a copy, in one lookup."""
        return self._labels.of_many(slots)

    def count_warming(self, slots: NDArray[np.intp]) -> int:
        """How many of ``slots`` are still warming up."""
        total = 0
        rules = self._per_slot.rule_of[slots] if len(slots) else slots
        for i, detector in enumerate(self.detectors):
            mine = slots[rules == i]
            if len(mine):
                total += int(detector.warming(self._local(mine)).sum())
        return total

    def sample(self, slots: NDArray[np.intp], values: NDArray[np.float64],
               ) -> tuple[NDArray[np.intp], NDArray[np.bool_], NDArray[np.float64]] | None:
        """The rows of one request to score, which to learn, and of how many each is the extreme.

        As the rules cap them; the last array is ``run``'s ``drawn``.

        None when every row is scored and learned (no rule caps its series' points, or no
        series has more than its cap). See ``row_sampling.sample_rows``. A young series
        (``young_series``) scores up to the points it still needs to come of age instead:
        a new operation's baseline then matures in one busy request, not in several.
        """
        if not self._capped:
            return None
        return sample_rows(slots, values, self._per_slot.rule_of, self._per_slot.age,
                              self._caps, self._sides, YOUNG_POINTS)

    def run(  # noqa: PLR0913 -- the batch, its keys and exemplars, and two row masks
        self,
        batch: SeriesBatch,
        key_of: Callable[[int], SeriesKey],
        exemplars: Mapping[int, tuple[bytes, bytes]],
        grace: NDArray[np.bool_] | None = None,
        learned: NDArray[np.bool_] | None = None,
        drawn: NDArray[np.float64] | None = None,
    ) -> tuple[ScoreBatch, list[AnomalyEvent]]:
        """Score then learn every row; return per-row outputs and the events raised.

        Rows marked in ``grace`` (their service was just deployed) open no anomaly; their
        gap to the expected value moves the series' level offset instead of teaching the
        detector (``processors.alerting.deploys``). Rows not marked in ``learned`` (when
        given) are scored and teach nothing (``sample``'s extremes); ``drawn`` (when given)
        says of how many rows each is the extreme, which widens its band
        (``row_sampling.max_of_n_band``).
        """
        n = len(batch)
        # Rows are reordered once so that every round is a contiguous slice (views, no
        # per-round gathers or scatters); outputs are put back in row order at the end.
        perm, bounds, round_rules = plan_rounds(
            self._per_slot.rule_of[batch.slots].astype(np.intp), batch.slots)
        ordered = batch if perm is None else batch.take(perm)
        if perm is not None:
            grace = None if grace is None else grace[perm]
            learned = None if learned is None else learned[perm]
            drawn = None if drawn is None else drawn[perm]
        out = np.empty((len(_FIELDS), n))
        flag = np.empty(n, np.bool_)
        events: list[AnomalyEvent] = []
        rounds = _Rounds(ordered, perm, grace, learned, drawn, out, flag, key_of, exemplars)
        for rule_index, a, b, scan in self._segments(round_rules, bounds, rounds):
            if scan:
                events += self._scan(rule_index, rounds, a, b)
            else:
                events += self._round(rule_index, rounds, a, b)
        if perm is not None:
            out[:, perm], flag[perm] = out.copy(), flag.copy()
        self.points_scored += n
        expected, lower, upper, score = out
        scores = ScoreBatch(batch.slots, batch.ts_unix_nano, batch.values, expected, lower,
                            upper, score, flag)
        return scores, events

    def _segments(self, round_rules: NDArray[np.int64], bounds: NDArray[np.int64],
                  rounds: _Rounds) -> list[tuple[int, int, int, bool]]:
        """The rounds as ``(rule, first row, end row, scanned)``.

        Consecutive scannable rounds of one rule are one scanned stretch (a rule's rounds
        are contiguous, and rows of one slot come in order in them, so its rows can be
        taken one by one); any other round is its own. Scannable: a ``row_scan`` rule's
        rounds of at most ``SCAN_ROWS`` rows, without row sampling; an ``ewma_scan`` rule's
        rounds of any size whose rows carry no exposure (``round_plan.scan_stretches``).
        Nothing is scanned with deploy grace, feedback, level offsets or a restored anomaly
        awaiting its announcement.
        """
        if (rounds.grace is not None or self.offsets.active or self.hysteresis.announcing
                or (self.feedback is not None and self.feedback.active)):
            return [(r, a, b, False) for r, a, b in zip(
                round_rules.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
        counts = rounds.ordered.counts
        out = np.empty((len(round_rules), 4), np.int64)
        m = scan_stretches(round_rules, bounds, self._scan_kind,
                           _NO_COUNTS if counts is None else counts, rounds.learned is not None,
                           SCAN_ROWS, out)
        return [(r, a, b, scan == 1) for r, a, b, scan in out[:m].tolist()]

    def _round(self, rule_index: int, rounds: _Rounds, a: int, b: int) -> list[AnomalyEvent]:
        """Score and learn rows ``a`` to ``b`` of ``rounds`` (distinct slots); their events."""
        ordered, grace, learned = rounds.ordered, rounds.grace, rounds.learned
        part = SeriesBatch(ordered.slots[a:b], ordered.ts_unix_nano[a:b], ordered.values[a:b],
                           None if ordered.counts is None else ordered.counts[a:b])
        calibrated, held, moves = self._step(
            rule_index, part, None if grace is None else grace[a:b],
            None if learned is None else learned[a:b],
            None if rounds.drawn is None else rounds.drawn[a:b])
        for i, name in enumerate(_FIELDS):
            rounds.out[i, a:b] = getattr(calibrated, name)
        rounds.flag[a:b] = moves.flag
        if not (_any(moves.opened) or _any(moves.updated) or _any(moves.closed)):
            return []
        evented = moves.opened | moves.updated | moves.closed
        rows = np.arange(a, b) if rounds.perm is None else rounds.perm[a:b]
        return self._events(rule_index, part, rows, held, moves, evented, rounds.key_of,
                            rounds.exemplars)

    def _scan(self, rule_index: int, rounds: _Rounds, lo: int, hi: int) -> list[AnomalyEvent]:
        """``_round`` of each of a scannable rule's rounds, rows ``lo`` to ``hi``.

        Quiet rows go through ``row_scan.scan_rows`` (or ``ewma_scan.scan_ewma_rows``)
        many at a time; the others, one by one, through ``_round``.
        """
        ordered = rounds.ordered
        slots, ts, values = ordered.slots, ordered.ts_unix_nano, ordered.values
        local = self._per_slot.local[slots].astype(np.intp)
        ewma = self._scan_kind[rule_index] == EWMA_SCAN
        # The rows' exposures (``row_scan``), or the rows a request's sample teaches.
        rows = ((_NO_TEACHING if rounds.learned is None else rounds.learned) if ewma
                else exposures(self.detectors[rule_index], ordered))
        scan = scan_ewma_rows if ewma else scan_rows
        events: list[AnomalyEvent] = []
        drawn = _NO_DRAWS if rounds.drawn is None else rounds.drawn
        args: tuple[Any, ...] | None = self._scan_args(rule_index, slots[lo:hi], local[lo:hi],
                                                       drawn)
        is_open = self.hysteresis.open_column  # it has the rows' slots now
        i = lo
        while i < hi:
            if not is_open[slots[i]]:
                if args is None:
                    args = self._scan_args(rule_index, slots[lo:hi], local[lo:hi], drawn)
                    is_open = self.hysteresis.open_column
                done = scan(i, hi, slots, local, ts, values, rows, rounds.out, is_open,
                            self._per_slot.age, *args)
                rounds.flag[i:done] = False
                i = done
                if i == hi:
                    break
            events += self._round(rule_index, rounds, i, i + 1)
            args = None  # what ``_step`` did may have replaced arrays: gather them again
            is_open = self.hysteresis.open_column
            i += 1
        if not ewma:
            rounds_learned(self.detectors[rule_index])
        self._agree, self._baseline = {}, None  # as a quiet round leaves them
        return events

    def _scan_args(self, rule_index: int, slots: NDArray[np.intp], local: NDArray[np.intp],
                   drawn: NDArray[np.float64]) -> tuple[Any, ...]:
        """The scan's arguments after its age column, rows made for every row's slot.

        ``drawn``: the rounds' extremes (``run``), which an ``ewma_scan`` takes with its band.
        """
        policy = self.rules[rule_index].alert
        if self._scan_kind[rule_index] == EWMA_SCAN:
            return ewma_scan_args(self.detectors[rule_index], self.calibrators[rule_index],
                                  self.held, self.hysteresis, policy, slots, local, drawn)
        return scan_args(self.detectors[rule_index], self.calibrators[rule_index], self.held,
                         self.hysteresis, policy, slots, local)

    def _step(
        self, rule_index: int, part: SeriesBatch, grace: NDArray[np.bool_] | None = None,
        learned: NDArray[np.bool_] | None = None, drawn: NDArray[np.float64] | None = None,
    ) -> tuple[Calibrated, Calibrated, Transitions]:
        """One round of distinct slots: predict, alert, then learn.

        Returns the exported band and score, the ones the alert followed, and the moves.
        """
        rnd = self._predict(rule_index, part, drawn)
        was_open = self.hysteresis.is_open(part.slots)  # before this round's points
        held, moves, alerting = self._alert(rule_index, rnd, was_open, grace)
        self._learn(rule_index, rnd, held, moves, alerting, was_open, grace, learned)
        return rnd.shown, held, moves

    def _predict(self, rule_index: int, part: SeriesBatch,
                 drawn: NDArray[np.float64] | None = None) -> ScoredRound:
        """The rule's band and score for each row, as the detector and the outside see them.

        ``drawn``: of how many of a request's rows each row is the extreme (None: one).
        """
        detector, calibrator = self.detectors[rule_index], self.calibrators[rule_index]
        shift = self.offsets.correction(part.slots)
        # What the detector and calibrator see: their own slots, the deploy offset removed.
        seen = SeriesBatch(self._local(part.slots), part.ts_unix_nano,
                           part.values if shift is None else shift.removed(part.values),
                           part.counts)
        spacing = self.hysteresis.spacing_s(part.slots)
        calibrated = calibrator.step(detector, seen, spacing,
                                     None if shift is None else part.values, drawn)
        shown = calibrated if shift is None else Calibrated(
            shift.restored(calibrated.expected), shift.restored(calibrated.lower),
            shift.restored(calibrated.upper), calibrated.score,
            None if calibrated.baseline is None else shift.restored(calibrated.baseline))
        if shift is not None and _relative(detector):  # amounts of an older checkpoint
            self.offsets.convert(part.slots, shift, calibrated.expected)
        return ScoredRound(part, seen, shift, spacing, calibrated, shown)

    def _alert(
        self, rule_index: int, rnd: ScoredRound, was_open: NDArray[np.bool_],
        grace: NDArray[np.bool_] | None,
    ) -> tuple[Calibrated, Transitions, NDArray[np.float64]]:
        """Advance the hysteresis; return the band the alert followed, the moves, the score.

        The score is the one the hysteresis saw (held, young-damped, quieted). The flag and
        the events follow the band the anomaly opened against; the exported score and band
        stay the detector's own (see ``processors.alerting.held_band``).
        """
        policy = self.rules[rule_index].alert
        part = rnd.part
        held, keep = rnd.shown, None
        if policy.hold_s > 0:  # also fits each series' trend, open or not
            held, keep = self.held.apply(part.slots, part.values, rnd.shown, was_open,
                                            part.ts_unix_nano, policy.hold_s, policy.direction,
                                            self._per_slot.direction, policy.accept_after_s,
                                            policy.close_odds, self.hysteresis.noise_columns())
        alerting = held.score if grace is None else np.where(grace, 0.0, held.score)
        alerting = young_damped(self._per_slot.age, part.slots, alerting,
                                rnd.calibrated.upper)
        if self.feedback is not None and self.feedback.active:
            heard = alerting
            alerting = self.feedback.quieted(part.slots, part.ts_unix_nano, alerting,
                                             part.values >= held.expected, self.labels)
            if keep is not None:  # a verdict or a silence outranks the hold
                keep = keep & (alerting >= heard)
        moves = self.hysteresis.step(part.slots, alerting, part.ts_unix_nano, policy, keep)
        if _any(moves.opened):
            rows = np.flatnonzero(moves.opened)
            self.held.remember(part.slots[rows], _take(held, rows), part.ts_unix_nano[rows])
        self._agree = self._agreeing(self.detectors[rule_index], rnd.seen, moves, policy)
        closing = self.held.active and _any(moves.closed)
        self._baseline = (
            moves.closed & self.held.outside(part.slots, part.values, policy.direction,
                                             self._per_slot.direction)
            if closing else None)
        if closing:
            held = self.held.closing(part.slots, held, moves.closed)
        return held, moves, alerting

    def _learn(  # noqa: PLR0913 -- the round, what the alert made of it, and two row masks
        self, rule_index: int, rnd: ScoredRound, held: Calibrated, moves: Transitions,
        alerting: NDArray[np.float64], was_open: NDArray[np.bool_],
        grace: NDArray[np.bool_] | None, learned: NDArray[np.bool_] | None = None,
    ) -> None:
        """Teach the detector and its calibrator the round, as the policy allows."""
        policy = self.rules[rule_index].alert
        detector, calibrator = self.detectors[rule_index], self.calibrators[rule_index]
        slots, calibrated = rnd.part.slots, rnd.calibrated
        # An anomaly's first point teaches the rarity tail (capped, see ``rarity.LEARN_CAP``);
        # the rest of a lasting one does not, or the next incident would look ordinary.
        quiet = ~moves.flag | moves.opened
        settled = (
            self.hysteresis.open_for(slots) > policy.relearn_after
            if policy.relearn_after > 0 else None
        )
        # Learn gating (one policy, also for the calibration): an open anomaly does not
        # teach the models, until it outlasts ``relearn_after``.
        gating = policy.learn_gating != "off"
        mask = None
        if gating:
            mask = ~was_open if settled is None else ~was_open | settled
        lesson = rnd.seen if gating else held_lesson(rnd, held)
        received = rnd.part.values
        learning = None if grace is None else ~grace
        if learned is not None and not learned.all():
            learning = learned if learning is None else learning & learned
        teaching = learning  # the rows the detector learns (the calibrator: ``learning``)
        if not (gating or detector.learns_held_rows):
            if held is not rnd.shown:
                # Rows scored against their anomaly's held band teach this detector nothing.
                holding = held_rows(rnd, held)
                if _any(holding):
                    learning = ~holding if learning is None else learning & ~holding
                    teaching = learning
            # Nor, on a young series, does a point that may start an anomaly: learned fully
            # by estimates that rest on a few dozen points, it widens the band so far that
            # the next slow point is inside it, and a lasting slowdown never opens. Older
            # series dilute it (learning it keeps their bands honest about isolated
            # outliers). Its calibrator still learns it: the rarity must know the real tail.
            pending = pending_rows(alerting, policy.open_threshold, moves.flag, moves.opened)
            if _any(pending):  # the slots' ages only then: most rounds have none
                pending &= self._per_slot.age[slots] < YOUNG_POINTS
                if _any(pending):
                    teaching = ~pending if learning is None else learning & ~pending
            if _any(was_open):
                lesson = self._within_hold(rnd, lesson, was_open, policy.hold_s)
        if learning is None and teaching is None:
            calibrator.learn(detector, lesson, calibrated, mask, rnd.spacing, quiet, received,
                             rnd.seen.values)
            detector.learn_round(gated(lesson, calibrated, policy, settled))
            return
        if grace is not None:
            # A deploy's level change goes into the offset; the detector keeps its shape.
            counted = calibrator.counted(detector, rnd.seen, received)[grace]
            self.offsets.absorb(slots[grace], lesson.values[grace], calibrated.expected[grace],
                                _relative(detector), counted, rnd.spacing[grace])
        keep = np.arange(len(slots)) if learning is None else np.flatnonzero(learning)
        kept = _take(calibrated, keep)
        calibrator.learn(detector, lesson.take(keep), kept,
                         None if mask is None else mask[keep], rnd.spacing[keep], quiet[keep],
                         received[keep], rnd.seen.values[keep])
        if teaching is not learning and teaching is not None:  # young pending rows left out
            keep = np.flatnonzero(teaching)
            kept = _take(calibrated, keep)
        detector.learn_round(gated(lesson.take(keep), kept, policy,
                                    None if settled is None else settled[keep]))

    def _within_hold(self, rnd: ScoredRound, lesson: SeriesBatch, was_open: NDArray[np.bool_],
                     hold_s: float) -> SeriesBatch:
        """``lesson`` with the rows of anomalies within their hold clipped to the held band.

        For detectors that learn no held row: a row its own band scored higher (a band the
        persistence alarm narrowed) is still part of the anomaly. Learned at its full
        deviation, a few such rows filled the members' tails, and the band stayed several
        times its width for hours after the incident
        (``tests/processors/test_latency_after_an_incident.py``).
        """
        found = self.held.limits_within_hold(rnd.part.slots, rnd.part.ts_unix_nano, was_open,
                                             hold_s)
        if found is None:
            return lesson
        rows, lower, upper = found
        if rnd.shift is not None:
            lower, upper = rnd.shift.removed(lower), rnd.shift.removed(upper)
        clipped = np.clip(lesson.values, lower, upper)
        return lesson.with_values(np.where(rows, clipped, lesson.values))

    @staticmethod
    def _agreeing(
        detector: Detector, seen: SeriesBatch, moves: Transitions, policy: AlertPolicy,
    ) -> dict[int, tuple[str, ...]]:
        """Which members see the rows that open or update (before learning) as out of band."""
        agreeing = getattr(detector, "agreeing", None)
        if agreeing is None or not (_any(moves.opened) or _any(moves.updated)):
            return {}
        at = np.flatnonzero(moves.opened | moves.updated)
        found = agreeing(seen.take(at), policy.band)
        return dict(zip(at.tolist(), found, strict=True))

    def _local(self, slots: NDArray[np.intp]) -> NDArray[np.intp]:
        """The rule-local slot of each engine slot (-1: none)."""
        return self._per_slot.local[slots].astype(np.intp)

    def _events(
        self, rule_index: int, part: SeriesBatch, rows: NDArray[np.intp], cal: Calibrated,
        moves: Transitions, evented: NDArray[np.bool_], key_of: Callable[[int], SeriesKey],
        exemplars: Mapping[int, tuple[bytes, bytes]],
    ) -> list[AnomalyEvent]:
        return round_events(
            self._per_slot, self.rules[rule_index].detector, part, rows, cal, moves, evented,
            key_of, exemplars, self._agree, self._baseline, self._drifts(part, cal, moves))

    def _drifts(self, part: SeriesBatch, cal: Calibrated, moves: Transitions
                ) -> dict[int, float]:
        """Drift per hour of the open and update rows still moving away (a leak).

        Only rows whose drift is significant on their anomaly's side are listed.
        """
        at = np.flatnonzero(moves.opened | moves.updated)
        if not len(at) or not self.held.active:
            return {}
        slots = part.slots[at]
        # An open's side is the one it opens on (round_events records it the same way).
        sides = np.where(moves.opened[at], np.where(part.values[at] >= cal.expected[at], 1, -1),
                         self._per_slot.direction[slots]).astype(np.int8)
        drifts = self.held.drifting(slots, sides)
        return {int(i): d for i, d in zip(at.tolist(), drifts, strict=True)
                if not math.isnan(d)}


_SIDES = {"up": UP, "down": DOWN, "both": BOTH}


@dataclass(frozen=True, slots=True)
class _Rounds:
    """One ``Scorer.run``: its rows in round order, row masks, outputs and event sources."""

    ordered: SeriesBatch
    perm: NDArray[np.intp] | None  # row order -> the batch's row (None: the same)
    grace: NDArray[np.bool_] | None
    learned: NDArray[np.bool_] | None
    drawn: NDArray[np.float64] | None  # of how many rows each is the extreme (None: one)
    out: NDArray[np.float64]  # _FIELDS x rows, in round order
    flag: NDArray[np.bool_]
    key_of: Callable[[int], SeriesKey]
    exemplars: Mapping[int, tuple[bytes, bytes]]


def _relative(detector: Detector) -> bool:
    """Whether a release moves this detector's series by a factor: it models log values."""
    return bool(getattr(detector, "log_transform", False))


def _any(mask: NDArray[np.bool_]) -> bool:
    """``mask.any()``, several times cheaper on a round's few rows.

    count_nonzero is a direct C call; ``any()`` runs its reduction through a Python wrapper
    (a round is often one row, and each round asks this a few times).
    """
    return bool(np.count_nonzero(mask))


def _take(cal: Calibrated, rows: NDArray[np.intp]) -> Calibrated:
    return Calibrated(cal.expected[rows], cal.lower[rows], cal.upper[rows], cal.score[rows],
                      edge=None if cal.edge is None else cal.edge[rows],
                      last_cycle=None if cal.last_cycle is None else cal.last_cycle[rows])
