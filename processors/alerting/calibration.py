"""From a detector's prediction to the exported band and the band-normalised score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.alerting.calibration_kernels import (
    DIRECTIONS,
    DISPERSION_MEMORY,
    calibrate_rows,
    calibrate_slots,
    clip_rows,
    count_rows,
    learn_count_rows,
    learn_magnitude_rows,
    ready_rows,
    scale_lesson,
)
from otel_anomaly.processors.alerting.rarity import (
    ScoreTail,
)
from otel_anomaly.processors.alerting.row_sampling import max_of_n_factors
from otel_anomaly.processors.alerting.tail_quantile import DeviationScale
from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.detectors.base import Detector, Prediction
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.settings import AlertPolicy
from otel_anomaly.processors.types import SeriesBatch

_MIN_WIDTH = 1e-9
"""Narrowest band half-width, in the series' unit: beyond float noise, so scores stay finite."""
MAGNITUDE_MEMORY = 50_000
"""Points a series' usual magnitude remembers: long enough that a long flat stretch (a rate
resting at 0 overnight) does not make the series forget the size its values usually have."""
_DISPERSION_DECAY = 1.0 - 1.0 / DISPERSION_MEMORY
_NO_ROWS = np.zeros(0)  # an optional per-row argument of a kernel, not given
_NO_MASK = np.zeros(0, np.bool_)


@dataclass(frozen=True, slots=True)
class Calibrated:
    """Band and score per row. ``score`` is 0 at ``expected``, 1 at the band edge.

    ``baseline``: the detector's ``Prediction.baseline`` (None: ``expected``). ``edge``:
    the band half-width in the detector's units that ``Calibrator.step`` scored with, kept
    so that learning the round does not compute it again (None: not known).
    ``last_cycle``: the detector's ``Prediction.last_cycle``, which a count's tests were
    scored with and learn with (None: not known).
    """

    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    score: NDArray[np.float64]
    baseline: NDArray[np.float64] | None = None
    edge: NDArray[np.float64] | None = None
    last_cycle: NDArray[np.float64] | None = None

    @property
    def reference(self) -> NDArray[np.float64]:
        """What a lasting deviation is measured from: ``baseline``, else ``expected``."""
        return self.expected if self.baseline is None else self.baseline


def calibrate(
    values: NDArray[np.float64], prediction: Prediction, policy: AlertPolicy,
    floor: NDArray[np.float64] | float = 0.0,
) -> Calibrated:
    """Widen the band to the policy's noise tolerance and score each row against it.

    Each side of the band is at least ``min_absolute_deviation``, ``min_relative_deviation
    * |expected|`` and ``floor`` wide, and never narrower than ``_MIN_WIDTH`` (so a
    series that has rested at exactly one value scores large but finite). The score is
    the distance from the expected value in units of the band's half-width on that side,
    so an asymmetric band (log-scale detectors) scores each side fairly. A deviation in a
    direction the policy ignores scores 0. Rows still warming up (NaN band)
    score 0; non-finite values score NaN.

    Examples
    --------
    >>> p = Prediction(np.array([10.0, 10.0, 10.0]), np.array([8.0] * 3), np.array([12.0] * 3))
    >>> calibrate(np.array([10.0, 13.0, 6.0]), p, AlertPolicy(direction="up")).score
    array([0. , 1.5, 0. ])
    """
    n = len(values)
    rows = np.full(n, floor) if np.ndim(floor) == 0 else np.asarray(floor, np.float64)
    with float_warnings_ignored():  # absurd inputs near +-1e308
        lower, upper, score = calibrate_rows(
            values, prediction.expected, prediction.lower, prediction.upper, rows,
            float(policy.min_absolute_deviation), float(policy.min_relative_deviation),
            DIRECTIONS[policy.direction], _MIN_WIDTH)
    return Calibrated(prediction.expected, lower, upper, score, prediction.baseline)


