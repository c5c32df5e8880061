"""Span outliers' exemplars, cut from the request's bytes only when a row is read.

Every span outlier point carries its span's ``(trace_id, span_id)``, but only a point that
raises an event reads it (``alerting.anomaly_events``). Building a pair of ``bytes`` for
every span cost the compiled spans path more than all its other work per span together:
about 0.2 µs a span for the objects, and up to 0.6 in the garbage collections their
allocation set off in a live engine's heap.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import TypeVar, overload

import numpy as np
from numpy.typing import NDArray

_T = TypeVar("_T")


class SpanIds(dict[int, tuple[bytes, bytes]]):
    """Row ``i`` → ``(data[trace_lo:trace_hi], data[span_lo:span_hi])`` of ``bounds[i]``.

    A ``dict`` to its readers (the scorer takes exemplars as one): ``get``, ``[]``, ``in``,
    ``len``, iteration, ``keys``, ``values`` and ``items`` see the rows, each pair made
    when read. It is never written, and its own storage stays empty: ``copy``, ``|`` and
    ``==`` would see nothing, so merge it with ``{**ids, ...}`` (which reads it).

    Examples
    --------
    >>> ids = SpanIds(b"TTTTss", np.array([[0, 4, 4, 6]]))
    >>> ids.get(0), ids.get(1, (b"", b"")), len(ids), dict(ids)
    ((b'TTTT', b'ss'), (b'', b''), 1, {0: (b'TTTT', b'ss')})
    """

    def __init__(self, data: bytes, bounds: NDArray[np.int64]) -> None:
        super().__init__()
        self._data = data
        self._bounds = bounds  # rows of (trace lo, trace hi, span lo, span hi)

    def _pair(self, row: int) -> tuple[bytes, bytes]:
        a, b, c, d = self._bounds[row].tolist()
        return self._data[a:b], self._data[c:d]

    def __contains__(self, row: object) -> bool:
        return isinstance(row, int | np.integer) and 0 <= int(row) < len(self._bounds)

    def __getitem__(self, row: int) -> tuple[bytes, bytes]:
        if row not in self:
            raise KeyError(row)
        return self._pair(int(row))

    @overload
    def get(self, row: int, default: None = None, /) -> tuple[bytes, bytes] | None: ...
    @overload
    def get(self, row: int, default: tuple[bytes, bytes], /) -> tuple[bytes, bytes]: ...
    @overload
    def get(self, row: int, default: _T, /) -> tuple[bytes, bytes] | _T: ...
    def get(self, row: int, default: object = None, /) -> object:
        """The row's pair, or ``default``."""
        return self._pair(int(row)) if row in self else default

    def __len__(self) -> int:
        return len(self._bounds)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._bounds)))

    def keys(self) -> KeysView[int]:  # type: ignore[override]  # a view of the rows
        """The rows."""
        return dict.fromkeys(range(len(self._bounds))).keys()

    def values(self) -> ValuesView[tuple[bytes, bytes]]:  # type: ignore[override]
        """Every row's pair (made now)."""
        return self._materialized().values()

    def items(self) -> ItemsView[int, tuple[bytes, bytes]]:  # type: ignore[override]
        """Every row and its pair (made now)."""
        return self._materialized().items()

    def _materialized(self) -> dict[int, tuple[bytes, bytes]]:
        return {row: self._pair(row) for row in range(len(self._bounds))}

    def __repr__(self) -> str:
        return f"SpanIds({len(self)} rows)"

