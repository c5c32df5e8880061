"""Discord distance: how unlike the recent past the newest subsequence of a series looks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.detectors import discord_kernels as kernels
from otel_anomaly.processors.detectors.base import Prediction, RoundMemo, SlotStateDetector
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays
from otel_anomaly.processors.types import SeriesBatch


class Discord(SlotStateDetector):
    """Nearest-neighbour distance of the newest subsequence to the series' recent ones.

    Per row, the subsequence of the last ``length`` points (the row's value last), minus
    its mean, is compared with every earlier subsequence of the same length, minus its
    mean, that ends at least ``length`` points before it (no trivial self-match), among
    the last ``history`` ones. Its distance to the nearest one (root mean square
    difference, in units of the spread of the values held) is the discord distance of
    DAMP and the matrix profile, over a bounded recent window so that it stays online.
    Subsequences are not divided by their own spread (z-normalised): a spike as high as
    one in the window is familiar, a higher one or a new shape is not, and a shift of
    level alone is left to the level members. The score is the distance in units of its
    own running mean, times the mean ``|z|`` of a normal (0.80): Gaussian-like for typical
    rows, with a tail that an ensemble's per-member tail scale judges like any other.

    The band follows the score (as in ``half_space_trees``): ``expected`` is what followed
    the past context nearest to the current one (the ``length - 1`` points before the row,
    offsets removed), and the half-width is ``|x - expected| * band / score``, so the
    band's edge is where this row's own score would be ``band``; it is not a range of
    normal values (``band_follows_value``).

    Cost per row: about ``2 * length + 20`` floating point operations per compared
    subsequence and three passes over the buffer, compiled (about 3 us per row for a
    round of 1,000 series with the defaults). State per series: ``history + 2 * length -
    2`` float64 values, a float64 mean and an int32 count (2,300 bytes with the defaults;
    2,688 in an ensemble, with the member's tail scale). 0 (band NaN) until ``history + 3
    * length - 2`` points were learned.

    Not a built-in member: added to the built-in ones it raised NAB's held-out score (B at
    A's threshold 52.8 -> 55.5) and msmon's recall (0.493 -> 0.527) but lowered NAB's
    score on A (64.2 -> 62.2) and raised false alarms (NAB flag false-positive rows 164 ->
    252, msmon false opens 0.092 -> 0.109 per series-day, AUC-PR 0.163 -> 0.132), at about
    four times the engine's cost per point (folder backtest 1.0 -> 4.3 us).

    Parameters
    ----------
    length
        Points per subsequence, >= 3.
    history
        Earlier subsequences each row is compared with, >= 1 (the buffer also holds the
        ``2 * length - 2`` points between the oldest one and the row).

    Examples
    --------
    >>> det = Discord(length=8, history=64)
    >>> wave = np.sin(np.arange(200) * 2 * np.pi / 16)
    >>> det.learn(SeriesBatch.of([0] * 200, wave))
    >>> det.score(SeriesBatch.of([0, 0], [np.sin(200 * 2 * np.pi / 16), 3.0])).round(1)
    array([ 0. , 14.2])

    References
    ----------
    [^1]: Lu, Y., Wu, R., Mueen, A., Zuluaga, M. A., & Keogh, E. (2022). Matrix profile XXIV:
        Scaling time series anomaly detection to trillions of datapoints and ultra-fast
        arriving data streams. KDD, 1173-1182. (DAMP.)
    [^2]: Yeh, C.-C. M., et al. (2016). Matrix profile I: All pairs similarity joins for time
        series. ICDM, 1317-1322.
    """

    name: ClassVar[str] = "discord"
    band_follows_value: ClassVar[bool] = True

    def __init__(self, *, length: int = 16, history: int = 256) -> None:
        if length < 3 or history < 1:
            msg = f"discord: length must be >= 3 and history >= 1; got {length}, {history}"
            raise ValueError(msg)
        self.length = length
        self.history = history
        self._span = history + 2 * length - 2  # values kept: the candidates and the gap
        self._warm = self._span + length  # and ``length`` distances averaged
        self._slots = SlotArrays(n=Column(np.int32), mean=Column(np.float64, 0.0),
                                 recent=Column(np.float64, 0.0, (self._span,)))
        self._memo: RoundMemo = RoundMemo(values=True)  # distances, from scoring to learning

    def _measure(self, batch: SeriesBatch) -> tuple[NDArray[np.float64], ...]:
        """Per row: the distance (NaN before the buffer is full), the score, the forecast."""
        cached: tuple[NDArray[np.float64], ...] | None = self._memo.get(batch)
        if cached is not None:
            return cached
        self._slots.ensure(batch.slots)
        state = self._slots
        with float_warnings_ignored():  # absurd values near 1e308 overflow the sums
            out: tuple[NDArray[np.float64], ...] = kernels.measure(
                batch.slots, batch.values, self.length, self.history, self._warm, state.n,
                state.mean, state.recent)
        self._memo.put(batch, out)
        return out

    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """The forecast and a band whose edge is where the row's own score would be ``band``."""
        _, score, forecast = self._measure(batch)
        bands = np.asarray(band, np.float64).reshape(-1)
        with float_warnings_ignored():  # as plain Python: inf * 0
            lower, upper = kernels.band(batch.values, score, forecast,
                                        ~self.warming(batch.slots), bands)
        return Prediction(forecast, lower, upper)

    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Distance over its running mean, times 0.80 (0 while warming; NaN if not finite)."""
        return self._measure(batch)[1].copy()

    def _learn_unique(self, batch: SeriesBatch) -> None:
        dist = self._measure(batch)[0]
        self._memo.clear()
        state = self._slots
        kernels.learn(batch.slots, batch.values, dist, self.history, state.n, state.mean,
                      state.recent)

    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True until the buffer is full and ``length`` distances were averaged."""
        self._slots.ensure(slots)
        out: NDArray[np.bool_] = self._slots.n[slots] < self._warm
        return out

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"length": 4, "history": 16}
        yield {"length": 3, "history": 1}