def clip_to_band(values: NDArray[np.float64], calibrated: Calibrated) -> NDArray[np.float64]:
    """Values clipped into the band, for learning without letting an anomaly pull the model.

    Warming rows (NaN band) pass through unchanged.
    """
    clipped: NDArray[np.float64] = clip_rows(values, calibrated.lower, calibrated.upper)
    return clipped


class Calibrator:
    """Per-slot band width from each series' own running distribution of deviations.

    Three ways, by detector and policy:

    - A self-calibrating detector (the ensemble: Gaussian-equivalent sigmas) under a
      ``false_alarm_budget``: each series' band edge widens to where that series' own
      score tail says noise alone opens about ``false_alarm_budget`` anomalies a day
      (``processors.alerting.rarity``), never narrower than ``band`` sigmas, so one threshold
      means the same rarity on a calm series and on a spiky one.
    - A self-calibrating detector without a budget: ``band`` sigmas as they are.
    - Any other detector, with ``tail_calibration``: a ``DeviationScale`` per slot makes
      the band ``policy.band * multiplier`` spread units wide, never narrower than that
      many times the scale's ``floor``: a series with Gaussian-like residuals keeps
      ``band``, one whose usual extreme is ten times wider gets a ten times wider band.

    Every band is also at least ``min_relative_deviation`` times the series' usual
    magnitude (its mean ``|value|`` over ``MAGNITUDE_MEMORY`` points), a floor in the
    series' own unit that a long flat stretch cannot shrink to nothing, and, for a whole
    value while every value the slot has learned was a whole number (a count), at least 1:
    the series' resolution, so a count resting at 0 scores a lone 1 at the band's edge,
    not at 1e9. A fractional value (an error ratio leaving 0) is scored without it.

    A rate that comes with the seconds it was counted over (``SeriesBatch.counts``: a
    counter's interval, a window of spans or log records) and has counted whole events so
    far is judged as a count: the upper side of its band is at least as wide as Poisson
    noise around the expected number of events allows at the band's sigmas
    (``count_width``; the lower tail of a count is shorter than its spread suggests).
    An error counter that ticks about once an hour rests at an expected 0 events a
    minute, and its band was only what its rare events had taught it: two errors in a
    minute scored up to 1.8 and opened, about once a series-day. Now one error scores 0.3
    to 0.5 and two 0.6 to 1.1 (``tests/processors/test_count_rates.py``). Events that
    come in bursts vary more: each count learns its ``dispersion`` (a multiple of the
    Poisson variance, once evident, or as its gaps between events say where most
    intervals are empty: ``count_dispersion``), its band is as wide as a count of that variance
    needs, and a rise that lasts narrows it back to Poisson's (``count_floor``), and past
    it as a CUSUM of the intervals' events says (``count_rise_score``). Below, a count's
    lower tail ends at 0: no single interval of 10 events or fewer is far out, so the
    recent intervals pooled and a run of empty ones are tested as counts
    (``count_drop_score``), and a row scores at least what they say.

    ``step`` scores, ``learn`` then learns; the scorer masks out rows inside an already
    open anomaly (unless learn gating is off), so an incident's first point teaches "such
    excursions happen" but a lasting incident does not widen the band under itself.

    Examples
    --------
    >>> from otel_anomaly.processors.detectors import EwmaZScore
    >>> det, cal = EwmaZScore(warmup=5), Calibrator(AlertPolicy(tail_window=200))
    >>> rng = np.random.default_rng(0)
    >>> heavy = 100.0 + rng.standard_t(1.5, 400)  # bursty: many "4 sigma" points
    >>> for i, v in enumerate(heavy):
    ...     batch = SeriesBatch.of([0], [v], [i])
    ...     cal.learn(det, batch, cal.step(det, batch))
    ...     det.learn(batch)
    >>> float(cal.multiplier(np.array([0]))[0]) > 2 * 4.0  # band widened for this series
    True
    """

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self.scale = DeviationScale(q=policy.tail_quantile, window=policy.tail_window)
        self.rarity = ScoreTail(window=policy.tail_window)
        # Each slot's usual |value|, and how many points it has learned from.
        # float32: a running mean and a count that only matters up to MAGNITUDE_MEMORY.
        # ``fractional``: 1 once a value was not a whole number (else the band is at least
        # 1 wide: the resolution of a count). ``count_*``: the sums a count's
        # ``dispersion`` is measured from, its recent events (``count_floor``) and its
        # runs of empty windows and its drop CUSUM (``count_drop_score``), its rise CUSUM
        # and the seconds its mean rate is measured over (``count_rise_score``); all 0 on a
        # series that is no count.
        self._usual = SlotArrays(magnitude=Column(np.float32, 0.0), points=Column(np.float32, 0.0),
                                 fractional=Column(np.uint8, 0),
                                 count_excess=Column(np.float32, 0.0),
                                 count_excess_sq=Column(np.float32, 0.0),
                                 count_events=Column(np.float32, 0.0),
                                 count_recent_events=Column(np.float32, 0.0),
                                 count_recent_expected=Column(np.float32, 0.0),
                                 count_run_expected=Column(np.float32, 0.0),
                                 count_gap_sum=Column(np.float32, 0.0),
                                 count_gaps=Column(np.float32, 0.0),
                                 count_drop_cusum=Column(np.float32, 0.0),
                                 count_rise_cusum=Column(np.float32, 0.0),
                                 count_exposure_sum=Column(np.float32, 0.0))

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot arrays (the usual magnitude, the tail scale, the rarity)."""
        return {**{f"usual.{k}": v for k, v in self._usual.state_dict().items()},
                **{f"scale.{k}": v for k, v in self.scale.state_dict().items()},
                **{f"rarity.{k}": v for k, v in self.rarity.state_dict().items()}}

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore the arrays saved by ``state_dict``."""
        self._usual.load_state_dict(_prefixed(state, "usual."))
        self.scale.load_state_dict(_prefixed(state, "scale."))
        self.rarity.load_state_dict(_prefixed(state, "rarity."))

    def multiplier(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Band half-width in spread units per slot (detectors that are not self-calibrating)."""
        if not self.policy.tail_calibration:
            return np.full(len(slots), self.policy.band)
        return self.policy.band * self.scale.multiplier(slots)

    def _rare(self, detector: Detector) -> bool:
        return detector.self_calibrating and self.policy.false_alarm_budget > 0

    def edge(
        self, detector: Detector, slots: NDArray[np.intp], spacing_s: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Band half-width in the detector's units per slot: where the score is 1."""
        if self._rare(detector):
            policy = self.policy
            # max(band, edge_for_budget(point_probability, points_to_open)), in one kernel.
            return self.rarity.budget_edge(
                slots, spacing_s, policy.false_alarm_budget, policy.min_duration,
                policy.min_duration_time_s, policy.open_threshold, policy.instant_threshold,
                policy.band)
        if detector.self_calibrating or not self.policy.tail_calibration:
            return np.full(len(slots), self.policy.band)
        return self.multiplier(slots)

    def step(
        self, detector: Detector, batch: SeriesBatch,
        spacing_s: NDArray[np.float64] | None = None,
        received: NDArray[np.float64] | None = None,
        drawn: NDArray[np.float64] | None = None,
    ) -> Calibrated:
        """Band and score of each row of distinct slots. Pure (see ``learn``).

        ``spacing_s``: each row's series' usual spacing in seconds (0 or None: unknown).
        ``received``: the rows' values as they arrived, when ``batch`` holds them less a
        deploy's level offset (an amount): a count is judged in the events it counted.
        ``drawn``: per row, of how many of a request's rows it is the extreme (None: each
        row is one draw); such a row's band is wider (``row_sampling.max_of_n_band``).
        """
        slots = batch.slots
        spacing = np.zeros(len(slots)) if spacing_s is None else spacing_s
        k = self.edge(detector, slots, spacing)
        if drawn is not None:
            k = k * max_of_n_factors(self.policy.band, drawn)
        prediction = detector.predict(batch, k)
        self._usual.ensure(slots)
        # The floor: the usual magnitude's share, and k scale floors when tail-calibrated.
        scale_floor = self.scale.floor(slots) if self._active(detector) else _NO_ROWS
        policy = self.policy
        with float_warnings_ignored():  # absurd inputs near +-1e308
            lower, upper, score = calibrate_slots(
                batch.values, prediction.expected, prediction.lower, prediction.upper, slots,
                self._usual.magnitude, self._usual.fractional, k, scale_floor,
                float(policy.min_absolute_deviation), float(policy.min_relative_deviation),
                DIRECTIONS[policy.direction], _MIN_WIDTH, exposures(detector, batch),
                _NO_ROWS if received is None else received, self._count_sums(),
                _NO_ROWS if prediction.last_cycle is None else prediction.last_cycle)
        return Calibrated(prediction.expected, lower, upper, score, prediction.baseline, k,
                          prediction.last_cycle)

    def counted(self, detector: Detector, batch: SeriesBatch,
                received: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Per row of ``batch``, whether it counts whole events (``count_floor``'s rows).

        ``received``: the rows' values as they arrived (a deploy's offset not taken out).
        """
        out: NDArray[np.bool_] = count_rows(batch.slots, received, exposures(detector, batch),
                                            self._usual.fractional)
        return out

    def magnitude(self, slots: NDArray[np.intp]) -> NDArray[np.float64]:
        """Each slot's usual ``|value|`` (0 before its first point)."""
        self._usual.ensure(slots)
        return self._usual.magnitude[slots].astype(np.float64)

    def learn(
        self, detector: Detector, batch: SeriesBatch, calibrated: Calibrated,
        mask: NDArray[np.bool_] | None = None, spacing_s: NDArray[np.float64] | None = None,
        quiet: NDArray[np.bool_] | None = None, received: NDArray[np.float64] | None = None,
        unclipped: NDArray[np.float64] | None = None,
    ) -> None:
        """Learn the deviations of scored rows (``mask``: only those rows).

        ``quiet``: rows outside an open anomaly, or opening one; only they teach the
        rarity tail and a count's dispersion, so a lasting incident does not make the next
        one look ordinary.
        ``calibrated``: what ``step`` gave for these rows and ``spacing_s`` (its band edge
        is reused; nothing has learned in between). ``received``: the rows' values as they
        arrived, when ``batch`` holds what the detector learns instead (clipped to a held
        band, less a deploy offset): whether a series is whole-numbered is a property of
        its data, not of its lessons. ``unclipped``: the rows' values less a deploy's
        offset only, where ``batch`` holds clipped ones (None: as ``batch``): a count's
        recent sums follow every row, and put the offset back into the expected events.
        """
        got = batch.values if received is None else received
        exposure = exposures(detector, batch)
        self._learn_magnitude(batch, got, exposure)
        if len(exposure):  # rows of counts (most rounds of gauges have none: no call)
            with float_warnings_ignored():
                learn_count_rows(batch.slots, batch.values, got, calibrated.expected, exposure,
                                 self._usual.fractional, _NO_MASK if quiet is None else quiet,
                                 self._count_sums(), _DISPERSION_DECAY,
                                 _NO_ROWS if unclipped is None else unclipped,
                                 _NO_ROWS if calibrated.last_cycle is None
                                 else calibrated.last_cycle)
        rare, active = self._rare(detector), self._active(detector)
        if not (rare or active):
            return
        spacing = np.zeros(len(batch)) if spacing_s is None else spacing_s
        # Rows with a band and a finite score; with ``mask`` (and, for the rarity, ``quiet``).
        ready = ready_rows(calibrated.upper, calibrated.score,
                           _NO_MASK if mask is None else mask,
                           _NO_MASK if quiet is None or not rare else quiet)
        if rare:
            # The detector's own score: the band's score is measured from an expected value
            # the detector may move as the band widens, so it is not the same rarity.
            edge = (self.edge(detector, batch.slots, spacing) if calibrated.edge is None
                    else calibrated.edge)
            self.rarity.update(batch.slots[ready], detector.score(batch)[ready], edge[ready])
        else:
            k = self.multiplier(batch.slots) if calibrated.edge is None else calibrated.edge
            with float_warnings_ignored():
                self.scale.update(*scale_lesson(ready, batch.slots, calibrated.score, k,
                                                batch.values, calibrated.expected))

    def _learn_magnitude(self, batch: SeriesBatch, received: NDArray[np.float64],
                         exposure: NDArray[np.float64]) -> None:
        usual = self._usual
        with float_warnings_ignored():
            if learn_magnitude_rows(batch.slots, batch.values, received, usual.magnitude,
                                    usual.points, usual.fractional, MAGNITUDE_MEMORY, exposure):
                return
            # A finite row's slot is past the columns (rare: ``step`` grew them): grow, redo.
            usual.ensure(batch.slots[np.isfinite(batch.values)])
            learn_magnitude_rows(batch.slots, batch.values, received, usual.magnitude,
                                 usual.points, usual.fractional, MAGNITUDE_MEMORY, exposure)

    def _count_sums(self) -> tuple[NDArray[np.float32], ...]:
        usual = self._usual
        return (usual.count_excess, usual.count_excess_sq, usual.count_events,
                usual.count_recent_events, usual.count_recent_expected,
                usual.count_run_expected, usual.count_gap_sum, usual.count_gaps,
                usual.count_drop_cusum, usual.count_rise_cusum, usual.count_exposure_sum)

    def _active(self, detector: Detector) -> bool:
        return self.policy.tail_calibration and not detector.self_calibrating

    def uses_scale(self, detector: Detector) -> bool:
        """Whether ``detector``'s bands are widened by a learned tail scale."""
        return self._active(detector)

    def uses_rarity(self, detector: Detector) -> bool:
        """Whether ``detector``'s band edge comes from its series' score tail (a budget)."""
        return self._rare(detector)

    def scan_args(self, slots: NDArray[np.intp]) -> tuple[Any, ...]:
        """What ``row_scan.scan_rows`` takes of the calibration, rows made for ``slots``.

        The usual-magnitude columns and the policy's floors, for a detector that uses
        neither a tail scale nor a rarity tail.
        """
        usual, policy = self._usual, self.policy
        usual.ensure(slots)
        return (usual.magnitude, usual.points, usual.fractional, MAGNITUDE_MEMORY,
                float(policy.min_absolute_deviation), float(policy.min_relative_deviation),
                DIRECTIONS[policy.direction], _MIN_WIDTH, self._count_sums(),
                _DISPERSION_DECAY)

    def reset(self, slots: NDArray[np.intp], detector: Detector | None = None) -> None:
        """Forget ``slots``; with ``detector``, allocate only the state it will use.

        The deviation scale holds 380 bytes per slot (a float32 histogram): the ensemble
        (self-calibrating) never reads it, and only a budget reads the rarity tail.
        """
        if detector is None or self._active(detector):
            self.scale.reset(slots)
        if detector is None or self._rare(detector):
            self.rarity.reset(slots)
        self._usual.reset(slots)


def exposures(detector: Detector, batch: SeriesBatch) -> NDArray[np.float64]:
    """The seconds each row's rate was counted over (``SeriesBatch.counts``), if any.

    Empty when no row has them, or when the detector judges the counts itself (the trials
    of a ratio): the calibrator's count floor is then off.
    """
    if batch.counts is None or detector.counts_are_trials:
        return _NO_ROWS
    return batch.counts


def _prefixed(state: dict[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
