"""The band an anomaly opened against, held while it lasts.

Detectors keep adapting during an incident (their spreads and tails learn the first
excursions, a refractory stretch damps repeats), so their own band soon swallows a
lasting shift: the flag would drop minutes into an outage that is still going on. While
an anomaly is open, the value is therefore also scored against the band it opened
against, on the side it opened on (``anomaly_direction``), and the larger score is what
alerts and what events report: the flag stays up
until the value is back inside that band, or until the value has gone ``hold_s`` (event
time) without moving further away: neither a new extreme at least ``GROWTH_STEP`` band
half-widths beyond the last (a jump), nor a significant upward trend of its deviation from
the detector's baseline over the last ``hold_s`` (a leak, which grows by less than
its noise from point to point; ``processors.alerting.trend``). While it trends away, a
point back inside the held band does not close it either (a leak at the band's edge). A
leak that keeps growing therefore stays flagged while it grows; a level shift that holds,
or a leak that stopped (once its trend has faded: about 1 to 4 holds, see ``trend``), is
handed back to the detector's own band: the detector learns the values as they are again,
so its score and band follow the new level. The flag still waits while the value stays
outside the held band, until ``accept_after_s`` since it last moved out (an outage or a
regression that holds stays flagged for hours, not for one hold). When the detector's band
has taken the new level in by then, the anomaly closes as "the new level is the
baseline". The exported score and band stay the detector's own.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.calibration import Calibrated
from otel_anomaly.processors.alerting.calibration_kernels import DIRECTIONS
from otel_anomaly.processors.alerting.hysteresis import (
    LAG_PRIOR,
    more_points,
    score_independence,
)
from otel_anomaly.processors.alerting.trend import (
    T_CRIT,
    WIDTH,
    drift,
    last_deviation,
    level_before,
    trend_step,
)
from otel_anomaly.processors.compiled import float_warnings_ignored, kernel
from otel_anomaly.processors.kernel_math import maximum, minimum
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.settings import DirectionPolicy

_UP, _DOWN, _BOTH = DIRECTIONS["up"], DIRECTIONS["down"], DIRECTIONS["both"]

GROWTH_STEP = 0.5
"""How much further out (in half-widths of the held band) a value must go to count as the
anomaly still growing: about two sigmas of noise at the band's usual 3.5 to 4 sigmas, so
noise at a new level does not count, while a leak does every few points."""


class HeldBands:
    """Per-slot expected value and band frozen when an anomaly opened.

    Examples
    --------
    >>> held = HeldBands()
    >>> slots = np.array([0])
    >>> opened = Calibrated(np.array([100.0]), np.array([90.0]), np.array([110.0]),
    ...                     np.array([3.0]))
    >>> held.remember(slots, opened, np.array([0]))
    >>> adapted = Calibrated(np.array([125.0]), np.array([100.0]), np.array([150.0]),
    ...                      np.array([0.2]))  # the detector's band swallowed the shift
    >>> out, keep = held.apply(slots, np.array([130.0]), adapted, np.array([True]),
    ...                        np.array([60 * 10**9]), hold_s=3600.0)
    >>> out.expected.tolist(), out.upper.tolist(), out.score.tolist()
    ([100.0], [110.0], [3.0])
    """

    def __init__(self) -> None:
        self._bands = SlotArrays(
            expected=Column(np.float64, np.nan),
            lower=Column(np.float64, np.nan),
            upper=Column(np.float64, np.nan),
            extreme_ns=Column(np.int64),  # when the value last went further out
            peak=Column(np.float64, 0.0),  # the furthest out it went, in held half-widths
            trend=Column(np.float64, 0.0, (WIDTH,)),  # its deviation's trend fit (``trend``)
            trend_ns=Column(np.int64),  # the event time of the fit's last point
            # Wald's test of "back at the level before the anomaly" against "still at the
            # anomaly's", on deviations from the baseline (value units): the level before
            # (the trend fit's mean at the open) and its noise variance, the
            # anomaly's level (mean deviation of its points out of the band), how many
            # points it is the mean of, the test's log odds (a CUSUM, >= 0), and whether
            # the two levels have stood apart yet (the test keeps nothing open before).
            before=Column(np.float32, 0.0),
            before_variance=Column(np.float32, 0.0),
            level=Column(np.float32, 0.0),
            level_points=Column(np.int32, 0),
            back=Column(np.float32, 0.0),
            told=Column(np.bool_, False),
        )
        self.active = False  # no band held anywhere yet: no close reports a held band

    def state_dict(self) -> dict[str, Any]:
        """The held bands, and whether any is held."""
        return {"active": self.active, **self._bands.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by ``state_dict``.

        State saved before trends were kept restores with empty fits: an open anomaly's
        trend then starts from its next point.
        """
        rows = len(state["expected"])
        fresh: dict[str, NDArray[Any]] = {
            "trend": np.zeros((rows, WIDTH)), "trend_ns": np.zeros(rows, np.int64)}
        self._bands.load_state_dict({**fresh, **state})
        self.active = bool(state["active"])

    def remember(
        self, slots: NDArray[np.intp], calibrated: Calibrated, ts_unix_nano: NDArray[np.int64]
    ) -> None:
        """Hold the band of newly opened ``slots`` (the other arguments have their rows)."""
        if not len(slots):
            return
        self._bands.ensure(slots)
        bands = self._bands
        _remember_rows(slots, ts_unix_nano, calibrated.expected, calibrated.lower,
                       calibrated.upper, calibrated.score, bands.extreme_ns, bands.peak,
                       bands.expected, bands.lower, bands.upper, bands.trend,
                       bands.before, bands.before_variance, bands.level,
                       bands.level_points, bands.back, bands.told)
        self.active = True

    def apply(
        self, slots: NDArray[np.intp], values: NDArray[np.float64], calibrated: Calibrated,
        is_open: NDArray[np.bool_], ts_unix_nano: NDArray[np.int64], hold_s: float,
        direction: DirectionPolicy = "both", sides: NDArray[np.int8] | None = None,
        accept_after_s: float = 0.0, close_odds: float = 0.0,
        noise: tuple[NDArray[np.float32], ...] | None = None,
    ) -> tuple[Calibrated, NDArray[np.bool_]]:
        """Rows of open anomalies scored against their held band when that scores higher.

        Also returns which open rows must not close: those still trending away, even when a
        point dips back inside the held band (a leak at the band's edge), and those past
        ``hold_s`` but within ``accept_after_s`` of their last move out whose value is
        still outside the held band (a level that holds: the detector learns it again, but
        the flag waits until it has lasted ``accept_after_s``).

        Every row (open or not) also joins its series' trend fit: its deviation from
        ``calibrated.reference`` (the detector's baseline: an ensemble's seasonal profile,
        which a leak does not drag along within hours as its combined expected value can).
        A row that goes ``GROWTH_STEP`` further out than the anomaly's furthest so far, or
        whose deviation has trended away on the anomaly's side over the last ``hold_s``
        (``trend.T_CRIT``), restarts its ``hold_s``. ``sides``: per slot, the side (+1 / -1)
        its open anomaly is on, as the scorer recorded it at the open (None: above). Only
        deviations on the rule's ``direction`` count, as for the detector's own score.

        With ``close_odds`` (> 1), an open row is also kept until Wald's sequential test
        (1945) of its points since the open says, at those odds, that the value is back at
        the level it had before the anomaly (its deviation from ``calibrated.reference``:
        the trend fit's mean over the last ``hold_s`` at the open) rather than still at the
        anomaly's (the mean deviation of its points out of the held band), or until
        ``accept_after_s`` since it last moved out. Each point adds its log-likelihood
        ratio under Gaussian noise of the variance the fit saw before the open, times its
        share of independent information (``noise``: the hysteresis' running moments of
        the series' scores between anomalies, ``Hysteresis.noise_columns``; None: every
        point independent), to a sum that never falls below 0 (``back_step``). So a noisy
        dip of a level that holds (a point just inside the band, nearer the anomaly's level
        than the one before) counts against closing, while the first point back after a
        spike far out closes it at once. An anomaly whose level is within noise of the
        level before it (one point at that level could not settle the test: a band that
        was narrow for a moment) is not kept by the test, until its level stands out once:
        from then on it is tested until it is back (a leak's first points out of the band
        stand out, and its level, their mean, then falls back towards the level before as
        points just out of the band join it).
        """
        if hold_s <= 0:
            return calibrated, np.zeros(len(slots), np.bool_)
        bands = self._bands
        if not math.isfinite(hold_s) and (is_open & (slots < len(bands))).any():
            int(hold_s * 1e9)  # raises, as it always has: no event time is that long
        bands.ensure(slots)
        if sides is None:
            sides = np.ones(len(bands), np.int8)
        with float_warnings_ignored():
            used, expected, lower, upper, score, keep = _apply_rows(
                slots, values, calibrated.reference, calibrated.expected, calibrated.lower,
                calibrated.upper, calibrated.score, is_open, ts_unix_nano,
                hold_ns(hold_s), hold_ns(max(hold_s, accept_after_s)), hold_s,
                DIRECTIONS[direction], GROWTH_STEP, T_CRIT,
                bands.expected, bands.lower, bands.upper, bands.extreme_ns, bands.peak,
                sides, bands.trend, bands.trend_ns,
                math.log(close_odds) if close_odds > 1 else 0.0, bands.before,
                bands.before_variance, bands.level, bands.level_points, bands.back, bands.told,
                *(noise if noise is not None else _UNIT_NOISE))
        if not used:
            return calibrated, keep
        return Calibrated(expected, lower, upper, score), keep

    def limits_within_hold(
        self, slots: NDArray[np.intp], ts_unix_nano: NDArray[np.int64],
        is_open: NDArray[np.bool_], hold_s: float,
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]] | None:
        """Open rows whose anomaly last moved further out at most ``hold_s`` before them.

        Their held band is in force, whichever band scored the row higher (call after
        ``apply``, which notes when each anomaly moved out). Returns the rows and every
        row's held lower and upper limit (infinite where none), or None if no row is.
        """
        if hold_s <= 0:
            return None
        bands = self._bands
        rows = is_open & (slots < len(bands))
        if not rows.any():
            return None
        at = np.flatnonzero(rows)
        rows[at] = ts_unix_nano[at] - bands.extreme_ns[slots[at]] <= hold_ns(hold_s)
        if not rows.any():
            return None
        lower, upper = np.full(len(slots), -np.inf), np.full(len(slots), np.inf)
        held_lower, held_upper = bands.lower[slots[at]], bands.upper[slots[at]]
        lower[at] = np.where(np.isnan(held_lower), -np.inf, held_lower)
        upper[at] = np.where(np.isnan(held_upper), np.inf, held_upper)
        return rows, lower, upper

    def scan_args(self, slots: NDArray[np.intp], hold_s: float) -> tuple[Any, ...]:
        """What ``row_scan.scan_rows`` takes to fit the trends of rows with nothing open.

        With nothing open no band is held and nothing is kept: of ``apply`` only the trend
        fit of every series is left (``hold_s``, the trend columns), rows made for ``slots``.
        """
        bands = self._bands
        if hold_s > 0:
            bands.ensure(slots)
        return hold_s, bands.trend, bands.trend_ns

    def _held_score(self, at: NDArray[np.intp], values: NDArray[np.float64],
                    direction: DirectionPolicy) -> NDArray[np.float64]:
        bands = self._bands
        with float_warnings_ignored():
            out: NDArray[np.float64] = _held_scores(
                at, values, bands.expected, bands.lower, bands.upper, DIRECTIONS[direction])
        return out

    def drifting(self, slots: NDArray[np.intp], sides: NDArray[np.int8]) -> list[float]:
        """Per slot, its deviation's drift per hour, or NaN where it is not significant.

        Significant means on its anomaly's side (``sides``: +1 above, -1 below), as for
        holding it open (``trend.T_CRIT``). For explanations.
        """
        out = []
        for s, side in zip(slots.tolist(), sides.tolist(), strict=True):
            slope, t = (drift(self._bands.trend, s) if s < len(self._bands)
                        else (0.0, 0.0))
            out.append(slope * 3600.0 if side * t >= T_CRIT else math.nan)
        return out

    def outside(self, slots: NDArray[np.intp], values: NDArray[np.float64],
                direction: DirectionPolicy = "both",
                sides: NDArray[np.int8] | None = None) -> NDArray[np.bool_]:
        """Whether each value is still outside the band its slot's anomaly opened against.

        Only the rule's ``direction`` counts, and of it the anomaly's side (``sides``, per
        slot, as ``apply`` takes them; None: either side). An anomaly that closes while its
        value is still out there closed because the detector took the new level in: the
        level is the new baseline.
        """
        bands = self._bands
        if sides is None:
            sides = np.zeros(len(bands), np.int8)
        with float_warnings_ignored():
            out: NDArray[np.bool_] = _outside_rows(
                slots, values, bands.expected, bands.lower, bands.upper, DIRECTIONS[direction],
                sides)
        return out

    def closing(self, slots: NDArray[np.intp], calibrated: Calibrated,
                closed: NDArray[np.bool_]) -> Calibrated:
        """Rows that close report the band their anomaly was held against."""
        bands = self._bands
        any_rows, expected, lower, upper = _closing_rows(
            slots, closed, calibrated.expected, calibrated.lower, calibrated.upper,
            bands.expected, bands.lower, bands.upper)
        if not any_rows:
            return calibrated
        return Calibrated(expected, lower, upper, calibrated.score)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget the bands of ``slots``."""
        # Rows not allocated yet hold nothing: resetting them would only allocate them.
        self._bands.reset(slots[slots < len(self._bands)])


def hold_ns(hold_s: float) -> int:
    """``hold_s`` in ns, clipped to int64 (a kernel argument must fit; ``inf``: for good)."""
    return min(int(hold_s * 1e9), (1 << 63) - 1) if math.isfinite(hold_s) else (1 << 63) - 1


@kernel
def _held_row(value: Any, expected: Any, lower: Any, upper: Any, direction: int) -> Any:
    """A value's score against a held band: its distance in half-widths on its side."""
    dev = value - expected
    if direction == _UP:
        dev = maximum(dev, 0.0)
    elif direction == _DOWN:
        dev = minimum(dev, 0.0)
    half = upper - expected if dev >= 0 else expected - lower
    return np.abs(dev) / maximum(half, 1e-12 * (1.0 + np.abs(expected)))


