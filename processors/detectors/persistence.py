"""Sustained same-direction deviations: evidence that a series' level has moved."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from otel_anomaly.processors.compiled import kernel, row_kernel
from otel_anomaly.processors.series.slot_arrays import Column, SlotArrays

_CAP = 3.0  # one point moves the average by at most alpha * 3 sigmas
_HUBER = 3.0  # one point's square enters the spread capped at 3**2 times the usual


class Persistence:
    """Per slot and column: a short average of signed deviations, against its usual size.

    Each column (an ensemble member) feeds its deviation in Gaussian-equivalent sigmas,
    signed and capped at 3, into an exponentially weighted average ``d`` (weight
    ``alpha``), and keeps the usual size of ``d`` as an exponentially weighted mean square
    over about ``window`` points (Huber-capped, starting from the value i.i.d. unit
    deviations would give). Noise (even autocorrelated noise: its usual size is learned)
    averages out; a level shift or a regression that keeps the series on one side adds
    up. ``factor`` turns that into a band narrowing on the shifted side only: 1 while
    ``|d|`` is within ``level`` usual sizes, ``level * size / |d|`` beyond, never below
    ``shrink``. With ``alarm``, ``d`` beyond ``level`` usual sizes is read as an EWMA
    control chart's alarm (Roberts, 1959): the side narrows to ``shrink`` at once, so a
    sustained shift of a few sigmas opens although no single point leaves the band. Cost
    per row: a few float operations per column; state: two float32 per column.

    Examples
    --------
    >>> p = Persistence(columns=1, alpha=0.2, level=3.0, shrink=0.5, window=100)
    >>> slots = np.array([0])
    >>> for z in [0.5, -0.4, 0.3, -0.2] * 10 + [2.0] * 10:  # noise, then a shift up
    ...     p.update(slots, np.array([[z]]), np.array([[True]]))
    >>> up, down = p.factor(slots)
    >>> float(up[0, 0].round(2)), float(down[0, 0])
    (0.65, 1.0)
    """

    def __init__(
        self, *, columns: int, alpha: float, level: float, shrink: float, window: int,
        alarm: bool = False,
    ) -> None:
        self.columns = columns
        self.alarm = alarm
        self.alpha = alpha
        self.level = level
        self.shrink = shrink
        self.window = window
        self._prior = alpha / (2.0 - alpha)  # variance of the average of i.i.d. N(0, 1)
        # float32: averages of deviations clipped to a few tens of sigmas.
        self._slots = SlotArrays(d=Column(np.float32, 0.0, (columns,)),
                                 v=Column(np.float32, 0.0, (columns,)))

    def _ensure(self, slots: NDArray[np.intp]) -> None:
        self._slots.ensure(slots)

    def factor(
        self, slots: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Band factors above and below the expected value, in [shrink, 1].

        One row per slot, one column per column.
        """
        self._ensure(slots)
        return _factors(self._slots.d, self._slots.v, slots, self.level, self.shrink,
                        self._prior, self.alarm)

    def update(
        self, slots: NDArray[np.intp], z: NDArray[np.float64], ready: NDArray[np.bool_],
        windows: NDArray[np.float64] | None = None,
    ) -> None:
        """Learn signed deviations (Gaussian-equivalent sigmas).

        One row per distinct slot, one column per column; cells not ``ready`` are skipped.
        ``windows``: per row, the points the usual size remembers (else ``window``).
        """
        self._ensure(slots)
        if windows is not None:
            learn_timed(self._slots.d, self._slots.v, slots, z, ready, self.alpha,
                        self._prior, windows)
            return
        _learn(self._slots.d, self._slots.v, slots, z, ready, self.alpha, self._prior,
               self.window)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Forget ``slots``."""
        self._slots.reset(slots)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the per-slot arrays."""
        return self._slots.state_dict()

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore arrays from ``state_dict`` (state saved without them starts afresh)."""
        empty = np.zeros((0, self.columns), np.float32)
        self._slots.load_state_dict({name: state.get(name, empty) for name in ("d", "v")})


# Kernels: loops over rows (distinct slots) and columns. float32 cells are read through
# float() so that arithmetic stays float64 as in numpy, also when run as plain Python.


@kernel
def _factors(d: NDArray[np.float32], v: NDArray[np.float32], slots: NDArray[np.intp],
             level: float, shrink: float, prior: float,
             alarm: bool) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rows, columns = len(slots), d.shape[1]
    up = np.ones((rows, columns))
    down = np.ones((rows, columns))
    for i in range(rows):
        for c in range(columns):
            up[i, c], down[i, c] = narrowing(float(d[slots[i], c]), float(v[slots[i], c]),
                                             level, shrink, prior, alarm)
    return up, down


@row_kernel
def narrowing(mean: float, var: float, level: float, shrink: float, prior: float,
              alarm: bool) -> tuple[float, float]:
    """One slot and column's narrowing above and below (1: not narrowed), from ``d`` and ``v``."""
    limit = level * float(np.sqrt(var if var > 0 else prior))
    size = abs(mean)
    if size > limit:
        f = shrink if alarm else limit / size
        f = shrink if f < shrink else f  # keeps a NaN, as np.maximum does
        if mean > 0:
            return f, 1.0
        if mean < 0:
            return 1.0, f
    return 1.0, 1.0


@kernel
def _learn(d: NDArray[np.float32], v: NDArray[np.float32], slots: NDArray[np.intp],
           z: NDArray[np.float64], ready: NDArray[np.bool_], alpha: float, prior: float,
           window: int) -> None:
    for i in range(len(slots)):
        for c in range(d.shape[1]):
            if ready[i, c]:  # may hold NaN: left as it was
                s = slots[i]
                d[s, c], v[s, c] = learned(float(d[s, c]), float(v[s, c]), z[i, c], alpha,
                                           prior, window)


@kernel
def learn_timed(d: NDArray[np.float32], v: NDArray[np.float32], slots: NDArray[np.intp],
                z: NDArray[np.float64], ready: NDArray[np.bool_], alpha: float, prior: float,
                windows: NDArray[np.float64]) -> None:
    """``_learn`` with each row's own window (``windows``, per row)."""
    for i in range(len(slots)):
        for c in range(d.shape[1]):
            if ready[i, c]:  # may hold NaN: left as it was
                s = slots[i]
                d[s, c], v[s, c] = learned(float(d[s, c]), float(v[s, c]), z[i, c], alpha,
                                           prior, windows[i])


@row_kernel
def learned(mean: float, old_v: float, x: float, alpha: float, prior: float,
            window: float) -> tuple[float, float]:
    """One slot and column's ``d`` and ``v`` after the signed deviation ``x`` of a ready member."""
    var = old_v if old_v > 0 else prior
    # Clamps written as comparisons keep a NaN, as np.clip / np.minimum do.
    if x < -_CAP:
        x = -_CAP
    elif x > _CAP:
        x = _CAP
    mean += alpha * (x - mean)
    square = mean * mean
    square = _HUBER**2 * var if square > _HUBER**2 * var else square
    return mean, var + (square - var) / window
