"""Named per-slot arrays that grow together: the struct-of-arrays every state holder uses.

A state holder (a detector, the hysteresis, a calibrator...) declares its arrays once, with
their dtype, the value a fresh slot holds and any trailing shape, and reads them as
attributes. Growth, reset and saving then live here instead of being repeated, with a
suppressed type error each, in every holder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from otel_anomaly.processors.compiled import compiled, kernel

_NO_COPIES: ContextVar[bool] = ContextVar("slot_arrays_no_copies", default=False)

_MIN_ROWS = 64
_DOUBLE_BELOW = 4096
"""Arrays double while smaller than this many rows, then grow by a quarter: at most 25 %
of the rows of a large state are spare (doubling would leave up to half of them)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One per-slot array: its dtype, a fresh slot's value and the shape of one slot's row.

    ``fill`` may be a sequence matching ``shape`` (a fresh row that is not all one value).
    """

    dtype: DTypeLike
    fill: Any = 0
    shape: tuple[int, ...] = ()


class SlotArrays:
    """Arrays with one row per slot, grown geometrically together.

    Every array has as many rows as ``len(self)``; rows past those a slot has used hold the
    column's fill value, so a slot never seen reads as a fresh one.

    Examples
    --------
    >>> state = SlotArrays(n=Column(np.int64), level=Column(np.float64, np.nan, (2,)))
    >>> state.grow(3)
    >>> len(state), state.n.shape, state.level.shape
    (64, (64,), (64, 2))
    >>> state.n[1] = 5
    >>> state.reset(np.array([1]))
    >>> int(state.n[1]), sorted(state.state_dict())
    (0, ['level', 'n'])
    """

    def __init__(self, **columns: Column) -> None:
        if any(name.startswith("_") for name in columns):
            msg = f"slot array names must not start with '_'; got {sorted(columns)}"
            raise ValueError(msg)
        self._columns = columns
        self._rows = 0
        self.generation = 0  # bumped whenever the arrays are replaced (grown or loaded)
        for name, column in columns.items():
            self.__dict__[name] = self._fresh(column, 0)

    def __getattr__(self, name: str) -> NDArray[Any]:
        # Only reached for names that are not arrays (they live in the instance dict): it
        # tells the type checker that every declared name is an array.
        msg = f"{type(self).__name__} has no array {name!r}"
        raise AttributeError(msg)

    def __len__(self) -> int:
        return self._rows

    @staticmethod
    def _fresh(column: Column, rows: int) -> NDArray[Any]:
        shape = (rows, *column.shape)
        if not np.any(column.fill):
            # Zeroed memory from the allocator: spare rows cost no resident memory until
            # they are written.
            return np.zeros(shape, column.dtype)
        return np.full(shape, column.fill, column.dtype)

    def row_bytes(self) -> int:
        """Bytes one slot's row takes, over every array."""
        return sum(int(np.dtype(column.dtype).itemsize * np.prod(column.shape, dtype=np.int64))
                   for column in self._columns.values())

    def grow(self, needed: int) -> None:
        """Make rows ``0 .. needed - 1`` exist (at least 64 rows).

        Rows at least double up to 4096, then grow by a quarter at a time.
        """
        if needed <= self._rows:
            return
        step = self._rows if self._rows < _DOUBLE_BELOW else self._rows // 4
        rows = max(needed, self._rows + step, _MIN_ROWS)
        for name, column in self._columns.items():
            out = self._fresh(column, rows)
            out[: self._rows] = self.__dict__[name]
            self.__dict__[name] = out
        self._rows = rows
        self.generation += 1

    def ensure(self, slots: NDArray[np.intp]) -> None:
        """Make every row in ``slots`` exist."""
        top = top_slot(slots)
        if top >= self._rows:
            self.grow(top + 1)

    def reset(self, slots: NDArray[np.intp]) -> None:
        """Refill the rows of ``slots`` with the fill values (growing to them if needed)."""
        self.ensure(slots)
        for name, column in self._columns.items():
            self.__dict__[name][slots] = column.fill

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of the arrays, by name (the arrays themselves under ``no_copies``)."""
        if _NO_COPIES.get():
            return {name: self.__dict__[name] for name in self._columns}
        return {name: self.__dict__[name].copy() for name in self._columns}

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Restore the arrays saved by ``state_dict``.

        Raises
        ------
        ValueError
            If an array is missing, or the arrays do not match the declared columns.
        """
        missing = sorted(set(self._columns) - set(state))
        if missing:
            msg = f"slot arrays: missing {missing}"
            raise ValueError(msg)
        rows = {len(state[name]) for name in self._columns}
        if len(rows) > 1:
            msg = f"slot arrays: arrays have different lengths {sorted(rows)}"
            raise ValueError(msg)
        loaded = {}
        for name, column in self._columns.items():
            array = np.asarray(state[name])
            if array.ndim != 1 + len(column.shape) or array.shape[1:] != column.shape:
                msg = (f"slot arrays: {name!r} has shape {array.shape}; expected rows of "
                       f"{column.shape}")
                raise ValueError(msg)
            loaded[name] = _cast(array, np.dtype(column.dtype), adopt=_NO_COPIES.get())
        self.__dict__.update(loaded)
        self._rows = rows.pop() if rows else 0
        self.generation += 1