@kernel
def anomaly_direction(direction: int, side: Any) -> int:
    """The direction a held band judges: the rule's, narrowed to the anomaly's side.

    An anomaly is a fall or a rise (``side`` -1 or +1, as it opened); a value that swings
    past the other edge of its held band is not that anomaly growing (a drop at midnight
    followed by the day's normal rise would otherwise read as an anomaly still moving
    further out all day). The detector's own band still judges that side.
    """
    if direction != _BOTH or side == 0:
        return direction
    return _UP if side > 0 else _DOWN


@kernel
def _held_scores(
    at: Any, values: Any, expected: Any, lower: Any, upper: Any, direction: int,
) -> Any:
    out = np.empty(len(at))
    for i in range(len(at)):
        s = at[i]
        out[i] = _held_row(values[i], expected[s], lower[s], upper[s], direction)
    return out


@kernel
def _outside_rows(
    slots: Any, values: Any, expected: Any, lower: Any, upper: Any, direction: int,
    sides: Any,
) -> Any:
    out = np.zeros(len(slots), np.bool_)
    for i in range(len(slots)):
        s = slots[i]
        if s < len(expected):
            side = sides[s] if s < len(sides) else 0  # a kernel reads past an end unchecked
            out[i] = _held_row(values[i], expected[s], lower[s], upper[s],
                               anomaly_direction(direction, side)) >= 1.0
    return out


