"""The default ensemble's round in two kernel calls: its views, then its lessons.

``Ensemble._round`` asks each member for its band, each member's ``DeviationScale`` for its
floor and tail multiplier, and the ensemble's own state for persistence narrowing and the
refractory stretch; learning a round asks as many objects again. That is about twenty
kernel calls and their Python wrappers per round. On a round of one row (a backtest of one
series, a series that reports alone) the wrappers cost more than the arithmetic: one row's
``Ensemble.predict`` took 145 us, the same kernels composed in one compiled call 17 us.
``round_views`` and ``round_lessons`` are those calls, for the default members (a level,
then two seasonal profiles, none on log values; the ensemble itself may model logs); other
compositions take the general path. They call the very kernels the members and scales
call, in the same order, so their results are the general path's, bit for bit
(``tests/processors/detectors/test_ensemble_round.py``); the lessons learn the profiles from
the phases the views gathered, as the profiles' ``_memo`` does on the general path.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from otel_anomaly.processors.alerting import tail_quantile
from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.detectors import (
    ensemble_kernels,
    level_follow,
    persistence,
    seasonal_kernels,
)
from otel_anomaly.processors.detectors import ewma_zscore as ewma
from otel_anomaly.processors.detectors.base import Detector
from otel_anomaly.processors.detectors.seasonal_profile import SeasonalProfile
from otel_anomaly.processors.series.slot_arrays import SlotArrays

if TYPE_CHECKING:
    from otel_anomaly.processors.detectors.ensemble import Ensemble

__all__ = ["RoundArgs", "default_members", "round_args", "round_lessons", "round_views",
           "state_holders"]

DefaultMembers = tuple[ewma.EwmaZScore, SeasonalProfile, SeasonalProfile]


def default_members(members: list[Detector]) -> DefaultMembers | None:
    """``members`` if ``round_views`` computes their views (a level, two profiles), else None."""
    if len(members) != 3:
        return None
    level, daily, weekly = members
    # The exact classes: a subclass may score differently from the kernels called here.
    if (type(level) is ewma.EwmaZScore and not level.log_transform
            and type(daily) is SeasonalProfile and type(weekly) is SeasonalProfile):
        return level, daily, weekly
    return None


class RoundArgs(NamedTuple):
    """The arguments of ``round_views`` and ``round_lessons`` after the round's rows.

    Valid while no holder's arrays were replaced (``generations``) and for slots below
    ``rows``.
    """

    generations: tuple[int, ...]
    rows: int
    views: tuple[Any, ...]
    lessons: tuple[Any, ...]


def state_holders(ensemble: Ensemble, members: DefaultMembers) -> tuple[SlotArrays, ...]:
    """Every ``SlotArrays`` the two kernels read or write."""
    level, daily, weekly = members
    scales = ensemble._scales  # noqa: SLF001 -- the ensemble's own parts, read by its kernels
    return (level._slots, daily._slots, weekly._slots,  # noqa: SLF001
            *(holder for scale in scales for holder in scale.holders()),
            ensemble._persistence._slots, ensemble._slots)  # noqa: SLF001


def round_args(ensemble: Ensemble, members: DefaultMembers,
               holders: tuple[SlotArrays, ...]) -> RoundArgs:
    """The kernels' arguments from the ensemble's parts as they are now."""
    level, daily, weekly = members
    lv = level._slots  # noqa: SLF001
    p = ensemble._persistence  # noqa: SLF001
    ex = ensemble._slots  # noqa: SLF001
    scales = ensemble._scales  # noqa: SLF001
    views = ((lv.n, lv.mean, lv.dev, level.warmup), profile_args(daily), profile_args(weekly),
             tuple(x for scale in scales for x in scale.spread_columns()),
             (p._slots.d, p._slots.v, p.level, p.shrink, p._prior, p.alarm),  # noqa: SLF001
             (ex.peak, ex.age, ex.peak_ns, ensemble_kernels.REFRACTORY_STEP_S * 1e9,
              ensemble.refractory_hold, ensemble.refractory_decay, ensemble.refractory_level,
              ensemble_kernels.MAX_STRETCH, ensemble.refractory_grace),
             (ensemble._follows, ex.follow_ref, ex.follow_var))  # noqa: SLF001
    lessons = (ensemble.combine == "max", (lv.n, lv.mean, lv.dev, level.alpha, level.warmup),
               profile_learn_args(daily), profile_learn_args(weekly),
               tuple(scale.learn_columns() for scale in scales),
               (p._slots.d, p._slots.v, p.alpha, p._prior, p.window),  # noqa: SLF001
               (ex.peak, ex.age, ex.peak_ns, ensemble_kernels.MAX_AGE),
               (ensemble._follows, ex.follow_ref, ex.follow_var))  # noqa: SLF001
    return RoundArgs(tuple(h.generation for h in holders), min(len(h) for h in holders),
                     views, lessons)


def profile_args(member: SeasonalProfile) -> tuple[Any, ...]:
    """A profile's settings and state columns, in the order ``round_views`` takes them."""
    st = member._slots  # noqa: SLF001 -- the member's own columns, read by its kernels
    return (member._period_ns, member._bucket_ns, member.buckets,  # noqa: SLF001
            member.spread_mix, member._warm_ns, member.phase_tolerance,  # noqa: SLF001
            st.n, st.first, st.gdev, st.centre, st.unit, st.mean_code, st.dev_code, st.count,
            st.snap_b, st.snap_cycle, st.snap_mean, st.snap_dev)


