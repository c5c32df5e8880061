"""Hysteresis: scores become flags, and flags become open / update / close transitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.settings import AlertPolicy

_LONG_AGO = (1 << 31) - 1  # "points since the last close" of a slot that never closed
_COUNT_MAX = (1 << 31) - 1  # point counts saturate here (int32 storage)
_MAX_POLICIES = 64  # converted policies kept (one per detector rule in practice)
_LAG_CLIP = 2.0  # scores are clipped here before their autocorrelation is learned
_LAG_KEEP = 1.0 - 1.0 / 500  # the autocorrelation remembers about 500 points
_CLOSE_SLACK = 1e-9  # weighted points back inside that make ``close_after`` in float
# Two standard errors of a lag-1 autocorrelation estimated from independent scores over
# the (1 + keep) / (1 - keep) points an exponential average that long weighs as many as.
_LAG_NOISE = 2.0 / float(np.sqrt((1.0 + _LAG_KEEP) / (1.0 - _LAG_KEEP)))
_PRIOR_MEAN, _PRIOR_SQUARE = 0.25, 0.1  # about a normal's |z| / 3.5: mean and mean square
LAG_PRIOR = {"lag_prev": 0.0, "lag_mean": _PRIOR_MEAN, "lag_square": _PRIOR_SQUARE,
             "lag_cross": _PRIOR_MEAN * _PRIOR_MEAN}
"""A new slot's running moments of its scores: uncorrelated (every point full evidence)."""
# A policy's thresholds as ``_step_rows`` takes them (open, close, instant, min_duration,
# its time in ns, its evidence point in ns, close_after, its time in ns, cooldown, its time
# in ns, update interval).
_Thresholds = tuple[float, float, float, int, float, float, int, float, int, int, int]


@dataclass(frozen=True, slots=True)
class Transitions:
    """Per row: the flag after the row, and which rows opened, updated or closed."""

    flag: NDArray[np.bool_]
    opened: NDArray[np.bool_]
    updated: NDArray[np.bool_]
    closed: NDArray[np.bool_]


