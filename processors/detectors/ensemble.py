"""Ensemble: several detectors on the same series, each judged against its own usual tail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.tail_quantile import DeviationScale
from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.detectors import ensemble_kernels as kernels
from otel_anomaly.processors.detectors import ensemble_round, level_follow
from otel_anomaly.processors.detectors.base import Detector, Prediction, RoundMemo
from otel_anomaly.processors.detectors.ensemble_members import (
    DEFAULT_MEMBERS,
    MEMBER_TYPES,
    MemberSpec,
    member_label,
)
from otel_anomaly.processors.detectors.ewma_zscore import EwmaZScore
from otel_anomaly.processors.detectors.log_modulus import inverse_log_modulus, log_modulus
from otel_anomaly.processors.detectors.persistence import Persistence
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays, top_slot
from otel_anomaly.processors.types import SeriesBatch

_MAX_STRETCH = kernels.MAX_STRETCH
REFRACTORY_STEP_S = kernels.REFRACTORY_STEP_S
_MAX_AGE = kernels.MAX_AGE
WEEK_S = 604800.0  # the shortest profile cycle the level follows (level_follow)
_UNIT_BAND = np.ones(1)  # the members' band one spread wide (an array: no conversion)

class _Round(NamedTuple):
    """The members' raw views of a round, one column per member (see ``ensemble_kernels``)."""

    expected: NDArray[np.float64]
    upper: NDArray[np.float64]  # the member's band one spread unit wide; NaN while warming
    lower: NDArray[np.float64]
    floor: NDArray[np.float64]  # the member's smallest spread
    mult: NDArray[np.float64]  # its tail multiplier
    narrow_up: NDArray[np.float64]  # persistence narrowing (ones when disabled)
    narrow_down: NDArray[np.float64]
    recent: NDArray[np.float64]  # per row: the last excursion's score, decayed (refractory)
    widening: NDArray[np.float64]  # per row: the band's stretch after that excursion
    # The fused kernels only: each profile's gathered phase, which the lessons learn from.
    phases: tuple[Any, ...] | None = None
    # The level's step along the weekly profile, the profile's value and spread and the
    # level's extra variance per row (``level_follow``), which the lessons keep; None: not
    # followed.
    follow: tuple[Any, ...] | None = None

    def z(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per row and member the deviation in scaled, narrowed spreads (0 while warming)."""
        return kernels.member_z(values, self.expected, self.upper, self.lower, self.floor,
                                self.mult, self.narrow_up, self.narrow_down)


class Ensemble(Detector):
    """Several detectors on one series, each judged against its own usual deviations.

    Every member's deviation is put in Gaussian-equivalent sigmas by a per-member
    ``DeviationScale``: divided by the member's spread (floored at half its plain mean
    absolute deviation, so resting-at-zero series stay finite) and by its tail multiplier
    ``max(q, g) / g`` (``q`` the member's running ``tail_quantile`` of deviations over about
    ``tail_window`` points, ``g`` that of a normal). A member that fits the series well
    keeps its sigmas; one that fits badly (a level model on a seasonal series, any model
    on a bursty one) is scaled down until its usual extremes look like a normal tail. The
    calibrator therefore applies the alert band to the ensemble as it is.

    ``combine="max"``: a row is as anomalous as its most surprised member; the band is the
    intersection of the members' bands (so the score equals ``band`` at its edge), and the
    expected value is kept within its middle half (members that disagree could otherwise
    leave it next to an edge, where a value just past the edge would score far out).
    ``combine="fallback"``: the last member in ``members`` past its warm-up decides alone
    (list the most specific model last): e.g. a level model carries a new series until
    its daily profile has two days of history. ``expected`` comes from the last ready
    member either way, kept inside the band.

    Cost per row: the members' cost plus one histogram lookup per member; state: the
    members' state plus 194 bytes per member and slot (the tail histogram: 58 24-bit bins).

    Parameters
    ----------
    members
        Member detectors as ``(type, ((param, value), ...))`` pairs; types from
        ``MEMBER_TYPES``. The default: a level (EWMA, alpha 0.02), then a daily profile
        (5 min phases, tolerant to 20 min of phase jitter), then a weekly one (hourly
        phases). A shape member (``discord``) is opt-in, not among them.
    combine
        ``max`` or ``fallback`` (see above).
    tail_quantile
        Quantile of each member's deviations that defines its usual extreme, in (0, 1).
    tail_window
        Points the tail statistics effectively remember (exponential decay), >= 2. The
        default members instead remember a week of event time at each row's gap since the
        slot's previous one (``ensemble_kernels.tail_memory``), and ``tail_window`` points
        only at a slot's first row and after a silence of over two hours. In points, 5,000
        were 21 hours at 15-s points, where a tail that followed a latency leak's climb left
        8 of 10 unflagged for its 12 hours (``benchmarks/incidents.py --step 15
        --intervals``), and 208 days at hourly ones, where a week of wide swings still set
        every member's floor and tail three calm weeks later (msmon's hourly series: 128 ->
        138 of 256 events caught; NAB's held-out half at the tuning half's threshold 55.2 ->
        58.2).
    refractory_level
        After an excursion, the band stretches by ``max(1, peak / refractory_level)``
        (``peak`` the excursion's combined score), so the rest of one event does not score
        as a new anomaly while a bigger one still does. 0 disables it.
    refractory_hold
        Points the stretch holds at full strength after the peak, >= 0. Age is counted in
        points or in ``REFRACTORY_STEP_S`` steps of event time, whichever are more.
    refractory_decay
        Per-point (per-step) decay of the stretch after the hold, in (0, 1].
    refractory_grace
        Points right after the peak that are still scored unstretched (an anomaly that
        needs ``min_duration`` points to open is not suppressed by its own start), >= 0;
        so are those within as many ``REFRACTORY_STEP_S`` of event time, where that is
        longer (its evidence is gathered in event time: ``AlertPolicy.evidence_point_s``).
    persistence_alpha
        Weight of the newest point in each member's running average of its signed
        deviations, in [0, 1) (about ``1 / alpha`` points of memory); 0 disables. While
        that average stays beyond ``persistence_level`` times its usual size (a level shift,
        a latency regression: deviations that keep one sign), the member's band narrows on
        that side only, by ``persistence_level * usual / |average|``; bursty noise, which
        changes sign, averages out and is not affected.
    persistence_level
        How many times its usual size the average must reach before the band narrows, > 0.
    persistence_shrink
        The narrowest the band gets on the shifted side, as a share of its width, in (0, 1].
    persistence_window
        Points the usual size of the average effectively remembers, >= 2: a shift that
        lasts well beyond it (that the members do not re-learn) stops narrowing the band.
        With the default members, also at least a day of event time
        (``ensemble_kernels.USUAL_MEMORY_NS``): 1,200 points are 5 hours at 15-s points, where
        the usual size followed a latency leak's climb (with the week-long tails, leaks
        were flagged 4 to 7 hours in; with a day here, within 2: ``benchmarks/incidents.py
        --step 15 --intervals`` latency_leak median delay 1353 -> 335 points; 2-minute and
        slower points unchanged).
    persistence_alarm
        Narrow the shifted side to ``persistence_shrink`` at once when the average passes
        ``persistence_level`` usual sizes (an EWMA control chart's alarm), instead of by
        ``persistence_level * usual / |average|``. For series noisy from point to point,
        such as latency quantiles: a p99 that doubles is only 4 to 5 of its sigmas per
        point, within the band, but its average leaves the chart's limit within minutes.
    log_transform
        Model the log-modulus ``sign(x) * log(1 + |x| / log_offset)`` of each value instead
        of the value: for series that vary by factors, such as latencies. Members, tails
        and persistence all work on it; the band is mapped back, so it is wider above the
        expected value than below. The rows of an anomaly held against the band it opened
        against teach it nothing (its other rows within the hold at most that band), nor,
        on a young series, the points that may start one (``learns_held_rows``).
    log_offset
        Where the transform turns from linear to logarithmic, in the series' unit, > 0.
    level_follows_season
        Carry the first member, a level (``ewma_zscore``), along the step the last member,
        a weekly profile, foresees between a series' points (``level_follow``), so a
        weekly step (the start of a quiet day) is not an anomaly of the lagging level.
        Only with those two members; off otherwise.

    Examples
    --------
    >>> det = Ensemble(members=(("ewma_zscore", (("warmup", 5),)),), tail_window=100)
    >>> det.learn(SeriesBatch.of([0] * 40, [10.0, 11.0, 9.0, 10.0] * 10))
    >>> det.score(SeriesBatch.of([0, 0], [10.2, 30.0])).round(1)
    array([ 0.3, 30.4])

    References
    ----------
    [^1]: Aggarwal, C. C., & Sathe, S. (2017). Outlier Ensembles: An Introduction.
        Springer. (Score normalisation before combination.)
    [^2]: Ahmad, S., Lavin, A., Purdy, S., & Agha, Z. (2017). Unsupervised real-time
        anomaly detection for streaming data. Neurocomputing, 262, 134-147.
    """

    name: ClassVar[str] = "ensemble"
    _CENTRE: ClassVar[float] = 0.25  # the expected value stays this share inside the band
    self_calibrating: ClassVar[bool] = True

    def __init__(
        self, *, members: tuple[MemberSpec, ...] = DEFAULT_MEMBERS, combine: str = "max",
        tail_quantile: float = 0.999, tail_window: int = 5000, refractory_level: float = 3.5,
        refractory_hold: int = 10, refractory_decay: float = 0.95, refractory_grace: int = 2,
        persistence_alpha: float = 0.1, persistence_level: float = 4.0,
        persistence_shrink: float = 0.3, persistence_window: int = 1200,
        persistence_alarm: bool = False, log_transform: bool = False, log_offset: float = 1.0,
        level_follows_season: bool = True,
    ) -> None:
        if not members:
            msg = "ensemble: members must name at least one detector"
            raise ValueError(msg)
        unknown = [m[0] for m in members if m[0] not in MEMBER_TYPES]
        if unknown:
            msg = (f"ensemble: unknown member type(s) {unknown}; expected one of "
                   f"{sorted(MEMBER_TYPES)}")
            raise ValueError(msg)
        if combine not in ("max", "fallback"):
            msg = f"ensemble: combine must be 'max' or 'fallback'; got {combine!r}"
            raise ValueError(msg)
        self.members = members
        self.combine = combine
        self.tail_quantile = tail_quantile
        self.tail_window = tail_window
        if (refractory_level < 0 or refractory_hold < 0 or refractory_grace < 0
                or not 0.0 < refractory_decay <= 1.0):
            msg = (f"ensemble: refractory_level, refractory_hold and refractory_grace must be "
                   f">= 0 and refractory_decay in (0, 1]; got {refractory_level}, "
                   f"{refractory_hold}, {refractory_grace}, {refractory_decay}")
            raise ValueError(msg)
        self.refractory_level = refractory_level
        self.refractory_hold = refractory_hold
        self.refractory_decay = refractory_decay
        self.refractory_grace = refractory_grace
        if (not 0.0 <= persistence_alpha < 1.0 or persistence_level <= 0
                or not 0.0 < persistence_shrink <= 1.0 or persistence_window < 2):
            msg = (f"ensemble: persistence_alpha must be in [0, 1), persistence_level > 0, "
                   f"persistence_shrink in (0, 1] and persistence_window >= 2; got "
                   f"{persistence_alpha}, {persistence_level}, {persistence_shrink}, "
                   f"{persistence_window}")
            raise ValueError(msg)
        if log_offset <= 0:
            msg = f"ensemble: log_offset must be > 0; got {log_offset}"
            raise ValueError(msg)
        self.log_transform = log_transform
        # In log space an open anomaly teaches nothing while it is held: its lessons sit at
        # the edge of the band it opened against, far out for the members (that band is
        # the members' spread times their tail multipliers times the alert's rarity edge),
        # so each one widens their spreads and tails, and a wider log-space band is wider
        # by a factor. On a young p95 that slowed 5x the band's top reached 100 s around
        # 160 ms within 3 minutes. Likewise the first slow point of a young series, which
        # waits for a second one to open: learned, it put the second inside the band. On
        # values as they are, NAB's spiky series need those lessons (see
        # ``learns_held_rows``).
        self.learns_held_rows = not log_transform
        self.log_offset = log_offset
        self.persistence_alpha = persistence_alpha
        self.persistence_level = persistence_level
        self.persistence_shrink = persistence_shrink
        self.persistence_window = persistence_window
        self.persistence_alarm = persistence_alarm
        self._persistence = Persistence(
            columns=len(members), alpha=persistence_alpha, level=persistence_level,
            shrink=persistence_shrink, window=persistence_window, alarm=persistence_alarm)
        # The last excursion's score, and the points since.
        self._slots = SlotArrays(peak=Column(np.float32, 0.0), age=Column(np.int32),
                                 peak_ns=Column(np.int64),
                                 # level_follow: the weekly profile's value and spread at
                                 # the last point (NaN: not seen, not ready) and the
                                 # level's extra variance.
                                 follow_ref=Column(np.float64, np.nan, (2,)),
                                 follow_var=Column(np.float32, 0.0))
        self.level_follows_season = level_follows_season
        self._follows = level_follows_season and _follows_season(members)
        self._members = [MEMBER_TYPES[kind](**dict(params)) for kind, params in members]
        # Its own learning is compiled kernels; the members' may not be.
        self.compiled_learning = all(m.compiled_learning for m in self._members)
        self._scales = [DeviationScale(q=tail_quantile, window=tail_window) for _ in members]
        # The default members' views of a round, and its lessons, are one kernel call each
        # (``ensemble_round``), their arguments kept until an array is replaced.
        # The default members also on the general path, for their event-time memories.
        self._defaults = ensemble_round.default_members(self._members)
        self._fused = (self._defaults
                       if persistence_alpha > 0 and refractory_level > 0 else None)
        self._fused_holders = (() if self._fused is None else
                               ensemble_round.state_holders(self, self._fused))
        self._fused_cache: ensemble_round.RoundArgs | None = None
        # The members' views of a round, computed to score it and reused to learn it.
        self._memo = RoundMemo(values=any(m.band_follows_value for m in self._members))
        # The round's log-modulus (``log_transform``): predicted, scored, then learned.
        self._seen_memo = RoundMemo(values=True)

    def _round(self, batch: SeriesBatch) -> _Round:
        """The members' views of ``batch`` (values already ``_seen``), memoised until learning."""
        cached: _Round | None = self._memo.get(batch)
        if cached is not None:
            return cached
        if self._fused is not None:
            views = self._fused_views(batch, self._fused)
            out = _Round._make((*views[:9], views[9:19], views[19:22]))
            self._memo.put(batch, out)
            return out
        shape = (len(batch), len(self._members))
        expected, upper, lower = np.empty(shape), np.empty(shape), np.empty(shape)
        floor, mult = np.empty(shape), np.empty(shape)
        for i, (member, scale) in enumerate(zip(self._members, self._scales, strict=True)):
            p = member.predict(batch, _UNIT_BAND)
            expected[:, i], upper[:, i], lower[:, i] = p.expected, p.upper, p.lower
            scale.spread_terms(batch.slots, floor, mult, i)
        if self.persistence_alpha > 0:
            # A lasting one-sided deviation narrows that side of the member's band.
            narrow_up, narrow_down = self._persistence.factor(batch.slots)
        else:
            narrow_up = narrow_down = np.ones(shape)
        recent = self._recent_peak(batch.slots, batch.ts_unix_nano)
        follow = None
        if self._follows:
            self._ensure(batch.slots)
            follow = level_follow.follow_rows(batch.slots, expected, upper, lower,
                                              self._slots.follow_ref, self._slots.follow_var)
        out = _Round(expected, upper, lower, floor, mult, narrow_up, narrow_down, recent,
                     self._widening(batch.slots, batch.ts_unix_nano, recent), follow=follow)
        self._memo.put(batch, out)
        return out

    def _fused_views(self, batch: SeriesBatch, members: ensemble_round.DefaultMembers,
                     ) -> tuple[Any, ...]:
        """``_round``'s arrays from ``ensemble_round.round_views`` (the default members)."""
        args = self._fused_args(batch.slots, members)
        views: tuple[Any, ...] = ensemble_round.round_views(
            batch.slots, batch.ts_unix_nano, *args.views)
        return views

    def _fused_lessons(self, batch: SeriesBatch, r: _Round,
                       members: ensemble_round.DefaultMembers) -> None:
        """``_learn_unique`` through ``ensemble_round.round_lessons`` (the default members)."""
        args = self._fused_args(batch.slots, members)
        ensemble_round.round_lessons(
            batch.slots, batch.ts_unix_nano, batch.values,
            (r.expected, r.upper, r.lower, r.floor, r.mult, r.recent, *(r.phases or ()),
             *(r.follow or ())),
            *args.lessons)
        self.rounds_learned()

    @property
    def fused_round_ready(self) -> bool:
        """Whether a round is the one-call kernels of ``ensemble_round`` (default members)."""
        return self._fused is not None

    def fused_round(self, slots: NDArray[np.intp]) -> ensemble_round.RoundArgs:
        """Those kernels' arguments, rows made for ``slots`` (``fused_round_ready`` only).

        For a caller that runs rounds in the kernels itself (``row_scan``): it must call
        ``rounds_learned`` when done, since what this ensemble kept of a round is stale.
        """
        assert self._fused is not None  # noqa: S101 -- the caller checked fused_round_ready
        return self._fused_args(slots, self._fused)

    def band_settings(self) -> tuple[bool, float]:
        """What ``ensemble_kernels.band`` takes of this ensemble: max-combined, centre share."""
        return self.combine == "max", self._CENTRE

    def rounds_learned(self) -> None:
        """Forget what was kept of a round: rounds were learned outside ``learn_round``."""
        for profile in (self._fused or ())[1:]:
            profile._memo.clear()  # noqa: SLF001 -- what it gathered before is stale now
        self._memo.clear()
        self._seen_memo.clear()

    def _fused_args(self, slots: NDArray[np.intp], members: ensemble_round.DefaultMembers,
                    ) -> ensemble_round.RoundArgs:
        """The one-call kernels' arguments for ``slots``, their rows made to exist.

        Built again only when an array was replaced (grown, restored) or ``slots`` reach
        past the rows every holder has: on a round of one row, building them cost as much
        as the kernel.
        """
        cached = self._fused_cache
        holders = self._fused_holders
        if (cached is not None and top_slot(slots) < cached.rows
                and cached.generations == tuple(h.generation for h in holders)):
            return cached
        self._fused_cache = None  # growing below must be free to let go of the old arrays
        for holder in holders:
            holder.ensure(slots)
        built = ensemble_round.round_args(self, members, holders)
        self._fused_cache = built
        return built

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def _before_growing(self, slots: NDArray[np.intp]) -> None:
        """Drop the kept kernel arguments if ``slots`` will make the state arrays grow.

        They hold every holder's arrays: kept while the holders grow one by one (new series
        reset their rows), the old copies of all of them stayed alive until the next round,
        a peak of 1.6x the state at 100,000 series (``benchmarks/memory.py``).
        """
        cached = self._fused_cache
        if cached is not None and top_slot(slots) >= cached.rows:
            self._fused_cache = None

    def _recent_peak(self, slots: NDArray[np.intp],
                     ts_unix_nano: NDArray[np.int64]) -> NDArray[np.float64]:
        """The last excursion's score, held ``refractory_hold`` points then decaying.

        Its age is counted in points or in steps of ``REFRACTORY_STEP_S`` of event time,
        whichever is more: on an hourly series, ten points would stretch the band for ten
        hours after one spike. (The stored age counts the points learned since the peak,
        one fewer than the steps from the peak to the row at hand.)
        """
        if self.refractory_level <= 0:
            return np.zeros(len(slots))
        self._ensure(slots)
        return kernels.recent_peak(self._slots.peak, self._slots.age, self._slots.peak_ns,
                                   slots, ts_unix_nano, REFRACTORY_STEP_S * 1e9,
                                   self.refractory_hold, self.refractory_decay)

    def _widening(self, slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64],
                  recent: NDArray[np.float64]) -> NDArray[np.float64]:
        """Band stretch after an excursion: ``max(1, recent peak / refractory_level)``.

        Capped: after a first point millions of sigmas out (traffic after a week of zeros)
        an unbounded stretch would blind the series for hours. The points right after an
        excursion's peak are scored in full: an anomaly that needs several points in a row
        to open is not stretched away by its own start. That grace lasts
        ``refractory_grace`` points, or as many ``REFRACTORY_STEP_S`` of event time if that
        is longer: an anomaly's evidence is gathered in event time
        (``AlertPolicy.evidence_point_s``), so closer points need more of them.
        """
        if self.refractory_level <= 0:
            return np.ones(len(slots))
        return kernels.widening(recent, self._slots.age, self._slots.peak_ns, slots,
                                ts_unix_nano, REFRACTORY_STEP_S * 1e9, self.refractory_level,
                                _MAX_STRETCH, self.refractory_grace)

    def _seen(self, batch: SeriesBatch) -> SeriesBatch:
        """What the members see: the values, or their log-modulus (``log_transform``).

        ``sign(x) * log(1 + |x| / log_offset)``: logarithmic for values well above the
        offset, linear near 0, and mirrored for negative values, so it is monotonic and
        invertible over every value (a series that dips below 0 is not squashed flat).
        """
        if not self.log_transform:
            return batch
        seen: SeriesBatch | None = self._seen_memo.get(batch)
        if seen is None:
            seen = SeriesBatch(batch.slots, batch.ts_unix_nano,
                               log_modulus(batch.values, self.log_offset))
            self._seen_memo.put(batch, seen)
        return seen

    def _unseen(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """The inverse of ``_seen`` (an overflow becomes an infinite edge)."""
        return inverse_log_modulus(values, self.log_offset)

    def agreeing(self, batch: SeriesBatch, band: float) -> list[tuple[str, ...]]:
        """Per row, the members whose own deviation reaches ``band`` sigmas (for people).

        Pure; meant for the few rows that raise an event, so it is not optimised.
        """
        batch = self._seen(batch)
        names = [member_label(kind, dict(params)) for kind, params in self.members]
        beyond = self._round(batch).z(batch.values) >= band
        return [tuple(name for name, hit in zip(names, row, strict=True) if hit)
                for row in beyond]

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """The combined band, ``band`` Gaussian-equivalent sigmas wide. Pure.

        ``max``: the intersection of the members' bands (a point where they disagree by
        more than their bands); the expected value is kept ``_CENTRE`` of the band's width
        inside its edges, since the score counts beyond an edge in units of the distance
        from the expected value to it, and members that disagree (a lagging level inside a
        daily cycle) could squeeze that distance to nothing.
        """
        batch = self._seen(batch)
        r = self._round(batch)
        width = r.widening * band
        with float_warnings_ignored():
            expected, lower, upper, baseline = kernels.band(
                r.expected, r.upper, r.lower, r.floor, r.mult, r.narrow_up, r.narrow_down,
                width, self.combine == "max", self._CENTRE)
        last_cycle = self._last_cycle(batch, r.expected[:, -1])
        if self.log_transform:
            expected, lower, upper, baseline = (
                self._unseen(x) for x in (expected, lower, upper, baseline))
            last_cycle = None if last_cycle is None else self._unseen(last_cycle)
        return Prediction(expected, lower, upper, baseline, last_cycle)

    def _last_cycle(self, batch: SeriesBatch,
                    expected: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """``Prediction.last_cycle``: the last member's expected value, if a seasonal one.

        ``expected``: that member's column of the round. NaN where its slot is younger
        than its cycle; None if the last member is no seasonal profile, or if no row has a
        count (``SeriesBatch.counts``): only a count's tests read it, and most rounds are
        of gauges.
        """
        last = self._members[-1]
        if batch.counts is None or not isinstance(last, SeasonalProfile):
            return None
        out: NDArray[np.float64] = np.where(last.cycle_old(batch), expected, np.nan)
        return out

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Deviation in Gaussian-equivalent sigmas (0 while warming). Pure."""
        batch = self._seen(batch)
        r = self._round(batch)
        combined = kernels.combine(r.z(batch.values), r.upper, self.combine == "max")
        out = combined / r.widening
        return np.where(np.isfinite(batch.values), out, np.nan)

    def scored(self, batch: SeriesBatch) -> NDArray[np.bool_]:
        """True where any member scores the row."""
        batch = self._seen(batch)
        out = np.zeros(len(batch), np.bool_)
        for member in self._members:
            out |= member.scored(batch)
        return out

    def _learn_unique(self, batch: SeriesBatch) -> None:
        batch = self._seen(batch)
        r = self._round(batch)
        if self._fused is not None:
            self._fused_lessons(batch, r, self._fused)
            return
        combined, signed, unit, resid, ready, ready_rows = kernels.lessons(
            batch.values, r.expected, r.upper, r.lower, r.floor, r.mult,
            self.combine == "max")
        if self.refractory_level > 0:
            # The excursion memory learns the unstretched score: a bigger excursion than
            # the last one becomes the new peak, smaller ones let the old one fade.
            kernels.learn_peak(self._slots.peak, self._slots.age, self._slots.peak_ns,
                               batch.slots, batch.ts_unix_nano, combined, r.recent, _MAX_AGE)
        timed = self._timed_memories(batch)
        if self.persistence_alpha > 0:
            self._persistence.update(batch.slots, signed, ready,
                                     None if timed is None else timed[0])
        if r.follow is not None:
            level = self._members[0]
            assert isinstance(level, EwmaZScore)  # noqa: S101 -- _follows_season said so
            level._ensure(batch.slots)  # noqa: SLF001 -- its mean moves before it learns
            step, keep, extra = r.follow
            level_follow.learn_follow(batch.slots, level._slots.mean,  # noqa: SLF001
                                      self._slots.follow_ref, self._slots.follow_var,
                                      step, keep, extra, level.alpha)
        for i, (member, scale, on) in enumerate(
                zip(self._members, self._scales, ready_rows.tolist(), strict=True)):
            if timed is not None:
                scale.ensure(batch.slots)
                ensemble_round.scale_update(batch.slots, unit, resid, ready, on, i, timed[1],
                                            *scale.learn_columns())
            elif on == len(batch):
                scale.update(batch.slots, unit[:, i], resid[:, i])
            elif on:
                rows = ready[:, i]
                scale.update(batch.slots[rows], unit[rows, i], resid[rows, i])
            member._learn_unique(batch)  # noqa: SLF001 - same contract, rows already unique
        self._memo.clear()
        self._seen_memo.clear()  # the round is learned: let go of its arrays

    def _timed_memories(self, batch: SeriesBatch) -> tuple[Any, Any] | None:
        """Per row, the points the usual sizes and the tails remember.

        For the default members, as the one-call round reads them
        (``ensemble_round.memories``), so they remember the same event time on either path
        (the general one is taken with ``refractory_level`` or ``persistence_alpha`` 0);
        None for other member lists, whose memories are points only.
        """
        if self._defaults is None:
            return None
        daily = self._defaults[1]
        daily._ensure(batch.slots)  # noqa: SLF001 -- read before it learns the round
        columns = daily._slots  # noqa: SLF001
        usual, tails = ensemble_round.memories(batch.slots, batch.ts_unix_nano, columns.n,
                                               columns.last, self.persistence_window,
                                               self.tail_window)
        return usual, tails

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots`` in every member."""
        self._memo.clear()
        self._before_growing(slots)
        for member, scale in zip(self._members, self._scales, strict=True):
            member.reset(slots)
            scale.reset(slots)
        self._persistence.reset(slots)
        self._slots.reset(slots)

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True while every member warms up."""
        self._before_growing(slots)
        out = np.ones(len(slots), np.bool_)
        for member in self._members:
            out &= member.warming(slots)
        return out

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Members' and scales' arrays, prefixed ``m<i>.`` and ``s<i>.``."""
        out = self._slots.state_dict()
        out |= {f"p.{k}": v for k, v in self._persistence.state_dict().items()}
        for i, (member, scale) in enumerate(zip(self._members, self._scales, strict=True)):
            out |= {f"m{i}.{k}": v for k, v in member.state_dict().items()}
            out |= {f"s{i}.{k}": v for k, v in scale.state_dict().items()}
        return out

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore arrays from ``state_dict``."""
        self._memo.clear()
        self._fused_cache = None  # the arrays it holds are being replaced
        if "peak_ns" not in state and "peak" in state:
            # Saved before excursions kept their time: a time of "never" leaves their
            # refractory age counted in points until the next excursion.
            never = np.iinfo(np.int64).max
            state = {**state, "peak_ns": np.full(len(state["peak"]), never, np.int64)}
        self._slots.load_state_dict(state)
        self._persistence.load_state_dict(_prefixed(state, "p."))
        for i, (member, scale) in enumerate(zip(self._members, self._scales, strict=True)):
            member.load_state_dict(_prefixed(state, f"m{i}."))
            scale.load_state_dict(_prefixed(state, f"s{i}."))

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}  # the default members: their one-call round (``ensemble_round``)
        yield {"members": (("ewma_zscore", (("warmup", 10),)),
                           ("seasonal_profile", (("period_s", 60.0), ("buckets", 12),
                                                 ("warmup_cycles", 1.0)))),
               "combine": "max"}
        yield {"members": (("ewma_zscore", (("alpha", 0.2), ("warmup", 3))),
                           ("seasonal_profile", (("period_s", 20.0), ("buckets", 4)))),
               "tail_quantile": 0.9, "tail_window": 50}
        yield {"members": (("ewma_zscore", (("warmup", 10),)),), "log_transform": True,
               "log_offset": 0.5, "persistence_alarm": True}
        yield {"members": (("ewma_zscore", (("warmup", 10),)),
                           ("discord", (("length", 4), ("history", 16))))}


def _follows_season(members: tuple[MemberSpec, ...]) -> bool:
    """Whether ``members`` are a level first and a weekly (or longer) profile last."""
    if len(members) < 2:  # noqa: PLR2004 -- a level and a profile
        return False
    (first, first_params), (last, last_params) = members[0], members[-1]
    period = float(dict(last_params).get("period_s", 86400.0))
    return (first == "ewma_zscore" and not dict(first_params).get("log_transform", False)
            and last == "seasonal_profile" and period >= WEEK_S)


def _prefixed(state: dict[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