@kernel
def _profile_band(slots: Any, ts: Any, unit: Any, period_ns: int, bucket_ns: float,
                  buckets: int, spread_mix: float, warm_ns: int, tolerance: int, n: Any,
                  first: Any, gdev: Any, centre: Any, scale: Any, mean_code: Any,
                  dev_code: Any, count: Any, snap_b: Any, snap_cycle: Any, snap_mean: Any,
                  snap_dev: Any) -> Any:
    """``SeasonalProfile.predict`` of a unit band (its gather, neighbours and predict).

    Also what the gather found for learning (bucket, count, the phase's mean and spread as
    they are now, ready): the round's lessons take it instead of gathering again, as the
    profile's own ``_memo`` does on the general path (nothing changes the profile between).
    """
    bucket, counts, now_mean, now_sigma, ready, mean, sigma = seasonal_kernels.gather(
        slots, ts, period_ns, bucket_ns, buckets, spread_mix, warm_ns, n, first, gdev,
        centre, scale, mean_code, dev_code, count, snap_b, snap_cycle, snap_mean, snap_dev)
    if tolerance > 0:
        means, sigmas = seasonal_kernels.gather_neighbours(
            slots, bucket, tolerance, buckets, spread_mix, gdev, centre, scale, mean_code,
            dev_code, count)
    else:
        means = sigmas = np.empty((len(slots), 0))
    band = seasonal_kernels.predict(counts, mean, sigma, ready, unit, means, sigmas)
    return band, (bucket, counts, now_mean, now_sigma, ready)


