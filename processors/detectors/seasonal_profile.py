"""Seasonal baseline: a robust mean and spread per phase of the day (or week), per series."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.detectors import seasonal_kernels as kernels
from otel_anomaly.processors.detectors.base import Prediction, RoundMemo, SlotStateDetector
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch

_NO_PHASES = np.empty((0, 0))  # no neighbouring phases (phase_tolerance 0)


class SeasonalProfile(SlotStateDetector):
    """Robust seasonal z-score: each point against the same phase of previous cycles.

    The cycle (``period_s``, a day by default) is split into ``buckets`` phases by event
    time (UTC, ``ts mod period``), so irregular spacing and gaps of days keep their phase.
    Per slot and phase it keeps an exponentially weighted mean and mean absolute deviation
    of the values seen at that phase in earlier cycles, plus one spread over all phases.
    The spread used is ``sqrt(phase_sigma**2 + (spread_mix * global_sigma)**2)``, so a
    phase with little history does not get a band of zero width. Residuals enter the
    estimates Huber-capped at 3 sigmas, so a spike or an incident moves the profile by a
    bounded step per cycle and a level shift is re-learned over about ``1 / alpha`` cycles.

    The update weight is ``alpha`` per cycle, split over the points that land in one
    phase bucket (``alpha * min(1, dt / bucket_width)`` per point, ``dt`` the time since
    the series' previous point), so a 10 s and a 5 min series forget at the same pace.
    The points of one phase in one cycle are all predicted from the phase as it was before
    that cycle (a snapshot taken at its first point), so an incident that lasts a phase
    (an hour of the weekly profile) is not its own reference.

    Score: ``|x - profile| / spread``, scale-free, both directions (the alert policy picks
    the direction). 0 (band NaN) until the series has ``warmup_cycles`` of history and the
    phase was seen twice. Cost per row: a few array operations; state per series:
    ``buckets`` times a two-byte code each for the mean and the spread (``seasonal_codes``,
    relative to the series' own range) and a one-byte count (``seasonal_counts``), plus 46
    bytes of scalars, 14 of them the snapshot (1.4 KiB for 288 buckets; 2.8 KiB as
    float32). Coarser phases were
    measured to cost detection (15 or 10 minute daily phases on NAB's flags, 2 hour weekly
    ones on the incidents), so the defaults keep 5 minutes and an hour.

    Parameters
    ----------
    period_s
        Length of the cycle in seconds: 86400 for daily, 604800 for weekly patterns.
    buckets
        Phases per cycle. 288 per day is 5 minutes.
    alpha
        Weight of the newest cycle in a phase's mean and spread, in (0, 1].
    warmup_cycles
        Cycles of history (event time) before the series is scored.
    spread_mix
        Share of the all-phase spread added to each phase's spread, >= 0.

    Examples
    --------
    >>> det = SeasonalProfile(period_s=60.0, buckets=6, warmup_cycles=2.0)
    >>> cycles = [[10.0, 10.0, 50.0, 52.0, 10.0, 11.0],  # a busy phase every "cycle"
    ...           [11.0, 9.0, 51.0, 50.0, 10.0, 10.0]]
    >>> ts = np.arange(36) * 10 * 10**9
    >>> det.learn(SeriesBatch.of([0] * 36, sum(cycles * 3, []), ts))
    >>> probe_ts = np.array([36, 38]) * 10 * 10**9  # phases 0 and 2
    >>> det.score(SeriesBatch.of([0, 0], [10.0, 10.0], probe_ts)).round(1)
    array([ 0.6, 46.4])

    References
    ----------
    [^1]: Cleveland, R. B., Cleveland, W. S., McRae, J. E., & Terpenning, I. (1990). STL:
        A seasonal-trend decomposition procedure based on loess. Journal of Official
        Statistics, 6(1), 3-73.
    [^2]: Huber, P. J. (1964). Robust estimation of a location parameter. The Annals of
        Mathematical Statistics, 35(1), 73-101.
    """

    name: ClassVar[str] = "seasonal_profile"
    compiled_learning = True

    def __init__(
        self, *, period_s: float = 86400.0, buckets: int = 288, alpha: float = 0.25,
        warmup_cycles: float = 2.0, spread_mix: float = 0.1, phase_tolerance: int = 0,
    ) -> None:
        if not period_s > 0:
            msg = f"seasonal_profile: period_s must be > 0; got {period_s}"
            raise ValueError(msg)
        if buckets < 1:
            msg = f"seasonal_profile: buckets must be >= 1; got {buckets}"
            raise ValueError(msg)
        if not 0.0 < alpha <= 1.0:
            msg = f"seasonal_profile: alpha must be in (0, 1]; got {alpha}"
            raise ValueError(msg)
        if warmup_cycles < 0 or spread_mix < 0:
            msg = (f"seasonal_profile: warmup_cycles and spread_mix must be >= 0; got "
                   f"{warmup_cycles}, {spread_mix}")
            raise ValueError(msg)
        self.period_s = period_s
        self.buckets = buckets
        self.alpha = alpha
        self.warmup_cycles = warmup_cycles
        self.spread_mix = spread_mix
        if not 0 <= phase_tolerance < buckets:
            msg = (f"seasonal_profile: phase_tolerance must be in [0, buckets); got "
                   f"{phase_tolerance}")
            raise ValueError(msg)
        self.phase_tolerance = phase_tolerance
        self._period_ns = int(round(period_s * 1e9))
        self._bucket_ns = self._period_ns / buckets
        self._warm_ns = int(round(warmup_cycles * period_s * 1e9))
        self._slots = SlotArrays(
            n=Column(np.int32),
            first=Column(np.int64),
            last=Column(np.int64),
            gdev=Column(np.float32, 0.0),
            # Per phase, two-byte codes relative to the slot's centre and unit
            # (seasonal_codes): half the bytes of float32 means and spreads.
            centre=Column(np.float32, 0.0),
            unit=Column(np.float32, 0.0),
            mean_code=Column(np.int16, 0, (buckets,)),
            dev_code=Column(np.uint16, 0, (buckets,)),
            # Points learned per phase in one-byte codes (seasonal_counts): exact while
            # they set a learning weight.
            count=Column(np.uint8, 0, (buckets,)),
            # The phase being filled, as it was before this cycle's points in it.
            snap_b=Column(np.int16, -1),
            snap_cycle=Column(np.int32, -1),
            snap_mean=Column(np.float32, 0.0),
            snap_dev=Column(np.float32, 0.0),
        )
        # A round's gathered state: computed for prediction, reused to learn the round.
        self._memo: RoundMemo = RoundMemo()

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def _state(self, batch: SeriesBatch) -> tuple[NDArray[Any], ...]:
        """Phase bucket, its count and mean, the spread, and whether the row is scored."""
        memo = self._memo.get(batch)
        if memo is None:
            memo = [self._gather(batch), None]
            self._memo.put(batch, memo)
        state: tuple[NDArray[Any], ...] = memo[0]
        return state

    def _gather(self, batch: SeriesBatch) -> tuple[NDArray[Any], ...]:
        self._ensure(batch.slots)
        state = self._slots
        out: tuple[NDArray[Any], ...] = kernels.gather(
            batch.slots, batch.ts_unix_nano, self._period_ns, self._bucket_ns, self.buckets,
            self.spread_mix, self._warm_ns, state.n, state.first, state.gdev, state.centre,
            state.unit, state.mean_code, state.dev_code, state.count, state.snap_b,
            state.snap_cycle, state.snap_mean, state.snap_dev)
        return out

    def _neighbours(
        self, batch: SeriesBatch, bucket: NDArray[np.intp]
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        """Mean and spread, one column per phase within ``phase_tolerance`` of each row's.

        Phases seen fewer than twice get an infinite spread (they never widen a band).
        """
        memo = self._memo.get(batch)
        if memo is None:
            return self._gather_neighbours(batch, bucket)
        if memo[1] is None:
            memo[1] = self._gather_neighbours(batch, bucket)
        out: tuple[NDArray[Any], NDArray[Any]] = memo[1]
        return out

    def _gather_neighbours(
        self, batch: SeriesBatch, bucket: NDArray[np.intp]
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        state = self._slots
        out: tuple[NDArray[Any], NDArray[Any]] = kernels.gather_neighbours(
            batch.slots, bucket, self.phase_tolerance, self.buckets, self.spread_mix,
            state.gdev, state.centre, state.unit, state.mean_code, state.dev_code, state.count)
        return out

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """The phase's mean; the band is the union of the phases' ``mean +- band * spread``.

        The union runs over the phases within ``phase_tolerance`` (NaN band while warming).
        Pure.
        """
        bucket, count, _, _, ready, mean, sigma = self._state(batch)
        means, sigmas = (self._neighbours(batch, bucket) if self.phase_tolerance
                         else (_NO_PHASES, _NO_PHASES))
        bands = np.asarray(band, np.float64).reshape(-1)
        # Absurd inputs near 1e308 (the kernel runs as plain Python without numba's JIT).
        with float_warnings_ignored():
            return Prediction(*kernels.predict(count, mean, sigma, ready, bands, means, sigmas))

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Return ``|x - profile| / spread`` per row (0 while warming, NaN if not finite).

        The smallest over the phases within ``phase_tolerance``.
        """
        bucket, _, _, _, ready, mean, sigma = self._state(batch)
        means, sigmas = (self._neighbours(batch, bucket) if self.phase_tolerance
                         else (_NO_PHASES, _NO_PHASES))
        with float_warnings_ignored():  # as plain Python: inf / inf
            out: NDArray[np.float64] = kernels.score(
                batch.values, mean, sigma, ready, means, sigmas)
        return out

    def scored(self, batch: SeriesBatch) -> NDArray[np.bool_]:
        """True for rows past warm-up whose phase was seen at least twice. Pure."""
        ready: NDArray[np.bool_] = self._state(batch)[4]
        return ready

    def _learn_unique(self, batch: SeriesBatch) -> None:
        bucket, count, mean, sigma, ready, _, _ = self._state(batch)
        self._memo.clear()
        state = self._slots
        kernels.learn(batch.slots, batch.ts_unix_nano, batch.values, bucket, count, mean,
                      sigma, ready, self.alpha, self._bucket_ns, self._period_ns, state.n,
                      state.first, state.last, state.gdev, state.centre, state.unit,
                      state.mean_code, state.dev_code, state.count, state.snap_b,
                      state.snap_cycle, state.snap_mean, state.snap_dev)

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore arrays from ``state_dict``.

        State saved before phase snapshots were kept restores with none: the next point of
        each phase takes one.
        """
        rows = len(state["n"])
        fresh: dict[str, NDArray[Any]] = {
            "snap_b": np.full(rows, -1, np.int16), "snap_cycle": np.full(rows, -1, np.int32),
            "snap_mean": np.zeros(rows, np.float32), "snap_dev": np.zeros(rows, np.float32)}
        super().load_state_dict({**fresh, **state})

    def cycle_old(self, batch: SeriesBatch) -> NDArray[np.bool_]:
        """Per row, whether its slot's first point is a cycle or more before the row.

        Each phase's mean then holds an earlier cycle's points, where within the first
        cycle it holds none (a phase's first points predict the rest from the snapshot of
        a phase not yet seen).
        """
        self._ensure(batch.slots)
        state = self._slots
        age = batch.ts_unix_nano - state.first[batch.slots]
        out: NDArray[np.bool_] = (state.n[batch.slots] > 0) & (age >= self._period_ns)
        return out

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True until a slot has ``warmup_cycles`` of history (at its last point)."""
        self._ensure(slots)
        young = self._slots.last[slots] - self._slots.first[slots] < self._warm_ns
        out: NDArray[np.bool_] = (self._slots.n[slots] == 0) | young
        return out

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        # The conformance streams are 1 s apart: cycles short enough to warm up in them.
        yield {"period_s": 60.0, "buckets": 12, "warmup_cycles": 1.0}
        yield {"period_s": 20.0, "buckets": 4, "alpha": 1.0, "warmup_cycles": 0.0,
               "spread_mix": 0.0}
