"""Quiet rows of the default ensemble's rule, scored and learned many at a time in one kernel call.

Through ``Scorer._step`` a round of one row (the backtest of one series) costs about 90 us:
some 200 Python calls and eight kernel calls, each unboxing its dozens of array arguments
again. Most rows of a series are quiet: no anomaly is open on it and its score stays below
every threshold that could open one. ``scan_rows`` runs, for a run of such rows, the
kernels ``_step`` runs for each of them, in the same order: the ensemble's views and band
(``ensemble_row.row_views`` and ``row_band``: ``round_views`` and ``band`` in scalars,
which a row at a time cost a fifth as much), the calibration, the held band's trend fit,
the young series' damping, the hysteresis, the usual magnitude and the ensemble's lessons
(``ensemble_row.row_lessons``). It stops at the first row that is not quiet, before
changing any state for it; the scorer takes that row through ``_step`` (events and all)
and scans on from the next.

A row is quiet when its series has no open anomaly and its calibrated score is finite and
below both the open and the instant threshold. The hysteresis then cannot open (every way
to open needs a score at or above one of them, given ``min_duration >= 1``), no band is
held, nothing is gated and no event is raised, so ``_step`` would run exactly the sequence
above. ``scannable`` says which rules that holds for; ``Scorer`` also needs the round to
have no deploy grace, row sample, feedback, level offset or restored anomaly awaiting its
announcement. Outputs and state equal ``_step``'s bit for bit
(``tests/processors/test_row_scan.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from otel_anomaly.processors.alerting.calibration_kernels import (
    count_calibrated,
    count_references,
    counts_events,
    dispersion_after,
    drop_cusum_after,
    exposure_sum_after,
    floor_of,
    magnitude_after,
    recent_after,
    rise_cusum_after,
    run_after,
    usual_events,
)
from otel_anomaly.processors.alerting.hysteresis import quiet_step
from otel_anomaly.processors.alerting.trend import trend_step
from otel_anomaly.processors.alerting.young_series import damped
from otel_anomaly.processors.compiled import kernel
from otel_anomaly.processors.detectors.ensemble import Ensemble
from otel_anomaly.processors.detectors.ensemble_row import (
    VIEW_ROWS,
    row_band,
    row_last_cycle,
    row_lessons,
    row_views,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from otel_anomaly.processors.alerting.calibration import Calibrator
    from otel_anomaly.processors.alerting.held_band import HeldBands
    from otel_anomaly.processors.alerting.hysteresis import Hysteresis
    from otel_anomaly.processors.detectors.base import Detector
    from otel_anomaly.processors.settings import AlertPolicy

__all__ = ["rounds_learned", "scan_args", "scan_rows", "scannable"]


def scannable(detector: Detector, calibrator: Calibrator, policy: AlertPolicy) -> bool:
    """Whether ``scan_rows`` scores a quiet row of this rule exactly as ``_step`` does.

    The ensemble's default members (its views and lessons are the one-call kernels) on
    values as they are; a band of ``policy.band`` sigmas (no false-alarm budget, no tail
    scale: a self-calibrating detector); learning not gated, never relearned (the lessons
    are the values, on every row); opening needs at least one point.
    """
    return (type(detector) is Ensemble and detector.fused_round_ready
            and not detector.log_transform and detector.learns_held_rows
            and detector.self_calibrating and not calibrator.uses_scale(detector)
            and not calibrator.uses_rarity(detector)
            and policy.learn_gating == "off" and policy.relearn_after == 0
            and policy.min_duration >= 1)


def scan_args(  # noqa: PLR0913 -- the rule's components, its policy and the rows' slots
    detector: Detector, calibrator: Calibrator, held: HeldBands, hysteresis: Hysteresis,
    policy: AlertPolicy, slots: NDArray[np.intp], local: NDArray[np.intp],
) -> tuple[Any, ...]:
    """``scan_rows``' arguments after ``age``, rows made for ``slots`` (engine) and ``local``.

    Only for a ``scannable`` rule.
    """
    assert isinstance(detector, Ensemble)  # noqa: S101 -- ``scannable`` said so
    fused = detector.fused_round(local)
    # Below this score no row can open an anomaly (given ``min_duration >= 1``).
    limit = min(float(policy.open_threshold), float(policy.instant_threshold))
    return (fused.views, fused.lessons,
            (float(policy.band), *detector.band_settings(), limit),
            calibrator.scan_args(local),
            held.scan_args(slots, policy.hold_s),
            hysteresis.scan_args(slots, policy))


def rounds_learned(detector: Detector) -> None:
    """Tell a scanned rule's ensemble that rows were learned outside ``learn_round``."""
    assert isinstance(detector, Ensemble)  # noqa: S101 -- ``scannable`` said so
    detector.rounds_learned()