@kernel
def round_views(  # noqa: PLR0913 -- every member's and scale's columns, and the settings
    slots: Any, ts: Any, level: tuple[Any, ...], daily: tuple[Any, ...],
    weekly: tuple[Any, ...], scales: tuple[Any, ...], narrowing: tuple[Any, ...],
    excursions: tuple[Any, ...], follow: tuple[Any, ...],
) -> Any:
    """``Ensemble._round``'s arrays for the default members, in one call.

    ``level``: the level member's columns and warm-up; ``daily``/``weekly``:
    ``profile_args``; ``scales``: per member its typical deviation, cached tail quantile
    and Gaussian quantile; ``narrowing``: the persistence columns and settings;
    ``excursions``: the refractory columns and settings; ``follow``: whether the level
    follows the weekly profile, and ``level_follow``'s columns.
    """
    rows = len(slots)
    expected, upper, lower = np.empty((rows, 3)), np.empty((rows, 3)), np.empty((rows, 3))
    floor, mult = np.empty((rows, 3)), np.empty((rows, 3))
    unit = np.ones(1)
    n_col, mean_col, dev_col, warmup = level
    n, mean, sigma = ewma._gather(slots, n_col, mean_col, dev_col)
    e, lo, up = ewma._predict(n, mean, sigma, unit, warmup)
    expected[:, 0], lower[:, 0], upper[:, 0] = e, lo, up
    (e, lo, up), daily_phase = _profile_band(slots, ts, unit, *daily)
    expected[:, 1], lower[:, 1], upper[:, 1] = e, lo, up
    (e, lo, up), weekly_phase = _profile_band(slots, ts, unit, *weekly)
    expected[:, 2], lower[:, 2], upper[:, 2] = e, lo, up
    follows, follow_ref, follow_var = follow
    if follows:
        step, keep, extra = level_follow.follow_rows(slots, expected, upper, lower,
                                                     follow_ref, follow_var)
    else:
        step, keep, extra = np.zeros(rows), np.full((rows, 2), np.nan), np.zeros(rows)
    typical0, cached0, gauss0, typical1, cached1, gauss1, typical2, cached2, gauss2 = scales
    tail_quantile._spread_terms(typical0, cached0, slots, gauss0, floor, mult, 0)
    tail_quantile._spread_terms(typical1, cached1, slots, gauss1, floor, mult, 1)
    tail_quantile._spread_terms(typical2, cached2, slots, gauss2, floor, mult, 2)
    d, v, p_level, shrink, prior, alarm = narrowing
    narrow_up, narrow_down = persistence._factors(d, v, slots, p_level, shrink, prior, alarm)
    peak, age, peak_ns, step_ns, hold, decay, r_level, max_stretch, grace = excursions
    recent = ensemble_kernels.recent_peak(peak, age, peak_ns, slots, ts, step_ns, hold, decay)
    stretch = ensemble_kernels.widening(recent, age, peak_ns, slots, ts, step_ns, r_level,
                                        max_stretch, grace)
    return (expected, upper, lower, floor, mult, narrow_up, narrow_down, recent, stretch,
            *daily_phase, *weekly_phase, step, keep, extra)


def profile_learn_args(member: SeasonalProfile) -> tuple[Any, ...]:
    """What ``round_lessons`` takes of a profile to learn it, in its order."""
    st = member._slots  # noqa: SLF001 -- the member's own columns, written by its kernels
    return (member._period_ns, member._bucket_ns, member.alpha,  # noqa: SLF001
            st.n, st.first, st.last, st.gdev, st.centre, st.unit, st.mean_code, st.dev_code,
            st.count, st.snap_b, st.snap_cycle, st.snap_mean, st.snap_dev)


@kernel
def _profile_learn(slots: Any, ts: Any, values: Any, phase: Any, period_ns: int,
                   bucket_ns: float, alpha: float, n: Any, first: Any, last: Any, gdev: Any,
                   centre: Any, scale: Any, mean_code: Any, dev_code: Any, count: Any,
                   snap_b: Any, snap_cycle: Any, snap_mean: Any, snap_dev: Any) -> None:
    """``SeasonalProfile._learn_unique`` from what ``_profile_band`` gathered (``phase``)."""
    bucket, counts, mean, sigma, ready = phase
    seasonal_kernels.learn(slots, ts, values, bucket, counts, mean, sigma, ready, alpha,
                           bucket_ns, period_ns, n, first, last, gdev, centre, scale,
                           mean_code, dev_code, count, snap_b, snap_cycle, snap_mean,
                           snap_dev)


@kernel
def memories(slots: Any, ts: Any, n: Any, last: Any, usual_window: float,
             tail_window: float) -> Any:
    """Per row, the points the usual sizes and the tails remember (``ensemble_kernels.memories``).

    At the gap since the slot's previous row, as the daily profile's ``n`` and ``last`` say
    before it learns this round.
    """
    usual, tails = np.empty(len(slots)), np.empty(len(slots))
    for i in range(len(slots)):
        s = slots[i]
        gap = float(ts[i] - last[s]) if n[s] > 0 else 0.0
        usual[i], tails[i] = ensemble_kernels.memories(usual_window, tail_window, gap)
    return usual, tails