def top_slot(slots: NDArray[np.intp]) -> int:
    """The largest of ``slots`` (-1 if empty)."""
    # Asked by every state holder on every round: a round of one row (a series that
    # reports alone) skips the reduction, whose call costs more than the rest.
    n = len(slots)
    if not n:
        return -1
    if n == 1:
        return int(slots[0])
    if _COMPILED and slots.dtype == _INTP:
        return _top(slots)
    return int(slots.max())


@kernel
def _top(slots: NDArray[np.intp]) -> int:
    """The largest of ``slots`` (not empty).

    ``max()`` costs several times more on a round's few hundred rows (a Python-level
    reduction), and every state holder asks for it every round.
    """
    top = slots[0]
    for slot in slots:
        top = max(top, slot)
    return int(top)


_COMPILED = compiled()  # as plain Python, the loop would be slower than numpy's max
_INTP = np.dtype(np.intp)


@contextmanager
def no_copies() -> Iterator[None]:
    """Within: ``state_dict`` and ``load_state_dict`` share arrays instead of copying them.

    ``state_dict`` hands out the live arrays; ``load_state_dict`` keeps the arrays it is
    given (when their dtype fits). For a checkpoint, which writes the state before anything
    changes it and restores from arrays only it holds: without it a 1M-series state would
    be copied whole on each side.
    """
    token = _NO_COPIES.set(True)
    try:
        yield
    finally:
        _NO_COPIES.reset(token)


def _cast(array: NDArray[Any], dtype: np.dtype[Any], *, adopt: bool = False) -> NDArray[Any]:
    """A copy of ``array`` in ``dtype``, saturating where the saved values do not fit.

    With ``adopt``, an array already of ``dtype`` (writable and C-ordered) is kept as is.

    State saved with wider types (float64 profiles, int64 counters before the compact
    layout) loads into the narrower columns: integers are clipped to the type's range,
    floats beyond a narrower float's range become its largest finite value.
    """
    if array.dtype == dtype:
        if adopt and array.flags.writeable and array.flags.c_contiguous:
            return array
        return array.copy()
    if np.issubdtype(dtype, np.integer) and array.dtype.kind in "iuf":
        info = np.iinfo(dtype)
        if array.dtype.kind == "f":
            array = np.nan_to_num(array, nan=0.0)
        clipped: NDArray[Any] = np.clip(array, info.min, info.max)
        return clipped.astype(dtype)
    if np.issubdtype(dtype, np.floating) and array.dtype.kind == "f":
        return saturated(array, dtype)
    return array.astype(dtype, copy=True)


def saturated(values: NDArray[Any], dtype: DTypeLike = np.float32) -> NDArray[Any]:
    """``values`` in the float type ``dtype``, finite ones clipped to its range.

    What a compact float column stores: a finite value too large for it becomes its
    largest finite value (not infinity, and without an overflow warning); infinities and
    NaN stay as they are.

    >>> saturated(np.array([1e300, -np.inf, 0.5])).tolist()
    [3.4028234663852886e+38, -inf, 0.5]
    """
    big = float(np.finfo(dtype).max)
    with np.errstate(invalid="ignore"):
        clipped = np.where(np.isfinite(values), np.clip(values, -big, big), values)
    return clipped.astype(dtype)
