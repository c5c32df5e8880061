"""The detector contract: online, many univariate series, state in per-slot arrays."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import float_warnings_ignored
from otel_anomaly.processors.series.slot_arrays import SlotArrays
from otel_anomaly.processors.types import SeriesBatch


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a detector expects of each row: a value and a band around it (original units).

    ``lower``/``upper`` are NaN while the row's series is warming up. ``baseline``: what
    the series' slowest-adapting model expects (an ensemble's seasonal profile), where
    ``expected`` may already follow an incident; None: the same as ``expected``.
    ``last_cycle``: what the longest seasonal model saw at this phase a cycle or more ago,
    before it is ready (an ensemble's weekly profile in its second week; NaN where it has
    no cycle of history), or as it is once ready; None: not known. A count's sequential
    tests take it as a second opinion of the usual events (``calibration_kernels``).
    """

    expected: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    baseline: NDArray[np.float64] | None = None
    last_cycle: NDArray[np.float64] | None = None


def occurrence_rounds(slots: NDArray[np.intp]) -> list[NDArray[np.intp]]:
    """Split row indices into rounds in which every slot occurs at most once.

    Round ``r`` holds each slot's ``r``-th row, so processing rounds in order is the same
    as processing rows one at a time, and each round can be vectorised.

    Examples
    --------
    >>> [r.tolist() for r in occurrence_rounds(np.array([3, 1, 3, 3, 2]))]
    [[0, 1, 4], [2], [3]]
    """
    n = len(slots)
    if n == 0:
        return []
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
    if len(starts) == n:  # the common case: no repeats
        return [np.arange(n, dtype=np.intp)]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, np.intp)
    rank[order] = np.arange(n) - group_start
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


class RoundMemo:
    """What a pure method computed from a batch's slots and timestamps, until state changes.

    Score, then learn: a round's prediction needs the same per-row state (gathered from
    per-slot arrays) as learning that round. The detector keeps it here, keyed by the rows'
    slots and timestamps (copied, never referenced), and calls ``clear`` whenever its state
    changes, so a hit is always what recomputing would give.

    Examples
    --------
    >>> memo, batch = RoundMemo(), SeriesBatch.of([0, 1], [1.0, 2.0])
    >>> memo.put(batch, "gathered")
    >>> memo.get(SeriesBatch.of([0, 1], [5.0, 6.0])), memo.get(SeriesBatch.of([1, 0], [1.0, 2.0]))
    ('gathered', None)
    """

    __slots__ = ("_key", "_value", "values")

    def __init__(self, *, values: bool = False) -> None:
        self.values = values
        """Also key on the rows' values (for what depends on them, e.g. a shape distance)."""
        self._key: tuple[bytes, bytes, np.dtype[Any], np.dtype[Any], bytes] | None = None
        self._value: Any = None

    def _key_of(self, batch: SeriesBatch) -> tuple[bytes, bytes, np.dtype[Any], np.dtype[Any],
                                                   bytes]:
        slots, ts = batch.slots, batch.ts_unix_nano
        values = batch.values.tobytes() if self.values else b""
        # The dtypes themselves (they compare as their ``str`` would): ``dtype.str`` builds a
        # new string at each call, and a round asks for its key about ten times.
        return slots.tobytes(), ts.tobytes(), slots.dtype, ts.dtype, values

    def get(self, batch: SeriesBatch) -> Any:
        """The value put for these rows since the last ``clear``, else None."""
        if self._value is None or self._key != self._key_of(batch):
            return None
        return self._value

    def put(self, batch: SeriesBatch, value: Any) -> None:
        """Remember ``value`` for these rows (it must not be mutated afterwards)."""
        self._key, self._value = self._key_of(batch), value

    def clear(self) -> None:
        """Forget the value (the detector's state changed)."""
        self._key = self._value = None