@kernel
def scan_rows(  # noqa: PLR0913 -- the rows, their outputs, and every component's columns
    start: int, stop: int, slots: Any, local: Any, ts: Any, values: Any, exposure: Any,
    out: Any, is_open: Any, age: Any, views: tuple[Any, ...], lessons: tuple[Any, ...],
    band: tuple[Any, ...], calibration: tuple[Any, ...], hold: tuple[Any, ...],
    hysteresis: tuple[Any, ...],
) -> int:
    """Score and learn rows ``start`` to ``stop`` while they are quiet; the first that is not.

    ``slots``: engine slots (alert state); ``local``: the rule's (detector, calibrator).
    ``exposure``: the seconds each row's rate was counted over (empty: no row has any).
    ``out``: the rows' expected, lower, upper and score (4 x rows), written for quiet rows.
    ``views``/``lessons``: ``RoundArgs``; ``band``: the edge in sigmas, ``combine_max``, the
    centre share and the score a row must stay below to be quiet; ``calibration``: the
    usual-magnitude columns, the policy's floors, and a count's dispersion sums and their
    decay; ``hold``: the hold and the trend fit's columns; ``hysteresis``: its columns and
    thresholds. Rows before the returned index are done; that row and the rest are
    untouched.
    """
    k, combine_max, centre, limit = band
    (magnitude, points, fractional, memory, min_abs, min_rel, direction, min_width, count_sums,
     count_decay) = calibration
    (excess, excess_sq, events, recent_events, recent_expected, run_expected, gap_sum,
     gaps, drop_cusum, rise_cusum, exposure_sum) = count_sums
    hold_s, trend, trend_ns = hold
    columns, thresholds = hysteresis
    level, daily, weekly, scales, narrowing, excursions, follow = views
    (learn_max, learn_level, learn_daily, learn_weekly, learn_scales, learn_narrowing,
     learn_excursions, learn_follow) = lessons
    member_views = np.empty((VIEW_ROWS, 3))
    for i in range(start, stop):
        if is_open[slots[i]]:
            return i
        mine = local[i]
        recent, stretch, daily_phase, weekly_phase, stepped = row_views(
            mine, ts[i], member_views, level, daily, weekly, scales, narrowing, excursions,
            follow)
        expected, band_lower, band_upper, baseline = row_band(
            member_views, stretch * k, combine_max, centre)
        last_cycle = row_last_cycle(mine, ts[i], member_views, weekly)
        fall_expected, rise_expected = count_references(expected=expected,
                                                        last_cycle=last_cycle)
        # ``calibrate_slots`` of this row (no tail scale: ``scannable``).
        seconds = exposure[i] if len(exposure) else np.nan
        floor = floor_of(value=values[i], magnitude=magnitude[mine],
                         fractional=fractional[mine], min_rel=min_rel, exposure=seconds)
        lower, upper, score, phi = count_calibrated(
            value=values[i], expected=expected, lower=band_lower, upper=band_upper,
            floor=floor, k=k, exposure=seconds, fractional=fractional[mine],
            excess=excess[mine], excess_sq=excess_sq[mine], events=events[mine],
            recent_events=recent_events[mine], recent_expected=recent_expected[mine],
            run_expected=run_expected[mine], gap_sum=gap_sum[mine], gaps=gaps[mine],
            drop_cusum=drop_cusum[mine], rise_cusum=rise_cusum[mine],
            exposure_sum=exposure_sum[mine], min_abs=min_abs, min_rel=min_rel,
            direction=direction, min_width=min_width, last_cycle=last_cycle)
        if not score < limit:  # may open, or NaN: ``_step`` takes it
            return i
        out[0, i], out[1, i], out[2, i], out[3, i] = expected, lower, upper, score
        if hold_s > 0:  # ``HeldBands.apply`` with nothing open: every series' trend fit
            away = values[i] - baseline
            if np.isfinite(away):
                trend_step(trend, trend_ns, slots[i], away, ts[i], hold_s)
        s = slots[i]
        age[s], x = damped(points=age[s], score=score, upper=upper)  # ``young_damped``
        quiet_step(s=s, x=x, t=ts[i], columns=columns, thresholds=thresholds)
        # ``learn_magnitude_rows`` of this row (finite: its score is)
        magnitude[mine], points[mine], fractional[mine] = magnitude_after(
            value=values[i], received=values[i], magnitude=magnitude[mine],
            points=points[mine], fractional=fractional[mine], memory=memory,
            exposure=seconds)
        # ``learn_count_rows`` of this row (quiet: ``scan_rows`` stops at any other)
        if np.isfinite(expected) and counts_events(value=values[i], exposure=seconds,
                                                   fractional=fractional[mine]):
            recent_events[mine], recent_expected[mine] = recent_after(
                value=values[i], expected=fall_expected, exposure=seconds,
                recent_events=recent_events[mine], recent_expected=recent_expected[mine])
            run_expected[mine], gap_sum[mine], gaps[mine] = run_after(
                value=values[i], expected=fall_expected, exposure=seconds,
                run_expected=run_expected[mine], gap_sum=gap_sum[mine], gaps=gaps[mine])
            drop_cusum[mine] = drop_cusum_after(value=values[i], expected=fall_expected,
                                                exposure=seconds, drop_cusum=drop_cusum[mine],
                                                dispersion=phi)
            rise_cusum[mine] = rise_cusum_after(
                value=values[i], exposure=seconds, rise_cusum=rise_cusum[mine], dispersion=phi,
                usual=usual_events(expected=rise_expected, exposure=seconds,
                                   events=events[mine], exposure_sum=exposure_sum[mine]))
            excess[mine], excess_sq[mine], events[mine] = dispersion_after(
                value=values[i], expected=expected, exposure=seconds, excess=excess[mine],
                excess_sq=excess_sq[mine], events=events[mine], decay=count_decay)
            exposure_sum[mine] = exposure_sum_after(exposure=seconds,
                                                    exposure_sum=exposure_sum[mine],
                                                    decay=count_decay)
        row_lessons(mine, ts[i], values[i], member_views, recent, daily_phase,
                    weekly_phase, stepped, learn_max, learn_level, learn_daily, learn_weekly,
                    learn_scales, learn_narrowing, learn_excursions, learn_follow)
    return stop