@kernel
def _remember_rows(  # noqa: PLR0913 -- the opened rows and the columns they start
    slots: Any, ts: Any, expected: Any, lower: Any, upper: Any, score: Any,
    extreme_ns: Any, peak: Any, held_expected: Any, held_lower: Any, held_upper: Any,
    trend: Any, before: Any, before_variance: Any, level: Any, level_points: Any, back: Any,
    told: Any,
) -> None:
    for i in range(len(slots)):
        s = slots[i]
        extreme_ns[s], peak[s] = ts[i], score[i]
        held_expected[s], held_lower[s], held_upper[s] = expected[i], lower[i], upper[i]
        # The fit already holds the opening point: its deviation is the anomaly's first.
        before[s], before_variance[s] = level_before(trend, s)
        level[s], level_points[s], back[s] = last_deviation(trend, s), 1, 0.0
        told[s] = False


_UNIT_NOISE = tuple(np.full(1, LAG_PRIOR[name], np.float32)
                    for name in ("lag_mean", "lag_square", "lag_cross"))
"""``apply``'s noise columns without a hysteresis: one row at the prior (independent points)."""


@kernel
def _slot_independence(mean: Any, square: Any, cross: Any, s: int) -> Any:
    """``hysteresis.score_independence`` of slot ``s`` (row 0 when one row stands for all)."""
    r = s if len(mean) > 1 else 0
    return score_independence(mean[r], square[r], cross[r])