class Detector(abc.ABC):
    """Online detector over many univariate series; state lives in per-slot arrays.

    Subclasses implement the single-occurrence kernels (``_predict``, ``_learn_unique``);
    the base class makes ``learn`` equal to learning rows one at a time.
    """

    name: ClassVar[str]
    self_calibrating: ClassVar[bool] = False
    """True if scores are already in Gaussian-equivalent sigmas per series (the calibrator
    then applies the policy's band as it is instead of learning a tail scale)."""
    counts_are_trials: ClassVar[bool] = False
    """True if a row's ``SeriesBatch.counts`` is the trials of a ratio, judged by the detector
    itself; False: a count with a rate is the seconds it was counted over, and the
    calibrator keeps the band at least as wide as Poisson noise (``Calibrator``)."""
    band_follows_value: ClassVar[bool] = False
    """True if a row's predicted band depends on the row's own value (not only on the state,
    slot and time): what caches a prediction must then key on the values as well."""
    learns_held_rows: bool = True
    """False if the rows of an anomaly still scored against the band it opened against
    (``processors.alerting.held_band``) must teach the detector nothing (its other rows
    within the hold teach at most that band, ``Scorer._within_hold``), nor, on a series
    younger than ``young_series.YOUNG_POINTS``, the points that may start one
    (``processors.alerting.lessons.pending_rows``: above the band, not open yet or opening;
    the calibrator still learns those); True: they teach it, held rows clipped to that
    band."""
    compiled_learning: bool = False
    """True if ``_learn_unique`` only calls compiled kernels, which never warn: learning then
    skips the numpy ``errstate`` that quiets overflows (it costs more than a one-row kernel
    call), except when kernels run as plain Python (``float_warnings_ignored``)."""

    @abc.abstractmethod
    def predict(self, batch: SeriesBatch, band: float | NDArray[np.float64]) -> Prediction:
        """Expected value and a band ``band`` spread units wide per row. Must not change state.

        ``band`` is a scalar or one value per row. A row's raw ``score`` equals ``band``
        exactly at the edge of the band predicted for it (on the side of the value).
        """

    @abc.abstractmethod
    def score(self, batch: SeriesBatch) -> NDArray[np.float64]:
        """Raw score per row, higher = more anomalous; 0 while warming; NaN if not finite."""

    def scored(self, batch: SeriesBatch) -> NDArray[np.bool_]:
        """True for rows the detector scores (past warm-up); pure.

        Detectors whose warm-up depends on the row (e.g. its phase) override this.
        """
        return ~self.warming(batch.slots)

    @abc.abstractmethod
    def _learn_unique(self, batch: SeriesBatch) -> None:
        """Learn rows whose slots are all distinct and whose values are all finite."""

    @abc.abstractmethod
    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget everything about ``slots`` (evicted or reused)."""

    @abc.abstractmethod
    def warming(self, slots: NDArray[np.intp]) -> NDArray[np.bool_]:
        """True for slots that have not yet seen enough points to score."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, NDArray[Any]]:
        """All state as named arrays (copies)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore state saved by ``state_dict``."""

    def learn(self, batch: SeriesBatch) -> None:
        """Update state exactly as if rows were learned one at a time, in order.

        Non-finite values are skipped (never learned).
        """
        finite = np.isfinite(batch.values)
        if not finite.all():
            batch = batch.take(np.flatnonzero(finite))
        if len(batch) == 1:  # one row, one round: the backtest of a single series
            with self._quiet():
                self._learn_unique(batch)
            return
        with self._quiet():
            for rows in occurrence_rounds(batch.slots):
                self._learn_unique(batch.take(rows) if len(rows) != len(batch) else batch)

    def learn_round(self, batch: SeriesBatch) -> None:
        """``learn`` for rows whose slots are all distinct (one round of the scorer's).

        The same as ``learn``, without the sort that splits a batch into rounds.
        """
        finite = np.isfinite(batch.values)
        # count_nonzero: a direct C call, where ``all()`` goes through a Python wrapper.
        if np.count_nonzero(finite) != len(batch):
            batch = batch.take(np.flatnonzero(finite))
            if not len(batch):
                return
        with self._quiet():
            self._learn_unique(batch)

    def _quiet(self) -> AbstractContextManager[Any]:
        """What learning runs under.

        Finite but absurd magnitudes (near 1e308) may overflow: they saturate instead of
        raising warnings on the hot path.
        """
        if self.compiled_learning:
            return float_warnings_ignored()
        return np.errstate(over="ignore", invalid="ignore")

    @classmethod
    def _test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the conformance suite runs this detector with."""
        yield {}

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as stored under the same names."""
        import inspect  # noqa: PLC0415 - only the conformance suite and repr need it

        sig = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in sig.parameters if name != "self"}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


class SlotStateDetector(Detector):
    """A detector whose whole state is one ``SlotArrays``, ``self._slots``.

    Forgetting, saving and restoring are then the container's (and clear ``self._memo``,
    what the detector may cache of a round).
    """

    _slots: SlotArrays
    _memo: RoundMemo | None = None

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots``."""
        if self._memo is not None:
            self._memo.clear()
        self._slots.reset(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot arrays."""
        return self._slots.state_dict()

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore arrays from ``state_dict``."""
        if self._memo is not None:
            self._memo.clear()
        self._slots.load_state_dict(state)
