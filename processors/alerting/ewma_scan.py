"""Quiet rows of an ``ewma_zscore`` rule with a tail scale, scored and learned in one kernel call.

The span-outlier rule (``settings.DEFAULT_RULES``) scores each operation's sampled spans in
rounds of one row per operation: five rounds a request, each through ``Scorer._step``,
some 90 us of Python and a dozen kernel calls for a few microseconds of arithmetic.
``scan_ewma_rows`` runs, for a run of quiet rows (no anomaly open on the series and a
calibrated score below every threshold that could open one, as ``row_scan`` defines
them), what ``_step`` runs for each, in the same order: the tail scale's multiplier and
floor, the detector's band (``ewma_zscore.sigma_of`` and ``band_of``, on log values if
the rule takes them), the calibration, the held band's trend fit, the young series'
damping, the hysteresis, then the lessons of the rows the request's sample keeps
(``teaches``): the usual magnitude, the tail scale and the detector's mean and spread.
It stops at the first row that is not quiet, before changing any state for it.

Unlike ``row_scan`` it takes rounds of any size and a request's row sample, so it is what
a live request of spans goes through. Rows whose rates carry exposures (counts) are not
scanned. Outputs and state equal ``_step``'s bit for bit on rounds of up to 64 rows; on
larger ones ``_step`` takes the log-modulus with numpy's vectorised ``log1p`` and
``expm1``, which may differ from the C library's in the last bit
(``detectors.log_modulus``), as a backtest of one series already does
(``tests/processors/test_ewma_scan.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from otel_anomaly.processors.alerting.calibration_kernels import (
    count_calibrated,
    floor_of,
    magnitude_after,
)
from otel_anomaly.processors.alerting.hysteresis import quiet_step
from otel_anomaly.processors.alerting.row_sampling import max_of_n_factor
from otel_anomaly.processors.alerting.tail_quantile import (
    _FLOOR_PER_TYPICAL,
    _learn_row,
    _widened,
    capped_score,
    typical_after,
)
from otel_anomaly.processors.alerting.trend import trend_step
from otel_anomaly.processors.alerting.young_series import damped
from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.detectors.ewma_zscore import EwmaZScore, band_of, sigma_of
from otel_anomaly.processors.detectors.ewma_zscore import learned as ewma_learned
from otel_anomaly.processors.detectors.log_modulus import _sign
from otel_anomaly.processors.kernel_math import maximum

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from otel_anomaly.processors.alerting.calibration import Calibrator
    from otel_anomaly.processors.alerting.held_band import HeldBands
    from otel_anomaly.processors.alerting.hysteresis import Hysteresis
    from otel_anomaly.processors.detectors.base import Detector
    from otel_anomaly.processors.settings import AlertPolicy

__all__ = ["ewma_scan_args", "ewma_scannable", "scan_ewma_rows"]


def ewma_scannable(detector: Detector, calibrator: Calibrator, policy: AlertPolicy) -> bool:
    """Whether ``scan_ewma_rows`` scores a quiet row of this rule exactly as ``_step`` does.

    An ``ewma_zscore`` detector whose band is widened by the calibrator's tail scale (no
    false-alarm budget: the detector is not self-calibrating), and opening needs at least
    one point. Learn gating and relearning do not matter: they change only what rows of
    an open anomaly, or rows at the open threshold, teach.
    """
    return (type(detector) is EwmaZScore and calibrator.uses_scale(detector)
            and not calibrator.uses_rarity(detector) and policy.min_duration >= 1)


def ewma_scan_args(  # noqa: PLR0913 -- the rule's components, its policy and the rows' slots
    detector: Detector, calibrator: Calibrator, held: HeldBands, hysteresis: Hysteresis,
    policy: AlertPolicy, slots: NDArray[np.intp], local: NDArray[np.intp],
    drawn: NDArray[np.float64],
) -> tuple[Any, ...]:
    """``scan_ewma_rows``' arguments after ``age``, rows made for ``slots`` and ``local``.

    ``drawn``: per row of the scan, of how many of a request's rows it is the extreme
    (empty: every row is one draw). Only for an ``ewma_scannable`` rule.
    """
    assert isinstance(detector, EwmaZScore)  # noqa: S101 -- ``ewma_scannable`` said so
    calibrator.scale.ensure(local)
    # Below this score no row can open an anomaly (given ``min_duration >= 1``).
    limit = min(float(policy.open_threshold), float(policy.instant_threshold))
    return ((*detector.row_columns(local), detector.alpha, detector.warmup,
             detector.log_transform),
            (float(policy.band), limit, drawn), calibrator.scale.learn_columns(),
            calibrator.scan_args(local),
            held.scan_args(slots, policy.hold_s),
            hysteresis.scan_args(slots, policy))


@row_kernel
def _log_modulus(x: float) -> Any:
    """``log_modulus`` of one value (offset 1), as its compiled loop takes it."""
    return _sign(x) * np.log1p(np.abs(x) / 1.0)


@row_kernel
def _inverse(x: float) -> Any:
    """``inverse_log_modulus`` of one value (offset 1), as its compiled loop takes it."""
    return _sign(x) * 1.0 * np.expm1(np.abs(x))


@kernel
def scan_ewma_rows(  # noqa: PLR0913, PLR0915 -- the rows, their outputs, every component's columns
    start: int, stop: int, slots: Any, local: Any, ts: Any, values: Any, teaches: Any,
    out: Any, is_open: Any, age: Any, detector: tuple[Any, ...], band: tuple[Any, ...],
    tails: tuple[Any, ...], calibration: tuple[Any, ...], hold: tuple[Any, ...],
    hysteresis: tuple[Any, ...],
) -> int:
    """Score and learn rows ``start`` to ``stop`` while they are quiet; the first that is not.

    ``slots``: engine slots (alert state); ``local``: the rule's (detector, calibrator).
    ``teaches``: which rows teach (empty: every row). ``out``: the rows' expected, lower,
    upper and score (4 x rows), written for quiet rows. ``detector``: its columns (points,
    mean, deviation), alpha, warmup and log transform; ``band``: the band in sigmas, the
    score a row must stay below to be quiet, and per row of how many rows it is the
    extreme (empty: one; ``row_sampling.max_of_n_band``); ``tails``: ``DeviationScale
    .learn_columns``; ``calibration``, ``hold``, ``hysteresis``: as ``row_scan.scan_rows``
    takes them. Rows before the returned index are done; that row and the rest are
    untouched.
    """
    n_col, mean_col, dev_col, alpha, warmup, log_values = detector
    sigmas, limit, drawn = band
    hist, low, inc, tail_n, cached, typical, growth, q, gauss, window = tails
    (magnitude, points, fractional, memory, min_abs, min_rel, direction, min_width, count_sums,
     _count_decay) = calibration
    (excess, excess_sq, events, recent_events, recent_expected, run_expected, gap_sum,
     gaps, drop_cusum, rise_cusum, exposure_sum) = count_sums
    hold_s, trend, trend_ns = hold
    columns, thresholds = hysteresis
    seconds = np.nan  # no row has an exposure (``Scorer`` scans no other)
    for i in range(start, stop):
        if is_open[slots[i]]:
            return i
        mine = local[i]
        # ``Calibrator.step``: the tail-scaled band, the detector's prediction, the floors.
        k = sigmas * (_widened(float(cached[mine]), gauss) / gauss)
        if len(drawn):  # wider for a request's extreme row, as ``Calibrator.step`` makes it
            k = k * max_of_n_factor(sigmas, drawn[i])
        expected, band_lower, band_upper = band_of(
            n=n_col[mine], mean=mean_col[mine], sigma=sigma_of(mean=mean_col[mine],
                                                               dev=dev_col[mine]),
            band=k, warmup=warmup)
        if log_values:
            expected, band_lower = _inverse(x=expected), _inverse(x=band_lower)
            band_upper = _inverse(x=band_upper)
        floor = floor_of(value=values[i], magnitude=magnitude[mine],
                         fractional=fractional[mine], min_rel=min_rel, exposure=seconds)
        floor = maximum(floor, k * (_FLOOR_PER_TYPICAL * float(typical[mine])))
        lower, upper, score, _phi = count_calibrated(
            value=values[i], expected=expected, lower=band_lower, upper=band_upper,
            floor=floor, k=k, exposure=seconds, fractional=fractional[mine],
            excess=excess[mine], excess_sq=excess_sq[mine], events=events[mine],
            recent_events=recent_events[mine], recent_expected=recent_expected[mine],
            run_expected=run_expected[mine], gap_sum=gap_sum[mine], gaps=gaps[mine],
            drop_cusum=drop_cusum[mine], rise_cusum=rise_cusum[mine],
            exposure_sum=exposure_sum[mine], min_abs=min_abs, min_rel=min_rel,
            direction=direction, min_width=min_width, last_cycle=np.nan)
        if not score < limit:  # may open, or NaN: ``_step`` takes it
            return i
        out[0, i], out[1, i], out[2, i], out[3, i] = expected, lower, upper, score
        if hold_s > 0:  # ``HeldBands.apply`` with nothing open: every series' trend fit
            away = values[i] - expected
            if np.isfinite(away):
                trend_step(trend, trend_ns, slots[i], away, ts[i], hold_s)
        s = slots[i]
        age[s], x = damped(points=age[s], score=score, upper=upper)  # ``young_damped``
        # The same lines as ``row_scan.scan_rows``' (the trend fit, the damping, the
        # hysteresis): a row kernel taking their columns measured 4-10 % slower scans
        # (``benchmarks/backtest_speed.py`` single 497,000-514,000 -> 429,000-466,000).
        quiet_step(s=s, x=x, t=ts[i], columns=columns, thresholds=thresholds)
        if len(teaches) and not teaches[i]:  # scored for the sample, taught nothing
            continue
        # ``Calibrator.learn``: the usual magnitude (finite: its score is), the tail scale.
        magnitude[mine], points[mine], fractional[mine] = magnitude_after(
            value=values[i], received=values[i], magnitude=magnitude[mine],
            points=points[mine], fractional=fractional[mine], memory=memory,
            exposure=seconds)
        if not np.isnan(upper):  # ``ready_rows``: a band (and a finite score: quiet)
            capped = capped_score(z=score * k, cached=float(cached[mine]), gauss=gauss)
            if np.isfinite(capped):
                _learn_row(hist=hist, low=low, inc=inc, n=tail_n, cached=cached, slot=mine,
                           score=capped, growth=growth, q=q)
            typical[mine] = typical_after(old=float(typical[mine]),
                                          resid=np.abs(values[i] - expected),
                                          count=int(tail_n[mine]), window=window)
        # The detector's lesson: the value as it is (quiet rows are not clipped).
        seen = _log_modulus(x=values[i]) if log_values else values[i]
        n_col[mine], mean_col[mine], dev_col[mine] = ewma_learned(
            n=n_col[mine], mean=mean_col[mine], dev=dev_col[mine], seen=seen, alpha=alpha,
            warmup=warmup)
    return stop