@kernel
def back_step(  # noqa: PLR0913 -- a point's deviation, whether it is out, the test's columns
    away: Any, out: Any, before: Any, variance: Any, level: Any, points: Any, back: Any,
    weight: Any = 1.0,
) -> Any:
    """An open anomaly's level, its points, Wald's log odds of "back", and whether it tells.

    The log-likelihood ratio of a deviation ``x`` under "back" (mean ``m0``, the level
    before) against "still out" (mean ``m1``, the anomaly's level), both Gaussian with
    the variance ``v`` before, is ``(m1 - m0) * ((m1 + m0) / 2 - x) / v``, times the
    point's ``weight``: its share of independent information (the slow noise of a smooth
    gauge carries a shifted level back near the old one for several points in a row,
    which is less evidence than as many independent points; ``hysteresis
    .score_independence`` of the series' scores between anomalies, as for opening). (The
    fit's own lag-1 correlation, from its Huber-capped successive differences, was tried
    first: it makes a spiky series look almost perfectly correlated, so a spike's anomaly
    stayed open for hours.) The test tells the two apart when one point at ``m0`` is
    worth ``(m1 - m0)**2 / (2 v)`` of log odds: the last value returned, to compare with
    the odds asked for.
    """
    if out:
        points = more_points(points)
        level = level + (away - level) / points
    if not variance >= 0:  # too little seen before the open to tell its level
        return level, points, back, 0.0
    gap = level - before
    v = maximum(variance, (1e-9 * (1.0 + np.abs(before) + np.abs(level))) ** 2)
    back = maximum(back + weight * gap * (0.5 * (level + before) - away) / v, 0.0)
    return level, points, back, gap * gap / (2.0 * v)