class Hysteresis:
    """Per-slot alert state: an anomaly opens after ``min_duration`` high scores in a row.

    With ``evidence_point_s`` set, ``min_duration`` counts evidence instead of points in a
    row: a CUSUM (Page, 1954) of the scores, tuned to a shift to the open threshold (its
    reference value is half of it), each point weighted by its share of ``evidence_point_s``
    (its spacing over it) or by its share of independent information
    (``score_independence``), whichever is more, at most 1. ``min_duration`` points at the
    open threshold, each at least ``evidence_point_s`` apart or independent, open as before;
    closer, correlated points need more of them, and a point back inside the band lowers
    the evidence instead of restarting the count.

    It also opens once the high scores in a row span ``min_duration_time_s`` of event time, each
    point counting as the series' usual spacing (a running average of the gaps between its
    points, so one point after a gap of days does not count as days of evidence). One
    score at or above ``instant_threshold`` opens it at once. It closes after
    ``close_after`` scores below ``close_threshold`` in a row (with ``evidence_point_s``,
    each counted as the share of an evidence point it adds when opening: closer, correlated
    points need more of them), and only once they also span
    ``close_after_time_s`` of event time (a shifted level whose noise dips inside the band
    now and then is not over); while open it asks for at
    most one update per ``update_interval_s`` of event time. For ``cooldown`` points after
    a close no new anomaly opens (the rest of one event stays one anomaly), or for
    ``cooldown_time_s`` of event time if that ends first: an hourly series is not blind for
    60 hours. A point scoring above the closed anomaly's peak opens even then: it is more
    than the rest of that event. NaN scores (invalid points) leave the state as it is.
    After a restore, each anomaly still open asks for an update at its first valid point,
    so outputs that started empty (the Prometheus info gauge) learn of it again.

    Examples
    --------
    >>> h = Hysteresis()
    >>> policy = AlertPolicy(min_duration=2, close_after=1)
    >>> slots = np.array([0])
    >>> [bool(h.step(slots, np.array([s]), np.array([0]), policy).flag[0])
    ...  for s in (0.2, 1.5, 1.6, 0.9, 0.1)]
    [False, False, True, True, False]
    >>> half_hourly = np.arange(1, 4) * 1800 * 10**9  # one high point is 30 minutes of it
    >>> [bool(h.step(np.array([1]), np.array([s]), np.array([t]), policy).flag[0])
    ...  for s, t in zip((0.2, 0.2, 1.5), half_hourly)]
    [False, False, True]
    """

    def __init__(self) -> None:
        self._state = SlotArrays(
            # Point counts are int32, saturating (event times stay int64).
            above=Column(np.int32),
            below=Column(np.int32),
            open=Column(np.bool_, False),
            last_event_ts=Column(np.int64),
            open_for=Column(np.int32),  # points since the anomaly opened
            since_close=Column(np.int32, _LONG_AGO),  # points since the last close
            prev_ts=Column(np.int64),  # event time of the last valid point
            spacing=Column(np.float64, 0.0),  # usual gap between points, ns
            high_for=Column(np.float64, 0.0),  # event time the high run spans, ns
            low_for=Column(np.float64, 0.0),  # event time the low run spans, ns
            closed_ts=Column(np.int64),  # event time of the last close
            peak=Column(np.float32, 0.0),  # the highest score of the open or last anomaly
            evidence=Column(np.float32, 0.0),  # the CUSUM of the scores (evidence_point_s)
            # Running moments of the (clipped) scores between anomalies: how much a score
            # says about the next one (see ``score_independence``); the prior: independent.
            **{name: Column(np.float32, prior) for name, prior in LAG_PRIOR.items()},
        )
        self._resumed: set[int] = set()  # restored open anomalies not yet announced
        self._converted: dict[int, tuple[AlertPolicy, _Thresholds]] = {}

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._state.ensure(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot alert state."""
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore the state saved by ``state_dict``."""
        rows = len(state["open"])  # state saved before peaks were kept: no cooldown bypass
        self._state.load_state_dict({"peak": np.full(rows, np.inf, np.float32), **state})
        self._resumed = set(np.flatnonzero(self._state.open).tolist())

    def is_open(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """Whether each slot has an open anomaly."""
        self._ensure(slots)
        return self._state.open[slots]  # fancy indexing copies

    def spacing_s(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Each slot's usual gap between points in seconds (0 while unknown)."""
        self._ensure(slots)
        out: NDArray[np.float64] = self._state.spacing[slots] / 1e9
        return out

    def open_for(self, slots: NDArray[np.intp]) -> NDArray[np.int64]:
        """Points each slot's open anomaly has lasted (0 when none is open)."""
        self._ensure(slots)
        return np.where(self._state.open[slots], self._state.open_for[slots], 0)

    def step(
        self,
        slots: NDArray[np.intp],
        score: NDArray[np.float64],
        ts_unix_nano: NDArray[np.int64],
        policy: AlertPolicy,
        keep: NDArray[np.bool_] | None = None,
    ) -> Transitions:
        """Advance distinct ``slots`` by one scored point each.

        Rows marked in ``keep`` do not close an open anomaly (its value is still moving
        away: ``processors.alerting.held_band``), whatever their score.
        """
        self._ensure(slots)
        state = self._state
        announce = self._announce(slots, ~np.isnan(score)) if self._resumed else _NO_ROWS
        flag, opened, updated, closed = _step_rows(
            slots, score, ts_unix_nano, announce, _NO_ROWS if keep is None else keep,
            state.above, state.below, state.open, state.last_event_ts, state.open_for,
            state.since_close, state.prev_ts, state.spacing, state.high_for, state.low_for,
            state.closed_ts, state.peak, state.evidence, state.lag_prev, state.lag_mean,
            state.lag_square, state.lag_cross, *self._thresholds(policy),
        )
        return Transitions(flag, opened, updated, closed)

    @property
    def announcing(self) -> bool:
        """Whether a restored anomaly still waits for its first valid point's update."""
        return bool(self._resumed)

    def noise_columns(self) -> tuple[NDArray[np.float32], ...]:
        """Each slot's running moments of its scores between anomalies: mean, square, cross.

        The columns themselves, as ``HeldBands.apply`` takes them (read, never write); they
        have rows for the slots ``is_open`` or ``step`` saw.
        """
        state = self._state
        return state.lag_mean, state.lag_square, state.lag_cross

    @property
    def open_column(self) -> NDArray[np.bool_]:
        """Whether each slot has an open anomaly (the column itself: read, never write)."""
        return self._state.open

    def scan_args(self, slots: NDArray[np.intp], policy: AlertPolicy,
                  ) -> tuple[tuple[Any, ...], _Thresholds]:
        """``_step_rows``' state columns (rows made for ``slots``) and ``policy``'s thresholds."""
        self._ensure(slots)
        state = self._state
        return ((state.above, state.below, state.open, state.last_event_ts, state.open_for,
                 state.since_close, state.prev_ts, state.spacing, state.high_for,
                 state.low_for, state.closed_ts, state.peak, state.evidence, state.lag_prev,
                 state.lag_mean, state.lag_square, state.lag_cross),
                self._thresholds(policy))

    def _thresholds(self, policy: AlertPolicy) -> _Thresholds:
        """The policy's thresholds as the kernel takes them, converted once per policy.

        A round would otherwise convert eleven of them again (a policy is frozen; the
        cache keeps it, so its ``id`` is not reused while cached).
        """
        cached = self._converted.get(id(policy))
        if cached is not None and cached[0] is policy:
            return cached[1]
        # int() of the event-time thresholds in Python, as before (inf still raises here).
        cooldown_ns = int(policy.cooldown_time_s * 1e9) if policy.cooldown_time_s > 0 else -1
        converted: _Thresholds = (
            float(policy.open_threshold), float(policy.close_threshold),
            float(policy.instant_threshold), int(policy.min_duration),
            float(policy.min_duration_time_s * 1e9), float(policy.evidence_point_s * 1e9),
            int(policy.close_after),
            float(policy.close_after_time_s * 1e9), int(policy.cooldown),
            _int64(cooldown_ns), _int64(int(policy.update_interval_s * 1e9)),
        )
        if len(self._converted) >= _MAX_POLICIES:  # policies made on the fly (tests)
            self._converted.clear()
        self._converted[id(policy)] = (policy, converted)
        return converted

    def _announce(self, slots: NDArray[np.intp], valid: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Which rows are a restored anomaly's first valid point (each is announced once)."""
        resumed = np.isin(slots, np.fromiter(self._resumed, np.intp, len(self._resumed)))
        self._resumed.difference_update(slots[resumed & valid].tolist())
        return resumed

    def _learn_spacing(
        self, slots: NDArray[np.intp], ts: NDArray[np.int64], valid: NDArray[np.bool_]
    ) -> NDArray[np.float64]:
        """Each slot's usual gap between points (ns), updated with this row's gap."""
        state = self._state
        spacing: NDArray[np.float64] = _learn_spacing_rows(
            slots, ts, valid, state.prev_ts, state.spacing)
        return spacing

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots`` (no close event is produced)."""
        self._state.reset(slots)
        if self._resumed:
            self._resumed.difference_update(slots.tolist())



_NO_ROWS = np.zeros(0, np.bool_)  # no restored anomaly awaits its announcement


def _int64(ns: int) -> int:
    """An event-time threshold in ns, clipped to int64 (a kernel argument must fit)."""
    return min(max(ns, -(1 << 63)), (1 << 63) - 1)


@kernel
def more_points(count: Any) -> Any:
    """``count + 1``, saturating at the largest count an int32 column holds."""
    more = np.int64(count) + 1
    return more if more < _COUNT_MAX else np.int64(_COUNT_MAX)


@row_kernel
def spacing_after(prev: Any, usual: Any, t: Any, valid: Any) -> Any:
    """A slot's last stamp and usual gap (ns) after a point at ``t``: a running mean of its gaps."""
    if valid and prev > 0 and t > prev:
        gap = np.float64(t - prev)
        if usual > 0:
            # A gap of days moves the average by at most one usual gap.
            twice = 2 * usual
            usual = usual + 0.1 * ((gap if gap < twice else twice) - usual)
        else:
            usual = gap
    if valid and t > prev:
        prev = t
    return prev, usual


@kernel
def _learn_spacing_rows(slots: Any, ts: Any, valid: Any, prev_ts: Any, spacing: Any) -> Any:
    out = np.empty(len(slots))
    for i in range(len(slots)):
        s = slots[i]
        prev_ts[s], spacing[s] = spacing_after(prev=prev_ts[s], usual=spacing[s], t=ts[i],
                                               valid=valid[i])
        out[i] = spacing[s]
    return out


@kernel
def score_independence(mean: Any, square: Any, cross: Any) -> Any:
    """The share of a point's evidence that its neighbour does not already carry.

    ``(1 - r) / (1 + r)``, ``r`` the lag-1 autocorrelation of the slot's scores between
    anomalies (at least 0): the effective number of independent points per point of an
    AR(1) series. Noise whose excursions last several points (a smooth gauge scraped
    often) needs more points of evidence; independent windows (counts of calls) need none.
    """
    variance = square - mean * mean
    if not variance > 1e-9:
        return 1.0
    r = min(max((cross - mean * mean) / variance, 0.0), 0.99)
    # An autocorrelation within its sampling noise of 0 (independent windows learn up to
    # about 0.07) is no reason to discount a point: independent windows count whole.
    if r <= _LAG_NOISE:
        return 1.0
    return (1.0 - r) / (1.0 + r)


@row_kernel
def lag_after(x: Any, prev: Any, mean: Any, square: Any, cross: Any) -> Any:
    """A slot's running moments of ``score_independence`` after learning its score ``x``."""
    z = min(x, _LAG_CLIP)
    return (z, _LAG_KEEP * mean + (1.0 - _LAG_KEEP) * z,
            _LAG_KEEP * square + (1.0 - _LAG_KEEP) * z * z,
            _LAG_KEEP * cross + (1.0 - _LAG_KEEP) * z * prev)


@row_kernel
def point_weight(usual: Any, evidence_ns: float, independence: Any) -> Any:
    """A point's share of an evidence point: its spacing's share, or its independence.

    Whichever is more, at most 1; 1 without evidence points or while the spacing is unknown.
    """
    if evidence_ns <= 0:
        return 1.0
    weight = usual / evidence_ns if usual > 0 else 1.0
    return min(max(weight, independence), 1.0)


@kernel
def _evidence(  # noqa: PLR0913 -- one row's score and the policy's evidence settings
    gathered: Any, x: Any, valid: Any, high: Any, weight: Any, run_above: Any,
    min_duration: int, evidence_ns: float, reference: float,
) -> Any:
    """A slot's evidence after a point, and whether it is enough to open an anomaly.

    Without evidence points: ``min_duration`` high points in a row. With them, the CUSUM
    of ``Hysteresis``: the point adds ``score - reference`` times its share of an evidence
    point (``weight``, from ``point_weight``), the sum never falls below 0, and
    ``min_duration`` points at the open threshold (twice the reference) are enough.
    """
    if evidence_ns <= 0:
        return 0.0, run_above >= min_duration
    if valid:
        gathered = max(0.0, gathered + weight * (x - reference))
    # The flag rises on a point out of the band, never on one that is back inside.
    return gathered, high and gathered >= min_duration * reference


@row_kernel
def transition(  # noqa: PLR0913 -- one row, its slot's alert state, the policy's thresholds
    x: Any, t: Any, announce_row: Any, keep_row: Any,
    above: Any, below: Any, was_open: Any, last_event_ts: Any, open_for: Any,
    since_close: Any, usual: Any, high_for: Any, low_for: Any, closed_ts: Any, peak: Any,
    evidence: Any, independence: Any,
    open_threshold: float, close_threshold: float,
    instant_threshold: float, min_duration: int, min_time_ns: float, evidence_ns: float,
    close_after: int, close_time_ns: float,
    cooldown: int, cooldown_ns: int, interval_ns: int,
) -> Any:
    """One row of ``Hysteresis.step`` for its slot's state (``usual``: its spacing after it).

    Returns the slot's new state (above, below, open, last event, open for, since close,
    high for, low for, closed at, peak, evidence), whether the score teaches the
    autocorrelation (``lag_after``), and whether the row opened, updated or closed.
    """
    reference = 0.5 * open_threshold  # the CUSUM's: half the shift it is tuned to
    valid = not np.isnan(x)
    high = valid and x >= open_threshold
    low = valid and x < close_threshold
    run_above = more_points(above) if high else (np.int64(0) if valid else np.int64(above))
    run_below = more_points(below) if low else (np.int64(0) if valid else np.int64(below))
    since = more_points(since_close) if valid else np.int64(since_close)
    cooled = since > cooldown or (cooldown_ns >= 0 and t - closed_ts >= cooldown_ns)
    # The cooldown keeps the rest of one event from opening again; a point scoring above
    # that event's peak is more than its rest (as the ensemble's refractory stretch).
    cooled = cooled or (valid and x > peak)
    high_run = high_for + usual if high else (0.0 if valid else high_for)
    low_run = low_for + usual if low else (0.0 if valid else low_for)
    # One weight for the evidence out (opening) and back (closing).
    weight = point_weight(usual, evidence_ns, independence)
    gathered, enough = _evidence(evidence, x, valid, high, weight, run_above,
                                 min_duration, evidence_ns, reference)
    long_enough = enough or (high and min_time_ns > 0 and high_run >= min_time_ns)
    opens = not was_open and cooled and (
        long_enough or (valid and x >= instant_threshold))
    # Points back inside count as the evidence opening counts them (``point_weight``): on a
    # smooth gauge scraped every 30 s one point back is not 5 minutes of being back.
    # A series whose spacing is not known yet closes on points alone.
    back = run_below * weight
    closes = was_open and back >= close_after - _CLOSE_SLACK and (
        low_run >= close_time_ns or usual <= 0) and not keep_row
    updates = was_open and not closes and (
        (high and t - last_event_ts >= interval_ns) or (announce_row and valid))
    now_open = (was_open or opens) and not closes
    # A NaN score leaves the open anomaly's age as it was (``relearn_after`` counts it).
    age = 1 if opens else ((more_points(open_for) if valid else open_for) if now_open else 0)
    top = x if opens or (now_open and valid and x > peak) else peak
    return (run_above, run_below, now_open, t if opens or updates or closes else last_event_ts,
            age, 0 if closes else since, high_run, low_run, t if closes else closed_ts, top,
            0.0 if now_open else gathered,  # an anomaly's evidence ends with it
            valid and evidence_ns > 0 and not (was_open or now_open), opens, updates, closes)


@row_kernel
def quiet_step(s: Any, x: Any, t: Any, columns: tuple[Any, ...],
               thresholds: tuple[Any, ...]) -> None:
    """``_step_rows``' loop body for a slot with nothing open or announced (the row scans).

    ``columns`` and ``thresholds``: ``Hysteresis.scan_args``. The live loop keeps its own
    copy, the columns one by one: each array a call takes costs two atomic reference counts
    (``compiled.row_kernel``), about 3 % of a scanned row here (``benchmarks/backtest_speed
    .py`` single 582,000-588,000 -> 568,000 points/s), more of a round's row.
    """
    (above, below, is_open, last_event_ts, open_for, since_close, prev_ts, spacing, high_for,
     low_for, closed_ts, peak, evidence, lag_prev, lag_mean, lag_square, lag_cross) = columns
    (open_threshold, close_threshold, instant_threshold, min_duration, min_time_ns,
     evidence_ns, close_after, close_time_ns, cooldown, cooldown_ns, interval_ns) = thresholds
    prev_ts[s], spacing[s] = spacing_after(prev=prev_ts[s], usual=spacing[s], t=t,
                                           valid=not np.isnan(x))
    independence = (score_independence(lag_mean[s], lag_square[s], lag_cross[s])
                    if evidence_ns > 0 else 1.0)
    (above[s], below[s], is_open[s], last_event_ts[s], open_for[s], since_close[s],
     high_for[s], low_for[s], closed_ts[s], peak[s], evidence[s], learns_lag,
     _opened, _updated, _closed) = transition(
        x=x, t=t, announce_row=False, keep_row=False, above=above[s], below=below[s],
        was_open=is_open[s], last_event_ts=last_event_ts[s], open_for=open_for[s],
        since_close=since_close[s], usual=spacing[s], high_for=high_for[s],
        low_for=low_for[s], closed_ts=closed_ts[s], peak=peak[s], evidence=evidence[s],
        independence=independence, open_threshold=open_threshold,
        close_threshold=close_threshold, instant_threshold=instant_threshold,
        min_duration=min_duration, min_time_ns=min_time_ns, evidence_ns=evidence_ns,
        close_after=close_after, close_time_ns=close_time_ns, cooldown=cooldown,
        cooldown_ns=cooldown_ns, interval_ns=interval_ns)
    if learns_lag:
        lag_prev[s], lag_mean[s], lag_square[s], lag_cross[s] = lag_after(
            x=x, prev=lag_prev[s], mean=lag_mean[s], square=lag_square[s],
            cross=lag_cross[s])


@kernel
def _step_rows(  # noqa: PLR0913 -- the state columns and the policy's thresholds
    slots: Any, score: Any, ts: Any, announce: Any, keep: Any,
    above: Any, below: Any, is_open: Any, last_event_ts: Any, open_for: Any,
    since_close: Any, prev_ts: Any, spacing: Any, high_for: Any, low_for: Any, closed_ts: Any,
    peak: Any, evidence: Any, lag_prev: Any, lag_mean: Any, lag_square: Any, lag_cross: Any,
    open_threshold: float, close_threshold: float,
    instant_threshold: float, min_duration: int, min_time_ns: float, evidence_ns: float,
    close_after: int, close_time_ns: float,
    cooldown: int, cooldown_ns: int, interval_ns: int,
) -> Any:
    """``Hysteresis.step`` row by row (slots are distinct): the flags, opens, updates, closes.

    ``quiet_step`` is this loop's body for the row scans (change both: ``test_row_scan``
    and ``test_ewma_scan`` fail if they differ).
    """
    n = len(slots)
    flag = np.empty(n, np.bool_)
    opened = np.empty(n, np.bool_)
    updated = np.empty(n, np.bool_)
    closed = np.empty(n, np.bool_)
    for i in range(n):
        s, x, t = slots[i], score[i], ts[i]
        prev_ts[s], spacing[s] = spacing_after(prev=prev_ts[s], usual=spacing[s], t=t,
                                               valid=not np.isnan(x))
        independence = (score_independence(lag_mean[s], lag_square[s], lag_cross[s])
                        if evidence_ns > 0 else 1.0)  # points in a row: not needed
        # (numba cannot compile a call of many keywords with a condition among them)
        announce_row = len(announce) > 0 and announce[i]
        keep_row = len(keep) > 0 and keep[i]
        (above[s], below[s], is_open[s], last_event_ts[s], open_for[s], since_close[s],
         high_for[s], low_for[s], closed_ts[s], peak[s], evidence[s], learns_lag,
         opened[i], updated[i], closed[i]) = transition(
            x=x, t=t, announce_row=announce_row, keep_row=keep_row, above=above[s],
            below=below[s],
            was_open=is_open[s], last_event_ts=last_event_ts[s], open_for=open_for[s],
            since_close=since_close[s], usual=spacing[s], high_for=high_for[s],
            low_for=low_for[s], closed_ts=closed_ts[s], peak=peak[s], evidence=evidence[s],
            independence=independence, open_threshold=open_threshold,
            close_threshold=close_threshold, instant_threshold=instant_threshold,
            min_duration=min_duration, min_time_ns=min_time_ns, evidence_ns=evidence_ns,
            close_after=close_after, close_time_ns=close_time_ns, cooldown=cooldown,
            cooldown_ns=cooldown_ns, interval_ns=interval_ns)
        if learns_lag:
            lag_prev[s], lag_mean[s], lag_square[s], lag_cross[s] = lag_after(
                x=x, prev=lag_prev[s], mean=lag_mean[s], square=lag_square[s],
                cross=lag_cross[s])
        flag[i] = is_open[s]
    return flag, opened, updated, closed