@kernel
def scale_update(slots: Any, unit: Any, resid: Any, ready: Any, on: int, column: int,
                  memory: Any, hist: Any, low: Any, inc: Any, n: Any, cached: Any,
                  typical: Any, growth: float, q: float, gauss: float, window: int) -> None:
    """``DeviationScale.update`` of one member's column, on the rows it is ready on.

    Each row remembers its own ``memory`` points (``growth`` and ``window`` are the
    scale's, in points only). ``ensemble_row._learn_scale`` is this loop's body: change both.
    """
    if not on:
        return
    for i in range(len(slots)):
        if on != len(slots) and not ready[i, column]:
            continue
        s = slots[i]
        score = tail_quantile.capped_score(unit[i, column], float(cached[s]), gauss)
        if math.isfinite(score):
            tail_quantile._learn_row(hist, low, inc, n, cached, s, score,
                                     tail_quantile.growth_of(memory[i]), q)
        typical[s] = tail_quantile.typical_after(float(typical[s]), resid[i, column],
                                                 int(n[s]), memory[i])


@kernel
def round_lessons(  # noqa: PLR0913 -- the round, its views, and every column it teaches
    slots: Any, ts: Any, values: Any, views: tuple[Any, ...], combine_max: bool,
    level: tuple[Any, ...], daily: tuple[Any, ...], weekly: tuple[Any, ...],
    scales: tuple[Any, ...], narrowing: tuple[Any, ...], excursions: tuple[Any, ...],
    follow: tuple[Any, ...],
) -> None:
    """``Ensemble._learn_unique`` for the default members, in one call.

    ``views``: the round's expected, upper, lower, floor, multiplier, recent peak and the
    profiles' gathered phases, flat (``round_views``; passed as a nested tuple from Python,
    they left cyclic garbage at every call); ``level``: the level member's columns
    and settings; ``daily``/``weekly``: ``profile_learn_args``; ``scales``: per member its tail
    histogram's columns, typical deviation and settings; ``narrowing`` and ``excursions``:
    the persistence and refractory columns and settings; ``follow``: as ``round_views``
    takes it (the round's steps are the last three ``views``).
    """
    expected, upper, lower, floor, mult, recent = views[:6]
    daily_phase, weekly_phase = views[6:11], views[11:16]
    step, keep, extra = views[16], views[17], views[18]
    combined, signed, unit, resid, ready, ready_rows = ensemble_kernels.lessons(
        values, expected, upper, lower, floor, mult, combine_max)
    peak, age, peak_ns, max_age = excursions
    ensemble_kernels.learn_peak(peak, age, peak_ns, slots, ts, combined, recent, max_age)
    d, v, alpha, prior, window = narrowing
    s0, s1, s2 = scales
    # The usual sizes remember a day of event time at least, the tails a week.
    usual, memory = memories(slots, ts, daily[3], daily[5], window, s0[9])
    persistence.learn_timed(d, v, slots, signed, ready, alpha, prior, usual)
    scale_update(slots, unit, resid, ready, ready_rows[0], 0, memory, *s0)
    n_col, mean_col, dev_col, level_alpha, warmup = level
    follows, follow_ref, follow_var = follow
    if follows:
        level_follow.learn_follow(slots, mean_col, follow_ref, follow_var, step, keep, extra,
                                  level_alpha)
    ewma._learn(slots, values, level_alpha, warmup, n_col, mean_col, dev_col)
    scale_update(slots, unit, resid, ready, ready_rows[1], 1, memory, *s1)
    _profile_learn(slots, ts, values, daily_phase, *daily)
    scale_update(slots, unit, resid, ready, ready_rows[2], 2, memory, *s2)
    _profile_learn(slots, ts, values, weekly_phase, *weekly)