@kernel
def _apply_rows(  # noqa: PLR0913 -- the round's rows and band, the policy, the held columns
    slots: Any, values: Any, reference: Any, expected: Any, lower: Any, upper: Any,
    score: Any, is_open: Any, ts: Any, hold_ns: int, accept_ns: int, hold_s: float,
    direction: int, growth_step: float, t_crit: float, held_expected: Any, held_lower: Any,
    held_upper: Any,
    extreme_ns: Any, peak: Any, side: Any, trend: Any, trend_ns: Any,
    log_odds: float, before: Any, before_variance: Any, level: Any, level_points: Any,
    back: Any, told: Any, lag_mean: Any, lag_square: Any, lag_cross: Any,
) -> Any:
    """``HeldBands.apply`` row by row: whether any row took its held band, and the band.

    ``log_odds`` 0: no test of "back" (``back_step``).
    """
    n = len(slots)
    out_expected, out_lower, out_upper = np.empty(n), np.empty(n), np.empty(n)
    out_score = np.empty(n)
    keep = np.zeros(n, np.bool_)
    used = False
    for i in range(n):
        s = slots[i]
        use = False
        t = 0.0
        away = values[i] - reference[i]
        if np.isfinite(away):  # every series' fit, so a leak's trend predates its open
            t = trend_step(trend, trend_ns, s, away, ts[i], hold_s)
        if is_open[i]:
            held = _held_row(values[i], held_expected[s], held_lower[s], held_upper[s],
                             anomaly_direction(direction, side[s]))
            if held >= peak[s] + growth_step:  # still growing: the hold starts again
                peak[s], extreme_ns[s] = held, ts[i]
            if side[s] * t >= t_crit:  # drifting further out: the hold starts again
                extreme_ns[s] = ts[i]
                keep[i] = True
            quiet_for = ts[i] - extreme_ns[s]
            use = quiet_for <= hold_ns and np.isfinite(held) and held > score[i]
            # Past the hold the detector relearns, but a level still out there stays
            # flagged until it has lasted ``accept_ns``.
            if quiet_for > hold_ns and quiet_for <= accept_ns and held >= 1.0:
                keep[i] = True
            if log_odds > 0 and np.isfinite(away) and np.isfinite(held):
                level[s], level_points[s], back[s], tells = back_step(
                    away, held >= 1.0, before[s], before_variance[s], level[s],
                    level_points[s], back[s],
                    _slot_independence(lag_mean, lag_square, lag_cross, s))
                # Not yet shown to be back: kept, until accepted as the new baseline.
                told[s] = told[s] or tells >= log_odds
                if told[s] and back[s] < log_odds and quiet_for <= accept_ns:
                    keep[i] = True
        if use:
            out_expected[i], out_lower[i] = held_expected[s], held_lower[s]
            out_upper[i], out_score[i] = held_upper[s], held
            used = True
        else:
            out_expected[i], out_lower[i] = expected[i], lower[i]
            out_upper[i], out_score[i] = upper[i], score[i]
    return used, out_expected, out_lower, out_upper, out_score, keep


@kernel
def _closing_rows(
    slots: Any, closed: Any, expected: Any, lower: Any, upper: Any,
    held_expected: Any, held_lower: Any, held_upper: Any,
) -> Any:
    """``HeldBands.closing``: whether any row closes, and each row's band to report."""
    n = len(slots)
    out_expected, out_lower, out_upper = np.empty(n), np.empty(n), np.empty(n)
    closing = False
    for i in range(n):
        s = slots[i]
        rows = closed[i] and s < len(held_expected)
        closing = closing or rows
        if rows and np.isfinite(held_expected[s]):
            out_expected[i], out_lower[i], out_upper[i] = (
                held_expected[s], held_lower[s], held_upper[s])
        else:
            out_expected[i], out_lower[i], out_upper[i] = expected[i], lower[i], upper[i]
    return closing, out_expected, out_lower, out_upper
