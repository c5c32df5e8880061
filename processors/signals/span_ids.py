"""Span outliers' exemplars, cut from the request's bytes only when a row is read.

Every span outlier point carries its span's ``(trace_id, span_id)``, but only a point that
raises an event reads it (``alerting.anomaly_events``). Building a pair of ``bytes`` for
every span cost the compiled spans path more than all its other work per span together:
about 0.2 µs a span for the objects, and up to 0.6 in the garbage collections their
allocation set off in a live engine's heap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from numpy.typing import NDArray


class SpanIds(Mapping[int, tuple[bytes, bytes]]):
    """Row ``i`` → ``(data[trace_lo:trace_hi], data[span_lo:span_hi])`` of ``bounds[i]``.

    A read-only mapping (the scorer takes exemplars as one): each pair is made when read,
    so rows that raise no event never build their two ``bytes``.

    Examples
    --------
    >>> ids = SpanIds(b"TTTTss", np.array([[0, 4, 4, 6]]))
    >>> ids.get(0), ids.get(1, (b"", b"")), len(ids), dict(ids)
    ((b'TTTT', b'ss'), (b'', b''), 1, {0: (b'TTTT', b'ss')})
    >>> dict(SpanIds(b"TTTTssUUUUtt", np.array([[0, 4, 4, 6], [6, 10, 10, 12]])).take(
    ...     np.array([1])))
    {0: (b'UUUU', b'tt')}
    """

    def __init__(self, data: bytes, bounds: NDArray[np.int64]) -> None:
        self._data = data
        self._bounds = bounds  # rows of (trace lo, trace hi, span lo, span hi)

    def __contains__(self, row: object) -> bool:
        return isinstance(row, int | np.integer) and 0 <= int(row) < len(self._bounds)

    def __getitem__(self, row: int) -> tuple[bytes, bytes]:
        if row not in self:
            raise KeyError(row)
        a, b, c, d = self._bounds[int(row)].tolist()
        return self._data[a:b], self._data[c:d]

    def take(self, rows: NDArray[np.intp]) -> SpanIds:
        """The pairs of ``rows``, renumbered from 0 (still cut only when read)."""
        return SpanIds(self._data, self._bounds[rows])

    def __len__(self) -> int:
        return len(self._bounds)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._bounds)))

    def __repr__(self) -> str:
        return f"SpanIds({len(self)} rows)"
